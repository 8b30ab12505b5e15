"""Manager features beyond the basic loop: TLS, catalog, keepalive timeout, limits, fast abort, scheduling."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request

import pytest
from tests._wait import wait_for
from tests.queue import _manager_fixtures as fx
from tests.queue._fake_worker import FakeWorker, greeting

from treadle.queue import Manager, Result, Task, TaskState
from treadle.queue import protocol as wp
from treadle.queue.scheduler import ReadyQueue, choose_worker

manager = fx.manager


def _finish(fw: FakeWorker, task_id: int, output: bytes = b"", status: int = 0) -> None:
    fw.send(b"available_results\n")
    fw.expect(wp.SendResults)
    fw.send(fw.result(task_id, status=status, output=output) + b"end\n")


def test_tls_between_treadle_peers(tmp_path, tls_server):
    server, cert = tls_server
    with Manager(0, host="127.0.0.1", ssl=server) as m:
        client = ssl.create_default_context(cafile=str(cert))
        client.check_hostname = False
        fw = FakeWorker(m.port)
        fw.sock = client.wrap_socket(fw.sock)
        fw.send(greeting())
        (tmp_path / "big").write_bytes(b"y" * 300_000)  # above the sendfile threshold
        t = Task("cat in")
        t.add_input_buffer(b"x" * 200_000, "in")
        t.add_input(str(tmp_path / "big"))
        m.submit(t)
        task = fw.expect(wp.Task)
        assert b"x" * 1000 in bytes(fw.raw) and b"y" * 300_000 in bytes(fw.raw)
        _finish(fw, task.task_id, b"secure")
        assert m.wait(10).output == b"secure"
        # a plain-text peer cannot talk to a TLS manager
        plain = FakeWorker(m.port)
        plain.send(greeting())
        assert plain.wait_closed(10)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except OSError:
        return False


@pytest.mark.reference
def test_catalog_only_when_named(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cat = subprocess.Popen(
        [shutil.which("catalog_server") or "catalog_server", "-I", "127.0.0.1", "-p", str(port), "-u", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )
    try:
        catalog = f"127.0.0.1:{port}"
        wait_for(lambda: _answers(f"http://{catalog}/query.json"), 15, "the catalog server")
        with Manager(0, host="127.0.0.1", catalog=catalog) as unnamed, Manager(
            0, host="127.0.0.1", name="treadle-test-proj", catalog=catalog
        ) as named:

            def listed() -> list:
                body = urllib.request.urlopen(f"http://{catalog}/query.json", timeout=5).read()
                return [r for r in json.loads(body) if r.get("type") == "wq_master"]

            wait_for(lambda: any(r.get("project") == "treadle-test-proj" for r in listed()), 15, "catalog record")
            ports = {int(r["port"]) for r in listed()}
            assert named.port in ports and unnamed.port not in ports
    finally:
        cat.kill()
        cat.wait()


def test_keepalive_timeout_removes_silent_worker(manager):
    manager.keepalive_interval = 0.2
    manager.keepalive_timeout = 1
    fw = FakeWorker(manager.port)
    fw.send(greeting())
    tid = manager.submit(Task("sleep 100"))
    fw.expect(wp.Task)
    fw.expect(wp.Check)  # we never answer it
    assert fw.wait_closed(10)
    wait_for(lambda: manager.task_state(tid) is TaskState.READY, what="task back in queue")
    assert manager.stats.workers_lost == 1


def test_end_time_passed_gives_task_timeout(manager):
    fw = FakeWorker(manager.port)
    fw.send(greeting())
    manager.submit(Task("sleep 100", end_time=time.time() + 1))
    task = fw.expect(wp.Task)
    assert task.end_time is not None
    done = manager.wait(10)
    assert done is not None and done.result is Result.TASK_TIMEOUT
    assert isinstance(fw.expect(wp.Kill), wp.Kill)


def test_fast_abort_requeues_slow_task(manager):
    manager.fast_abort(3)
    fw = FakeWorker(manager.port)
    fw.send(greeting())
    for _ in range(10):  # ten fast tasks set the average
        manager.submit(Task("true"))
        task = fw.expect(wp.Task)
        _finish(fw, task.task_id)
        assert manager.wait(10) is not None
    slow = manager.submit(Task("sleep 100"))
    first = fw.expect(wp.Task)
    assert first.task_id == slow
    fw.expect(wp.Kill, timeout=10)  # aborted: it ran far longer than 3 x the average
    again = fw.expect(wp.Task)
    assert again.task_id == slow
    assert manager.stats.workers_fast_aborted == 1


def test_running_time_min_and_features(manager):
    fw = FakeWorker(manager.port)
    fw.send(greeting(gate=False) + b"feature gpu%%20box\nresource tag 0\ninfo worker-end-time %d\n" % int(time.time() + 30))
    manager.submit(Task("long", running_time_min=3600))
    manager.submit(Task("needs-feature", features=["gpu box"], cores=1))
    task = fw.expect(wp.Task)
    assert task.command == "needs-feature"
    assert fw.next_event(0.7) is None  # the long one waits for a worker that lives long enough


def test_worker_caching_most_input_bytes_is_chosen(manager, tmp_path):
    (tmp_path / "big").write_bytes(b"b" * 100_000)
    a = FakeWorker(manager.port)
    a.send(greeting())
    wait_for(lambda: manager.stats.workers_able == 1)
    b = FakeWorker(manager.port)
    b.send(greeting())
    wait_for(lambda: manager.stats.workers_able == 2)
    t = Task("first", cores=1)
    t.add_input(str(tmp_path / "big"))
    manager.submit(t)
    first = a.expect(wp.Task)  # ties go to the earlier worker
    _finish(a, first.task_id)
    manager.wait(10)
    t = Task("second", cores=1)
    t.add_input(str(tmp_path / "big"))
    manager.submit(t)
    assert a.expect(wp.Task).command == "second"  # a holds the input already
    assert b.next_event(0.3) is None


def test_ready_queue_order_and_lazy_removal():
    q: ReadyQueue[str] = ReadyQueue()
    orders = {name: q.push(prio, name) for prio, name in [(0, "a"), (1, "b"), (0, "c")]}
    q.discard(orders["c"])
    assert len(q) == 2
    assert [q.pop()[1], q.pop()[1]] == ["b", "a"] and q.pop() is None
    lifo: ReadyQueue[str] = ReadyQueue(lifo=True)
    for name in "xyz":
        lifo.push(0, name)
    assert [lifo.pop()[1] for _ in range(3)] == ["z", "y", "x"]
    assert choose_worker([1, 2, 3], lambda w: w != 1, lambda w: {2: 5, 3: 5}[w]) == 2


def test_resource_exhaustion_grows_to_category_max_unless_fixed(manager):
    manager.set_category("grow", first={"cores": 1, "memory": 100}, max={"cores": 2, "memory": 500}, mode="MAX")
    fw = FakeWorker(manager.port)
    fw.send(greeting(cores=4))
    tid = manager.submit(Task("hungry", category="grow"))
    first = fw.expect(wp.Task)
    assert (first.cores, first.memory) == (1, 100)
    _finish(fw, tid, status=16)
    second = fw.expect(wp.Task)
    assert second.task_id == tid and (second.cores, second.memory) == (2, 500)
    _finish(fw, tid, status=16)
    done = manager.wait(10)  # exhausted at the maximum: reported
    assert done.result is Result.RESOURCE_EXHAUSTION
    manager.set_category("fixed", max={"cores": 1})
    manager.submit(Task("x", category="fixed"))
    t = fw.expect(wp.Task)
    _finish(fw, t.task_id, status=16)
    assert manager.wait(10).result is Result.RESOURCE_EXHAUSTION
