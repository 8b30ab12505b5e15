"""A worker that announces ``info treadle-prefetch`` gets its next short task while one still runs.

The scripted worker (``_fake_worker``) shows exactly what the manager sends: a second
task before the first one's result when the worker prefetches and the category's tasks
are short, never otherwise (a reference worker, a treadle worker that did not announce
it, long tasks). A real ``treadle worker`` of one core then runs a queue of short tasks
that wait there for room, with a cancel of a waiting one.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

import pytest
from tests._wait import wait_for
from tests.queue import _manager_fixtures as fx
from tests.queue._fake_worker import FakeWorker, greeting
from tests.queue._manager_fixtures import drain, wait_workers

from treadle.queue import Result, Task, TaskState
from treadle.queue import protocol as wp

manager = fx.manager

GATE = b"resource tag 0\ninfo end_of_resource_update 0\ninfo tasks_running 0\ninfo worker-end-time 0\n"
SHORT_USEC = 2_000  # what a trivial task takes on a worker
LONG_USEC = 2_000_000


def connect(port: int, *, treadle: bool, prefetch: bool) -> FakeWorker:
    fw = FakeWorker(port)
    fw.send(greeting(cores=1, gate=False, treadle=treadle)
            + (f"info {wp.PREFETCH_INFO} 1\n".encode() if prefetch else b"") + GATE)
    return fw


def finish(fw: FakeWorker, task_id: int, usec: int) -> None:
    """Announce, be asked for, and send the result of ``task_id`` (exit 0, no output)."""
    fw.send(b"available_results\n")
    fw.expect(wp.SendResults)
    fw.send(b"result 0 0 0 %d %d\nend\n" % (usec, task_id))


def run_two(m, fw: FakeWorker, usec: int) -> None:  # noqa: ANN001
    """Two tasks, one after the other: the category's average running time is then ``usec``."""
    for _ in range(2):
        tid = m.submit(Task("true"))
        assert fw.expect(wp.Task).task_id == tid
        finish(fw, tid, usec)
        done = m.wait(10)
        assert done is not None and done.result is Result.SUCCESS


def on_workers_after(m, *tasks: Task, before: int = 0) -> int:  # noqa: ANN001
    """Submit ``tasks`` (``before`` are in the queue already); how many are on the worker
    once the manager has placed what it can.

    ``stats`` is answered on the manager's loop after the dispatch that the submit
    kicked, so the count is final, not a guess after a pause.
    """
    for t in tasks:
        m.submit(t)
    wait_for(lambda: m.stats.tasks_waiting + m.stats.tasks_on_workers == before + len(tasks), 10, "tasks to be drained")
    return m.stats.tasks_on_workers


@contextlib.contextmanager
def second_task_sent_ahead(m) -> Iterator[tuple[FakeWorker, Task, Task]]:  # noqa: ANN001
    """A prefetching one-core worker that has been sent short tasks ``a`` and ``b`` before ``a``'s result."""
    fw = connect(m.port, treadle=True, prefetch=True)
    try:
        wait_workers(m, 1)
        run_two(m, fw, SHORT_USEC)
        a, b = Task("true"), Task("true")
        assert on_workers_after(m, a, b) == 2
        assert [fw.expect(wp.Task).task_id for _ in range(2)] == [a.id, b.id]  # b before a's result
        yield fw, a, b
    finally:
        fw.close()


def test_short_tasks_wait_on_a_prefetching_worker(manager):
    with second_task_sent_ahead(manager) as (fw, a, b):
        assert manager.task_state(b.id) is TaskState.RUNNING
        finish(fw, a.id, SHORT_USEC)
        finish(fw, b.id, SHORT_USEC)
        done = drain(manager)
        assert {t.id: t.result for t in done.values()} == {a.id: Result.SUCCESS, b.id: Result.SUCCESS}


def test_cancelling_a_waiting_task_frees_its_place(manager):
    with second_task_sent_ahead(manager) as (fw, a, b):
        cancelled = manager.cancel(b)
        assert cancelled is b and b.state is TaskState.CANCELED
        assert fw.expect(wp.Kill).task_id == b.id
        c = Task("true")
        assert on_workers_after(manager, c, before=1) == 2  # a runs, c waits in b's place
        assert fw.expect(wp.Task).task_id == c.id
        finish(fw, a.id, SHORT_USEC)
        finish(fw, c.id, SHORT_USEC)
        assert sorted(t.id for t in drain(manager).values()) == [a.id, c.id]


@pytest.mark.parametrize(("treadle", "prefetch", "usec"), [
    (False, False, SHORT_USEC),  # a reference worker: never more than fits
    (True, False, SHORT_USEC),  # a treadle worker that did not offer it
    (False, True, SHORT_USEC),  # the line alone, from a worker that is not treadle's
    (True, True, LONG_USEC),  # long tasks are not held behind another
])
def test_no_task_waits_otherwise(manager, treadle, prefetch, usec):
    fw = connect(manager.port, treadle=treadle, prefetch=prefetch)
    try:
        wait_workers(manager, 1)
        run_two(manager, fw, usec)
        a, b = Task("true"), Task("true")
        assert on_workers_after(manager, a, b) == 1
        assert fw.expect(wp.Task).task_id == a.id
        finish(fw, a.id, usec)
        assert fw.expect(wp.Task).task_id == b.id  # only once a's result is in
        finish(fw, b.id, usec)
        assert len(drain(manager)) == 2
    finally:
        fw.close()


def test_a_one_core_treadle_worker_runs_a_queue_of_short_tasks(manager, tmp_path):
    worker = subprocess.Popen(
        [sys.executable, "-m", "treadle", "worker", "--single-shot", "-t", "30", "--cores", "1", "--memory", "1000",
         "--disk", "2000", "-s", str(tmp_path), "127.0.0.1", str(manager.port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_workers(manager, 1)
        for i in range(40):
            t = Task(f"echo {i} > out")
            t.add_output(str(tmp_path / f"out.{i}"), "out")
            manager.submit(t)
        done = drain(manager)
        assert all(t.result is Result.SUCCESS and t.exit_code == 0 for t in done.values())
        assert [(tmp_path / f"out.{i}").read_text() for i in range(40)] == [f"{i}\n" for i in range(40)]

        # a task waiting behind a running one, cancelled, never runs; the next one does
        marker = tmp_path / "marker"
        slow, waiting = Task("sleep 1"), Task(f"touch {marker}")
        assert on_workers_after(manager, slow, waiting) == 2
        assert manager.cancel(waiting) is waiting and waiting.state is TaskState.CANCELED
        after = Task("echo after")
        manager.submit(after)
        done = drain(manager)
        assert {t.id: (t.result, t.output) for t in done.values()} == {
            slow.id: (Result.SUCCESS, b""), after.id: (Result.SUCCESS, b"after\n")}
        assert not marker.exists()
    finally:
        worker.kill()
        worker.wait(10)
