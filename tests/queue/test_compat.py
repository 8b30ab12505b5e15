"""A reference-style program runs on treadle after changing only its import."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

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
        assert done.output == "env-ok\n" and done.total_submissions == 1
        assert (tmp_path / "out.txt").read_text() == "a\nb\n"
    finally:
        q.close()
    stats = [json.loads(line) for line in (tmp_path / "stats.log").read_text().splitlines()]
    assert stats and stats[-1]["tasks_done"] == 1
    txn = (tmp_path / "txn.log").read_text()
    assert f"TASK {taskid} WAITING" in txn and f"TASK {taskid} DONE" in txn and "MANAGER END" in txn


# A Work Queue program written for the cctools binding; the only line changed is the import.
CCTOOLS_STYLE_SCRIPT = textwrap.dedent("""
    from treadle.queue.compat import *   # was: from work_queue import *

    q = WorkQueue(port=0)
    print("listening on port %d" % q.port, flush=True)
    for word in ["alpha", "beta"]:
        t = Task("echo %s from $(cat name.txt)" % word)
        t.specify_buffer("the worker\\n", "name.txt", cache=False)
        t.specify_tag("say-" + word)
        q.submit(t)
    while not q.empty():
        t = q.wait(5)
        if t:
            print("task " + t.tag + " (" + t.command + ") on " + t.hostname + ": " + t.result_str)
            print("  said: " + t.output.strip() + "; std_output: " + t.std_output.upper().strip())
    q.close()
""")


def test_cctools_style_script_runs_with_only_its_import_changed(tmp_path):
    script = tmp_path / "wq_example.py"
    script.write_text(CCTOOLS_STYLE_SCRIPT)
    prog = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    worker = None
    try:
        assert prog.stdout is not None
        port = int(prog.stdout.readline().split()[-1])
        worker = subprocess.Popen([sys.executable, "-m", "treadle", "worker", "--single-shot", "-t", "30",
                                   "-s", str(tmp_path), "127.0.0.1", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out, err = prog.communicate(timeout=60)
    finally:
        for p in (prog, worker):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert prog.returncode == 0, err
    lines = out.splitlines()
    for word in ("alpha", "beta"):
        assert f"  said: {word} from the worker; std_output: {word.upper()} FROM THE WORKER" in lines
        assert any(line.startswith(f"task say-{word} (echo {word} from $(cat name.txt)) on ")
                   and line.endswith(": SUCCESS") for line in lines)


def test_compat_text_attributes_are_str_like_the_cctools_binding():
    t = Task("true")
    t.specify_tag("x")
    t.output = b"caf\xc3\xa9 \xff"  # what the manager stores: the raw bytes the task printed
    assert t.output == "caf\u00e9 \udcff" and t.std_output == t.output
    assert t.output.encode("utf-8", "surrogateescape") == b"caf\xc3\xa9 \xff"
    for name in ("command", "tag", "category", "output", "std_output", "result_str"):
        assert isinstance(getattr(t, name), str), name
