"""treadle's manager with treadle's own worker (the third pairing of spec §4)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from tests._wait import wait_for
from tests.queue import _manager_fixtures as fx
from tests.queue._manager_fixtures import drain, wait_workers

from treadle.queue import Manager, Result, Task, TaskState

manager = fx.manager


@pytest.fixture
def tworkers(tmp_path):
    procs: list[subprocess.Popen[bytes]] = []

    def start(port: int, *extra: str, cores: int = 1) -> subprocess.Popen[bytes]:
        d = tmp_path / f"tw{len(procs)}"
        d.mkdir()
        args = [sys.executable, "-m", "treadle", "worker", "--single-shot", "-t", "30", "--cores", str(cores),
                "--memory", "1000", "--disk", "2000", "-s", str(d), *extra, "127.0.0.1", str(port)]
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def test_files_dirs_and_cached_reuse(manager, tworkers, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "b.txt").write_text("b\n")
    os.symlink("sub/b.txt", src / "link")
    (tmp_path / "shared").write_bytes(b"s" * 100_000)
    tworkers(manager.port)
    wait_workers(manager, 1)
    for i in range(3):
        t = Task(f"mkdir -p o/x && cat in/link > o/x/v && wc -c < shared > n{i}", cores=1)
        t.add_input_dir(str(src), "in")
        t.add_input(str(tmp_path / "shared"))
        t.add_output(str(tmp_path / f"o{i}"), "o")
        t.add_output(str(tmp_path / f"n{i}"), f"n{i}")
        manager.submit(t)
    done = drain(manager)
    assert all(t.result is Result.SUCCESS and t.exit_code == 0 for t in done.values()), [t.output for t in done.values()]
    for i in range(3):
        assert (tmp_path / f"o{i}" / "x" / "v").read_text() == "b\n"
        assert (tmp_path / f"n{i}").read_text().strip() == "100000"
    assert manager.stats.bytes_sent < 2 * 100_000
    # each task counts what went out for it: its description, and `shared` for the first
    per_task = sorted(t.bytes_sent for t in done.values())
    assert per_task[0] > 0 and per_task[-1] > 100_000 > per_task[-2], per_task
    assert sum(per_task) <= manager.stats.bytes_sent
    assert all(t.bytes_received >= len("100000") for t in done.values())


def test_signal_is_reported_as_signal(manager, tworkers):
    """Gotcha 6: treadle's worker says `result 8 N`, so the signal is known."""
    tworkers(manager.port)
    manager.submit(Task("kill -TERM $$"))
    (done,) = drain(manager).values()
    assert done.result is Result.SIGNAL and done.signal == signal.SIGTERM and done.exit_code is None


def test_wall_time_and_kill(manager, tworkers):
    tworkers(manager.port, cores=2)
    wait_workers(manager, 1)
    start = time.monotonic()
    manager.submit(Task("sleep 30", running_time_max=1, cores=1))
    tid = manager.submit(Task("sleep 30", cores=1))
    wait_for(lambda: manager.task_state(tid) is TaskState.RUNNING, what="running")
    assert manager.cancel(tid).state is TaskState.CANCELED
    (done,) = drain(manager, timeout=20).values()
    assert done.result is Result.TASK_MAX_RUN_TIME and time.monotonic() - start < 10


def test_password(tworkers, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    with Manager(0, host="127.0.0.1", password_file=str(pw)) as m:
        tworkers(m.port, "-P", str(pw))
        m.submit(Task("echo ok"))
        assert drain(m)[1].output == b"ok\n"


@pytest.mark.parametrize("lifo", [False, True])
def test_ready_tasks_run_in_submission_order_or_newest_first(tworkers, lifo):
    with Manager(0, host="127.0.0.1", lifo=lifo) as m:
        for i in range(5):
            m.submit(Task(f"echo {i}", cores=1))  # all queued before any worker exists
        tworkers(m.port)  # one worker of one core: completion order is run order
        order = []
        while not m.empty():
            t = m.wait(30)
            assert t is not None
            order.append(int(t.output))
    assert order == ([4, 3, 2, 1, 0] if lifo else [0, 1, 2, 3, 4])


def test_url_input_is_fetched_by_the_worker_once_per_worker(manager, tworkers, tmp_path):
    import functools
    import http.server
    import threading

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "data.txt").write_text("from the web\n")
    fetched = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            fetched.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path / "site")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/data.txt"
        tworkers(manager.port)
        for _ in range(3):
            manager.submit(Task("cat got.txt", cores=1).add_input_url(url, "got.txt"))
        missing = Task("cat nope.txt", cores=1).add_input_url(url + ".missing", "nope.txt")
        manager.submit(missing)
        done = drain(manager)
    finally:
        server.shutdown()
    ok = [t for t in done.values() if t.id != missing.id]
    assert [t.output for t in ok] == [b"from the web\n"] * 3
    assert done[missing.id].result is Result.INPUT_MISSING
    assert fetched.count("/data.txt") == 1  # cached on the worker after the first task


def test_watched_output_grows_while_the_task_runs(manager, tworkers, tmp_path):
    tworkers(manager.port)
    wait_workers(manager, 1)
    local = tmp_path / "log.txt"
    t = Task("echo first >> log.txt; sleep 3; echo second >> log.txt", cores=1)
    t.add_output(str(local), "log.txt", watch=True)
    manager.submit(t)
    wait_for(lambda: local.exists() and local.read_text() == "first\n", 2.5, "the first line")
    assert manager.wait(30) is t
    assert local.read_text() == "first\nsecond\n" and t.result is Result.SUCCESS


def test_a_task_avoids_the_workers_it_names_while_another_is_connected(manager, tworkers):
    tworkers(manager.port)
    wait_workers(manager, 1)
    (only,) = [w["address_port"] for w in manager.workers()]
    alone = Task("echo alone", cores=1)
    alone.avoid_workers = {only}
    manager.submit(alone)
    assert manager.wait(30) is alone and alone.host == only  # nowhere else to go
    tworkers(manager.port)
    wait_workers(manager, 2)
    for i in range(4):
        t = Task(f"echo {i}", cores=1)
        t.avoid_workers = {only}
        manager.submit(t)
    hosts = {t.host for t in drain(manager).values()}
    assert len(hosts) == 1 and only not in hosts
