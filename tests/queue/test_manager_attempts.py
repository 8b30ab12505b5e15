"""The manager's attempts: how each way an attempt ends counts against the task."""

from __future__ import annotations

import os
import signal

import pytest
from tests._wait import wait_for
from tests.queue import _manager_fixtures as fx

from treadle.queue import Result, Task, TaskState
from treadle.queue.attempt import transition

manager = fx.manager

# A sysfs file claims 4096 bytes and yields a few: its send fails half-way, as a local
# input that shrinks while it is being sent does.
LYING_FILE = "/sys/kernel/profiling"


def _lies_about_its_size(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return len(f.read()) != os.stat(path).st_size
    except OSError:
        return False


@pytest.mark.skipif(not _lies_about_its_size(LYING_FILE), reason=f"{LYING_FILE} is missing or tells its size")
def test_a_failed_send_does_not_use_up_a_retry(manager, start_worker, tmp_path):
    """The send fails (the worker is dropped), then the task's one real attempt is lost with
    its worker: with max_retries=1 it still has its retry, because the failed send was the
    worker's failure, not the task's."""
    link = tmp_path / "input"
    os.symlink(LYING_FILE, link)
    flag = tmp_path / "second-try"
    task = Task(f"cat input; test -e {flag} || sleep 60", max_retries=1)
    task.add_input(str(link), "input", cache=False)
    manager.submit(task)
    worker_args = ("--single-shot", "-t", "30", "--cores", "1", "127.0.0.1", str(manager.port))

    start_worker("-s", str(tmp_path / "w1"), *worker_args)
    wait_for(lambda: manager.stats.workers_removed >= 1, what="the worker dropped after the failed send")
    os.unlink(link)
    (tmp_path / "real").write_text("hello\n")
    os.symlink(tmp_path / "real", link)

    second = start_worker("-s", str(tmp_path / "w2"), *worker_args)
    wait_for(lambda: manager.stats.tasks_running == 1, what="the task running on the second worker")
    os.killpg(second.pid, signal.SIGKILL)
    wait_for(lambda: manager.stats.workers_removed >= 2, what="the second worker lost")

    flag.touch()
    start_worker("-s", str(tmp_path / "w3"), *worker_args)
    done = manager.wait(30)
    assert done is task
    assert task.result is Result.SUCCESS, (task.result, task.output)
    assert task.output == b"hello\n"
    assert task.attempts == 2  # the lost attempt and the one that ran; not the failed send


def test_a_task_changes_state_only_along_its_life():
    """Every state change goes through transition(); one the life of a task lacks is refused."""
    task = Task("true")
    with pytest.raises(RuntimeError, match="UNKNOWN -> RUNNING"):
        transition(task, TaskState.RUNNING)
    for state in (TaskState.READY, TaskState.RUNNING, TaskState.WAITING_RETRIEVAL, TaskState.RETRIEVED, TaskState.DONE):
        transition(task, state)
    with pytest.raises(RuntimeError, match="DONE -> CANCELED"):
        transition(task, TaskState.CANCELED)
    assert task.state is TaskState.DONE
