"""The Python surface of spec §1.2: names, numbers, validation, queue bookkeeping."""

from __future__ import annotations

import asyncio

import pytest
from tests._wait import wait_for
from tests.queue import _manager_fixtures as fx
from tests.queue._fake_worker import FakeWorker, greeting

from treadle.errors import UsageError
from treadle.queue import Manager, Result, Task, TaskState
from treadle.queue import protocol as wp

manager = fx.manager


def test_result_and_state_numbers_match_the_reference():
    assert [int(r) for r in Result] == [0, 1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80]
    assert [s.name for s in TaskState] == [
        "UNKNOWN", "READY", "RUNNING", "WAITING_RETRIEVAL", "RETRIEVED", "DONE", "CANCELED"
    ]


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../b", "", "a/.."])
def test_unsafe_sandbox_names_refused_at_submit(name, tmp_path):
    (tmp_path / "f").write_text("x")
    t = Task("true")
    with pytest.raises(UsageError):
        t.add_input(str(tmp_path / "f"), name)
    with pytest.raises(UsageError):
        t.add_output(str(tmp_path / "o"), name)
    with pytest.raises(UsageError):
        t.add_input_buffer(b"x", name)


def test_ids_start_at_one_and_queue_bookkeeping(manager):
    assert manager.empty() and manager.hungry()
    ids = [manager.submit(Task("true")) for _ in range(12)]
    assert ids == list(range(1, 13))
    assert not manager.empty()
    wait_for(lambda: manager.stats.tasks_waiting == 12)
    assert not manager.hungry()  # 12 waiting, no worker to take them
    assert manager.task_state(3) is TaskState.READY
    assert manager.wait(0.1) is None


def test_cancel_queued_and_by_tag(manager):
    a = manager.submit(Task("true", tag="x"))
    manager.submit(Task("true", tag="x"))
    c = manager.submit(Task("true", tag="y"))
    got = manager.cancel(a)
    assert got is not None and got.state is TaskState.CANCELED and got.result is Result.UNKNOWN
    assert [t.tag for t in manager.cancel_by_tag("x")] == ["x"]
    assert manager.cancel(999) is None
    assert manager.task_state(c) is TaskState.READY
    assert manager.stats.tasks_cancelled == 2
    manager.cancel(c)
    assert manager.empty()


def test_hungry_uses_free_resources(manager):
    fw = FakeWorker(manager.port)
    fw.send(greeting(cores=64))
    wait_for(lambda: manager.stats.workers_able == 1)
    for _ in range(20):
        manager.submit(Task("true", cores=1, memory=10))
    wait_for(lambda: manager.stats.tasks_running == 20, what="20 dispatched")
    for _ in range(12):
        manager.submit(Task("true", cores=1, memory=10))
    wait_for(lambda: manager.stats.tasks_waiting == 12 or manager.stats.tasks_running == 32)
    # 64 cores, 20 used: 12 more waiting ones would fit -> still hungry
    assert manager.hungry()


def test_priority_then_fifo(manager):
    for prio, cmd in [(0, "a"), (5, "b"), (0, "c"), (5, "d")]:
        manager.submit(Task(cmd, priority=prio, cores=1))
    wait_for(lambda: manager.stats.tasks_waiting == 4)
    fw = FakeWorker(manager.port)
    fw.send(greeting(cores=4))
    order = [fw.expect(wp.Task).command for _ in range(4)]
    assert order == ["b", "d", "a", "c"]


def test_async_variants(manager):
    async def main() -> Task | None:
        tid = await manager.submit_async(Task("true"))
        fw = FakeWorker(manager.port)
        fw.send(greeting())
        task = await asyncio.to_thread(fw.expect, wp.Task)
        assert task.task_id == tid
        fw.send(b"available_results\n")
        await asyncio.to_thread(fw.expect, wp.SendResults)
        fw.send(fw.result(tid, output=b"async") + b"end\n")
        return await manager.wait_async(10)

    done = asyncio.run(main())
    assert done is not None and done.output == b"async" and done.state is TaskState.DONE


def test_missing_local_input_is_input_missing(manager, tmp_path):
    fw = FakeWorker(manager.port)
    fw.send(greeting())
    t = Task("true")
    t.add_input(str(tmp_path / "nope.txt"))
    manager.submit(t)
    done = manager.wait(10)
    assert done is not None and done.result is Result.INPUT_MISSING


def test_category_max_fills_undeclared_requests(manager):
    manager.set_category("small", max={"cores": 1, "memory": 100})
    fw = FakeWorker(manager.port)
    fw.send(greeting(cores=4))
    manager.submit(Task("true", category="small"))
    task = fw.expect(wp.Task)
    assert (task.cores, task.memory) == (1, 100)
    with pytest.raises(UsageError):
        manager.set_category("x", mode="SOMETIMES")


def test_blocked_host_gets_no_task(manager):
    manager.block_host("127.0.0.1")
    fw = FakeWorker(manager.port)
    fw.send(greeting())
    manager.submit(Task("true"))
    assert fw.next_event(1.0) is None
    manager.unblock_host("127.0.0.1")
    fw.expect(wp.Task)


def test_port_in_use_is_a_usage_error(manager):
    with pytest.raises(UsageError):
        Manager(manager.port, host="127.0.0.1")


def test_stats_field_names():
    from treadle.queue.manager import Stats

    names = {f for f in Stats.__dataclass_fields__}
    for expected in (
        "workers_connected", "tasks_waiting", "tasks_on_workers", "tasks_running", "tasks_with_results",
        "tasks_submitted", "tasks_done", "tasks_failed", "tasks_cancelled", "bytes_sent", "bytes_received",
        "capacity_cores",
    ):
        assert expected in names


def test_close_wakes_a_waiting_thread():
    import threading

    m = Manager(0, host="127.0.0.1")
    m.submit(Task("true"))
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(m.wait()))
    t.start()
    wait_for(lambda: m.stats.tasks_waiting == 1)
    m.close()
    t.join(10)
    assert not t.is_alive() and got == [None]
