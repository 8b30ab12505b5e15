"""Faults: a worker killed mid-task, a manager that goes away."""

from __future__ import annotations

import signal
import time

import pytest
from tests._wait import wait_for
from tests.queue import _manager_fixtures as fx
from tests.queue._manager_fixtures import drain, wait_workers

from treadle.queue import Manager, Result, Task, TaskState

manager = fx.manager
workers = fx.workers

pytestmark = pytest.mark.reference


def test_worker_killed_mid_task_task_completes_elsewhere(manager, workers, tmp_path):
    first = workers.start(manager.port)
    wait_workers(manager, 1)
    t = Task("sleep 2; echo done > out.txt")
    t.add_output(str(tmp_path / "out.txt"), "out.txt")
    tid = manager.submit(t)
    wait_for(lambda: manager.task_state(tid) is TaskState.RUNNING, what="task running")
    first.send_signal(signal.SIGKILL)
    first.wait(5)
    wait_for(lambda: manager.stats.workers_lost == 1, what="worker loss noticed")
    assert manager.task_state(tid) is TaskState.READY  # back in the queue, not failed
    workers.start(manager.port)
    done = drain(manager, timeout=30)[tid]
    assert done.result is Result.SUCCESS and done.attempts == 2
    assert (tmp_path / "out.txt").read_text() == "done\n"


def test_max_retries_counts_lost_workers(manager, workers):
    # the reference worker's task inherits its socket: the loss shows when the task ends
    tid = manager.submit(Task("sleep 2", max_retries=1))
    for _ in range(2):
        w = workers.start(manager.port)
        wait_for(lambda: manager.task_state(tid) is TaskState.RUNNING, what="task running")
        w.send_signal(signal.SIGKILL)
        w.wait(5)
        wait_for(lambda: manager.task_state(tid) is not TaskState.RUNNING, what="loss noticed")
    done = manager.wait(10)
    assert done is not None and done.result is Result.MAX_RETRIES and done.attempts == 2


def test_workers_leave_when_the_manager_dies(workers):
    m = Manager(0, host="127.0.0.1")
    p = workers.start(m.port, "-t", "2", single_shot=False)
    wait_workers(m, 1)
    # stop the manager without a release: the worker loses its manager, then idles out
    m._loop.call_soon_threadsafe(m._server.close)
    for w in list(m._workers.values()):
        m._loop.call_soon_threadsafe(w.link.abort)
    start = time.monotonic()
    assert p.wait(30) is not None
    assert time.monotonic() - start < 30
    m.close()
