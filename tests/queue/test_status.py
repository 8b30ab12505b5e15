"""Status queries: the reference ``work_queue_status`` and ``treadle status`` against treadle's manager."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest
from tests._wait import wait_for
from tests.queue import _manager_fixtures as fx
from tests.queue._fake_worker import FakeWorker, greeting

from treadle.queue import Task
from treadle.queue import protocol as wp

manager = fx.manager


@pytest.fixture
def busy(manager):
    """A manager with one (scripted) worker running one task and one task waiting."""
    fw = FakeWorker(manager.port)
    fw.send(greeting())
    manager.submit(Task("sleep 100 # first", tag="t1"))
    manager.submit(Task("echo second"))
    fw.expect(wp.Task)
    wait_for(lambda: manager.stats.tasks_running == 1)
    yield manager
    fw.close()


@pytest.mark.reference
def test_reference_work_queue_status_lists_workers_and_tasks(busy):
    exe = shutil.which("work_queue_status")
    assert exe is not None
    port = str(busy.port)
    queue = subprocess.run([exe, "127.0.0.1", port], capture_output=True, text=True, timeout=30)
    assert queue.returncode == 0
    assert port in queue.stdout
    workers = subprocess.run([exe, "-W", "127.0.0.1", port], capture_output=True, text=True, timeout=30)
    assert "fakehost" in workers.stdout and "127.0.0.1:" in workers.stdout
    tasks = subprocess.run([exe, "-T", "127.0.0.1", port], capture_output=True, text=True, timeout=30)
    assert "sleep 100" in tasks.stdout and "echo second" in tasks.stdout
    assert "running" in tasks.stdout and "READY" in tasks.stdout


def test_treadle_status_table_and_json(busy):
    port = str(busy.port)
    cmd = [sys.executable, "-m", "treadle", "status", "127.0.0.1", port]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "fakehost" in out.stdout and "sleep 100" in out.stdout and "waiting 1" in out.stdout
    js = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=30)
    snap = json.loads(js.stdout)
    assert snap["queue"]["tasks_running"] == 1 and snap["queue"]["tasks_waiting"] == 1
    assert [w["hostname"] for w in snap["workers"]] == ["fakehost"]
    assert sorted(t["taskid"] for t in snap["tasks"]) == [1, 2]


def test_treadle_status_unreachable_is_one_line_error():
    out = subprocess.run([sys.executable, "-m", "treadle", "status", "127.0.0.1", "1"], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.startswith("treadle: cannot query") and "Traceback" not in out.stderr


def test_http_status_page(busy):
    body = urllib.request.urlopen(f"http://127.0.0.1:{busy.port}/task_status", timeout=10).read()
    assert {t["taskid"] for t in json.loads(body)} == {1, 2}
    index = urllib.request.urlopen(f"http://127.0.0.1:{busy.port}/", timeout=10).read()
    assert b"queue_status" in index


def test_wable_status_has_whole_queue(busy):
    from treadle.queue.status import query

    cats = query("127.0.0.1", busy.port, "wable_status")
    assert cats[-1]["category"] == "whole queue" and cats[-1]["tasks_waiting"] == 1


def test_treadle_status_with_password(tmp_path):
    from treadle.queue import Manager

    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    with Manager(0, host="127.0.0.1", password_file=str(pw)) as m:
        m.submit(Task("true"))
        cmd = [sys.executable, "-m", "treadle", "status", "127.0.0.1", str(m.port), "--json"]
        ok = subprocess.run([*cmd, "-P", str(pw)], capture_output=True, text=True, timeout=30)
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["queue"]["tasks_waiting"] == 1
        without = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert without.returncode == 1 and "Traceback" not in without.stderr
        (tmp_path / "bad").write_text("wrong\n")
        bad = subprocess.run([*cmd, "-P", str(tmp_path / "bad")], capture_output=True, text=True, timeout=30)
        assert bad.returncode == 1 and "password authentication" in bad.stderr


def test_treadle_status_with_a_tls_manager(tls_server):
    """`treadle status` and the factory share one client: both reach a manager that speaks TLS."""
    from treadle.queue import Manager, factory, status

    server, cert = tls_server
    with Manager(0, host="127.0.0.1", ssl=server) as m:
        m.submit(Task("true"))
        cmd = [sys.executable, "-m", "treadle", "status", "127.0.0.1", str(m.port), "--json"]
        plain = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert plain.returncode == 1 and "Traceback" not in plain.stderr
        ok = subprocess.run([*cmd, "--tls-ca", str(cert)], capture_output=True, text=True, timeout=30)
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["queue"]["tasks_waiting"] == 1
    assert factory.query_status is status.query_status  # the factory asks through the same client


def test_a_status_reply_that_never_ends_is_refused():
    """A peer that answers a status question with an endless stream cannot fill our memory:
    both the person's client and the factory's stop after MAX_STATUS_REPLY bytes."""
    from treadle.errors import TreadleError
    from treadle.queue.status import query, query_status

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    sent: list[int] = []  # bytes the peer got out before each client hung up

    def flood() -> None:
        chunk = b"[" + b" " * ((1 << 20) - 1)
        for _ in range(2):
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)  # the question
                total = 0
                try:
                    while total <= 4 * wp.MAX_STATUS_REPLY:
                        conn.sendall(chunk)
                        total += len(chunk)
                except OSError:
                    pass  # the client hung up: what this test wants
                sent.append(total)

    server = threading.Thread(target=flood, daemon=True)
    server.start()
    try:
        with pytest.raises(TreadleError, match="larger than"):
            query("127.0.0.1", port)
        with pytest.raises(wp.ProtocolError, match="larger than"):
            query_status("127.0.0.1", port)
        server.join(30)
    finally:
        listener.close()
    # each client hung up soon after the cap, instead of reading the four caps the peer offers
    assert len(sent) == 2 and all(n < 2 * wp.MAX_STATUS_REPLY for n in sent), sent
