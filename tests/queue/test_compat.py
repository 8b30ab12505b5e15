"""A reference-style program runs on treadle after changing only its import."""

from __future__ import annotations

import json

import pytest
from tests.queue import _manager_fixtures as fx

from treadle.queue.compat import (
    WORK_QUEUE_CACHE,
    WORK_QUEUE_INPUT,
    WORK_QUEUE_NOCACHE,
    WORK_QUEUE_OUTPUT,
    WORK_QUEUE_RESULT_SUCCESS,
    WORK_QUEUE_TASK_RUNNING,
    Task,
    WorkQueue,
)

workers = fx.workers


def test_constants():
    assert (WORK_QUEUE_INPUT, WORK_QUEUE_OUTPUT, WORK_QUEUE_NOCACHE, WORK_QUEUE_CACHE) == (0, 1, 0, 1)
    assert WORK_QUEUE_RESULT_SUCCESS == 0 and WORK_QUEUE_TASK_RUNNING == 2


@pytest.mark.reference
def test_reference_style_program(workers, tmp_path):
    (tmp_path / "in.txt").write_text("b\na\n")
    q = WorkQueue(0, host="127.0.0.1")
    try:
        q.specify_keepalive_interval(60)
        q.specify_log(str(tmp_path / "stats.log"))
        q.specify_transactions_log(str(tmp_path / "txn.log"))
        workers.start(q.port)
        t = Task("sort in.txt > out.txt; echo $X")
        t.specify_tag("s1")
        t.specify_cores(1)
        t.specify_environment_variable("X", "env-ok")
        t.specify_file(str(tmp_path / "in.txt"), "in.txt", WORK_QUEUE_INPUT, cache=True)
        t.specify_file(str(tmp_path / "out.txt"), "out.txt", WORK_QUEUE_OUTPUT, cache=False)
        t.specify_buffer("buf", "b.txt", WORK_QUEUE_NOCACHE)
        t.specify_directory(None, "emptydir")
        taskid = q.submit(t)
        done = None
        while not q.empty():
            done = q.wait(5)
            if done:
                break
        assert done is not None and done.taskid == taskid
        assert done.result == WORK_QUEUE_RESULT_SUCCESS and done.return_status == 0
        assert done.output == b"env-ok\n" and done.total_submissions == 1
        assert (tmp_path / "out.txt").read_text() == "a\nb\n"
    finally:
        q.close()
    stats = [json.loads(line) for line in (tmp_path / "stats.log").read_text().splitlines()]
    assert stats and stats[-1]["tasks_done"] == 1
    txn = (tmp_path / "txn.log").read_text()
    assert f"TASK {taskid} WAITING" in txn and f"TASK {taskid} DONE" in txn and "MANAGER END" in txn
