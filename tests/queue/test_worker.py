"""The worker's own promises (spec section 2), driven step by step over a real socket.

A scripted manager (treadle's protocol module on a blocking socket) plays the manager
so that each test can send exactly the messages it needs: limits, kills, unsafe names,
disconnection. The worker is the real ``treadle worker`` process.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from tests._wait import alive, wait_for

from treadle.queue import protocol as p


class ScriptedManager:
    """A manager that does only what a test tells it, one message at a time."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sock: socket.socket | None = None
        self.conn = p.ManagerConnection()
        self.pending: list = []
        self.history: list = []  # every event received, for checks after the fact

    def accept(self, timeout: float = 20) -> None:
        self.server.settimeout(timeout)
        self.sock, _ = self.server.accept()
        self.sock.settimeout(timeout)
        self.conn = p.ManagerConnection()
        self.pending = []

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.server.close()

    def send(self, *events: p.Event) -> None:
        assert self.sock is not None
        self.sock.sendall(b"".join(self.conn.send(e) for e in events))

    def next(self) -> p.Event:
        """The next event, with payload chunks merged into one Data."""
        while not self.pending or isinstance(self.pending[-1], p.Data):
            ev = self.conn.next_event()
            if ev is p.NEED_DATA:
                assert self.sock is not None
                self.conn.receive_data(self.sock.recv(1 << 16))
                continue
            if isinstance(ev, p.Data) and self.pending and isinstance(self.pending[-1], p.Data):
                self.pending[-1] = p.Data(self.pending[-1].data + ev.data)
            else:
                self.pending.append(ev)
        ev = self.pending.pop(0)
        self.history.append(ev)
        return ev

    def until(self, want, timeout: float = 20) -> list:
        """Events up to and including the first one for which ``want(event)`` holds."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ev = self.next()
            seen.append(ev)
            if want(ev):
                return seen
            if isinstance(ev, p.ConnectionClosed):
                break
        raise AssertionError(f"not seen; got {seen}")

    def greeting(self) -> list:
        return self.until(lambda e: isinstance(e, p.Info) and e.name == "worker-end-time")

    def results(self, timeout: float = 20) -> dict:
        """Wait for available_results, ask, and return {task_id: (Result, stdout)}."""
        self.until(lambda e: isinstance(e, p.AvailableResults), timeout)
        self.send(p.SendResults())
        out = {}
        events = self.until(lambda e: isinstance(e, p.End))
        for i, ev in enumerate(events):
            if isinstance(ev, p.Result):
                data = events[i + 1].data if isinstance(events[i + 1], p.Data) else b""
                out[ev.task_id] = (ev, data)
        return out

    def get(self, name: str) -> list:
        self.send(p.Get(name))
        return [e for e in self.until(lambda e: isinstance(e, p.End))
                if not isinstance(e, (p.Info, p.Alive, p.EndOfData))]


@pytest.fixture
def manager():
    m = ScriptedManager()
    yield m
    m.close()


@pytest.fixture
def connected(manager: ScriptedManager, start_worker, tmp_path: Path):
    """A worker with 2 cores connected to the scripted manager, greeting consumed."""
    ws = tmp_path / "ws"
    ws.mkdir()
    proc = start_worker("--single-shot", "-t", "60", "--cores", "2", "--memory", "1000",
                        "--disk", "1000", "-s", str(ws), "127.0.0.1", str(manager.port))
    manager.accept()
    manager.greeting()
    return manager, proc, ws


def put(m: ScriptedManager, name: str, data: bytes, mode: int = 0o644) -> None:
    m.send(p.Put(name, len(data), mode), p.Data(data))


def test_greeting_is_complete_and_valid(manager: ScriptedManager, start_worker,
                                        tmp_path: Path) -> None:
    start_worker("--single-shot", "-t", "30", "--cores", "3", "--memory", "700", "--disk",
                 "800", "--gpus", "0", "--feature", "big mem", "--wall-time", "3600",
                 "-A", "armv9", "-O", "Plan9", "-s", str(tmp_path), "127.0.0.1",
                 str(manager.port))
    manager.accept()
    events = manager.greeting()
    g = events[0]
    assert isinstance(g, p.Greeting) and g.protocol == 9
    assert (g.os, g.arch) == ("Plan9", "armv9")
    assert p.Feature("big mem") in events
    assert p.Resource("cores", 3, 3, 3) in events and p.Resource("memory", 700, 700, 700) in events
    assert p.Resource("workers", 1, 1, 1) in events and p.ResourceTag(0) in events
    names = [type(e).__name__ + getattr(e, "name", "") for e in events]
    assert names.index("Resourceworkers") < names.index("Resourcedisk") < \
        names.index("Resourcememory") < names.index("Resourcegpus") < names.index("Resourcecores")
    end = [e for e in events if isinstance(e, p.Info) and e.name == "worker-end-time"][0]
    assert abs(int(end.value) - (time.time() + 3600)) < 60
    assert all(e.value for e in events if isinstance(e, p.Info))  # gotcha 3


def test_task_with_inputs_env_outputs_and_get(connected) -> None:
    m, _, ws = connected
    put(m, "file-0-in", b"hello\n")
    m.send(p.Dir("dir-0-tree"), p.Dir("sub"), p.Put("b.txt", 4, 0o600), p.Data(b"bbb\n"),
           p.End(), p.Symlink("link", b"sub/b.txt\0"), p.End())
    m.send(p.Task(7, "cat in.txt tree/link > out.txt; echo $X $CORES $MEMORY; "
                  "mkdir -p od/s; echo v > od/s/v; ln -s s/v od/l; ln -s nowhere od/dangling; "
                  "ls empty; exit 4",
                  cores=1, memory=100, disk=10,
                  env=("X=from-env", "IGNORED"),
                  inputs=(p.TaskFile("file-0-in", "in.txt", 1), p.TaskFile("dir-0-tree", "tree", 1),
                          p.EmptyDir("empty")),
                  outputs=(p.TaskFile("file-1-out", "out.txt", 0),
                           p.TaskFile("dir-1-od", "od", 0),
                           p.TaskFile("file-2-absent", "absent.txt", 0))))
    res, stdout = m.results()[7]
    assert (res.status, res.exit_code) == (0, 4)  # a non-zero exit is still SUCCESS
    assert stdout == b"from-env 1 100\n"
    assert m.get("file-1-out") == [p.FileReply("file-1-out", 10), p.Data(b"hello\nbbb\n"), p.End()]
    od = m.get("dir-1-od")
    assert od[0] == p.DirReply("dir-1-od")
    assert p.FileReply("dir-1-od/l", 2) in od and p.FileReply("dir-1-od/s/v", 2) in od
    assert p.Missing("dir-1-od/dangling", 2) in od  # symlinks are followed (gotcha 13)
    assert m.get("file-2-absent") == [p.Missing("file-2-absent", 2), p.End()]
    m.send(p.Kill(7), p.Unlink("file-1-out"))
    m.send(p.Check())
    m.until(lambda e: isinstance(e, p.Alive))
    (root,) = ws.glob("worker-*")
    assert not (root / "t.7").exists()
    assert not (root / "cache" / "file-1-out").exists()
    assert (root / "cache" / "file-0-in").exists()


def test_send_results_with_nothing_finished_is_just_end(connected) -> None:
    m, _, _ = connected
    m.send(p.SendResults())  # gotcha 5: the manager may ask at any time
    assert [e for e in m.until(lambda e: isinstance(e, p.End))
            if not isinstance(e, (p.Info, p.Alive))] == [p.End()]


def test_wall_time_kills_within_the_limit(connected) -> None:
    m, _, _ = connected
    start = time.monotonic()
    m.send(p.Task(3, "sleep 30", cores=1, wall_time=1))
    res, _ = m.results(timeout=15)[3]
    assert (res.status, res.exit_code) == (56, 9)
    assert time.monotonic() - start < 10


def test_kill_of_a_running_task_kills_all_its_children(connected, tmp_path: Path) -> None:
    m, _, ws = connected
    pids = tmp_path / "pids"
    m.send(p.Task(4, f"sleep 300 & echo $! > {pids}.tmp; (sleep 300 & echo $! >> {pids}.tmp; "
                     f"wait) & sleep 0.2; mv {pids}.tmp {pids}; wait", cores=1))
    wait_for(pids.exists, 15, "the task's children")
    children = [int(x) for x in pids.read_text().split()]
    assert len(children) == 2 and all(alive(pid) for pid in children)
    m.send(p.Kill(4), p.Check())
    m.until(lambda e: isinstance(e, p.Alive))
    wait_for(lambda: not any(alive(pid) for pid in children), 5, "the killed task's children to end")
    (root,) = ws.glob("worker-*")
    wait_for(lambda: not (root / "t.4").exists(), 5, "the killed task's sandbox to go")


def test_disconnect_wipes_the_workspace_and_reconnects(
        manager: ScriptedManager, start_worker, tmp_path: Path) -> None:
    start_worker("-t", "60", "-i", "0.1", "-b", "0.2", "-s", str(tmp_path), "127.0.0.1",
                 str(manager.port))
    manager.accept()
    manager.greeting()
    put(manager, "file-0-kept", b"data")
    manager.send(p.Task(1, "sleep 300", cores=1))
    manager.send(p.Check())
    manager.until(lambda e: isinstance(e, p.Alive))
    (root,) = tmp_path.glob("worker-*")
    wait_for((root / "t.1").exists, 10, "the task's sandbox")
    assert (root / "cache" / "file-0-kept").exists()
    assert manager.sock is not None
    manager.sock.close()
    manager.accept()  # the worker comes back, with an empty workspace
    manager.greeting()
    assert not (root / "cache" / "file-0-kept").exists() and not (root / "t.1").exists()


def test_idle_timeout_says_so_and_exits(manager: ScriptedManager, start_worker,
                                        tmp_path: Path) -> None:
    proc = start_worker("-t", "1", "-s", str(tmp_path), "127.0.0.1", str(manager.port))
    manager.accept()
    events = manager.until(lambda e: isinstance(e, p.ConnectionClosed), timeout=15)
    assert p.Info("idle-disconnecting", "1") in events
    assert proc.wait(timeout=10) == 0
    assert not list(tmp_path.glob("worker-*"))


def test_no_manager_connect_timeout_exits(start_worker, tmp_path: Path, free_port: int) -> None:
    proc = start_worker("--connect-timeout", "1", "-i", "0.1", "-b", "0.2", "-s", str(tmp_path),
                        "127.0.0.1", str(free_port))
    assert proc.wait(timeout=15) != 0


def test_unsafe_names_are_refused_and_nothing_outside_is_touched(
        connected, tmp_path: Path) -> None:
    m, _, ws = connected
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("keep me\n")
    before = sorted(p_.name for p_ in tmp_path.iterdir())
    put(m, "file-0-x", b"x")
    m.send(p.Dir("dir-0-evil"), p.Symlink("link", os.fsencode(outside)), p.End())
    bad_tasks = [
        p.Task(11, "true", inputs=(p.TaskFile("file-0-x", "../escape", 0),)),
        p.Task(12, "true", inputs=(p.TaskFile("file-0-x", str(outside / "abs"), 0),)),
        p.Task(13, "true", outputs=(p.TaskFile("file-1-o", "../../stolen", 0),)),
        p.Task(14, "true", inputs=(p.TaskFile("dir-0-evil", "d", 0),
                                   p.TaskFile("file-0-x", "d/link/planted", 0))),
    ]
    m.send(*bad_tasks)
    m.send(p.Task(15, "true", inputs=(p.TaskFile("dir-0-evil", "d", 0),),
                  outputs=(p.TaskFile("file-1-victim", "d/link/victim", 0),)))
    results = {}
    while len(results) < 5:
        results.update(m.results())
    assert all(results[t][0].status == 1 for t in (11, 12, 13, 14))  # INPUT_MISSING
    assert results[15][0].status == 0
    assert m.get("file-1-victim") == [p.Missing("file-1-victim", 2), p.End()]
    assert (outside / "victim").read_text() == "keep me\n"
    assert sorted(p_.name for p_ in outside.iterdir()) == ["victim"]
    assert sorted(p_.name for p_ in tmp_path.iterdir()) == before
    # a cache name with a path in it is a protocol error: the worker hangs up
    m.sock.sendall(b"put ..%2Fplanted 1 0644\nz")
    m.until(lambda e: isinstance(e, p.ConnectionClosed))
    assert not list(tmp_path.rglob("planted"))


def test_forsaken_signal_check_and_kill_all(connected) -> None:
    m, _, _ = connected
    m.send(p.Task(21, "true", cores=99))
    res, out = m.results()[21]
    assert (res.status, out) == (40, b"")
    assert p.ResourceTag(21) in m.history  # resources re-sent after forsaking
    m.send(p.Task(22, "kill -9 $$", cores=1))
    res, _ = m.results()[22]
    assert (res.status, res.exit_code) == (8, 9)  # SIGNAL, with the signal number
    m.send(p.Task(23, "sleep 300", cores=1), p.Task(24, "sleep 300", cores=1),
           p.Task(25, "sleep 300", cores=1))  # the third waits: 2 cores
    m.send(p.Check())
    m.until(lambda e: e == p.Info("tasks_running", "2"))
    m.send(p.Kill(-1), p.Check())
    m.until(lambda e: e == p.Info("tasks_running", "0"), timeout=10)


def test_sigterm_vacates(connected) -> None:
    m, proc, _ = connected
    proc.send_signal(signal.SIGTERM)
    events = m.until(lambda e: isinstance(e, p.ConnectionClosed))
    assert p.Info("vacating", str(int(signal.SIGTERM))) in events
    assert proc.wait(timeout=10) != 0


def test_release_and_exit(manager: ScriptedManager, start_worker, tmp_path: Path) -> None:
    proc = start_worker("-t", "60", "-i", "0.1", "-b", "0.2", "-s", str(tmp_path), "127.0.0.1",
                        str(manager.port))
    manager.accept()
    manager.greeting()
    manager.send(p.Release())
    manager.until(lambda e: isinstance(e, p.ConnectionClosed))
    manager.accept()  # released, not single-shot: it comes back
    manager.greeting()
    manager.send(p.Exit())
    assert proc.wait(timeout=10) == 0


def test_password_mismatch_fails_on_both_sides(manager: ScriptedManager, start_worker,
                                               tmp_path: Path) -> None:
    (tmp_path / "pw").write_bytes(b"worker-secret\n")
    proc = start_worker("--single-shot", "-t", "30", "-P", str(tmp_path / "pw"), "-s",
                        str(tmp_path), "127.0.0.1", str(manager.port))
    manager.accept()
    hs = p.PasswordHandshake(b"manager-secret\n", p.MANAGER)
    manager.send(*hs.start())
    while hs.succeeded is None:
        ev = manager.next()
        manager.send(*hs.receive(ev))
    assert hs.succeeded is False
    assert proc.wait(timeout=10) != 0
    assert b"password" in proc.stderr.read()


@pytest.mark.parametrize("option,command,info", [
    ("--disk", "head -c 30000000 /dev/zero > big; sleep 30", "disk_exhausted"),
    ("--memory", "python3 -c 'x = bytearray(150000000); import time; time.sleep(30)'",
     "memory_exhausted"),
])
def test_exceeding_a_worker_promise_makes_it_leave(
        manager: ScriptedManager, start_worker, tmp_path: Path, option: str, command: str,
        info: str) -> None:
    proc = start_worker("-t", "60", option, "10", "-s", str(tmp_path), "127.0.0.1",
                        str(manager.port))
    manager.accept()
    manager.greeting()
    manager.send(p.Task(1, command, cores=1, disk=1, memory=1))
    events = manager.until(lambda e: isinstance(e, p.ConnectionClosed), timeout=30)
    assert any(isinstance(e, p.Info) and e.name == info and int(e.value) > 10 for e in events)
    assert proc.wait(timeout=10) != 0
    assert not list(tmp_path.glob("worker-*"))


def test_watched_output_streams_while_the_task_runs(connected) -> None:
    m, _, _ = connected
    m.send(p.Task(31, "for i in 1 2 3; do echo line$i >> log.txt; sleep 0.7; done", cores=1,
                  outputs=(p.TaskFile("file-9-log", "log.txt", 16),)))
    got = b""
    deadline = time.monotonic() + 20
    finished = False
    while not finished and time.monotonic() < deadline:
        m.until(lambda e: isinstance(e, p.AvailableResults))
        m.send(p.SendResults())
        events = m.until(lambda e: isinstance(e, p.End))
        for i, ev in enumerate(events):
            if isinstance(ev, p.Update):
                assert (ev.task_id, ev.path, ev.offset) == (31, "log.txt", len(got))
                got += events[i + 1].data
            finished |= isinstance(ev, p.Result)
    assert finished
    assert got and b"line1\nline2\nline3\n".startswith(got)
    assert m.get("file-9-log")[1] == p.Data(b"line1\nline2\nline3\n")


@pytest.mark.parametrize("args,message", [
    ([], "give the manager as HOST PORT"),
    (["127.0.0.1:notaport"], "bad manager address"),
    (["-P", "/nonexistent/pw", "127.0.0.1", "9123"], "cannot read password file"),
    (["--cores", "-2", "127.0.0.1", "9123"], "--cores: -2 is not in the range"),
    (["-M", "proj", "127.0.0.1", "9123"], "not both"),
])
def test_user_mistakes_are_one_line_errors(args: list, message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "treadle", "worker", *args],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_manager_list_is_tried_in_turn(manager: ScriptedManager, start_worker, tmp_path: Path,
                                       free_port: int) -> None:
    start_worker("--single-shot", "-t", "30", "-s", str(tmp_path),
                 f"127.0.0.1:{free_port};127.0.0.1:{manager.port}")
    manager.accept()
    assert isinstance(manager.greeting()[0], p.Greeting)


def test_big_put_is_stored_exactly_and_framing_survives(connected) -> None:
    m, _, _ = connected
    data = os.urandom(9 << 20) + b"tail"  # above the size read in a thread
    m.send(p.Put("file-0-big", len(data), 0o640), p.Data(data), p.Check(),
           p.Put("file-0-small", 3), p.Data(b"abc"))
    m.until(lambda e: isinstance(e, p.Alive))
    reply = m.get("file-0-big")
    assert reply[0] == p.FileReply("file-0-big", len(data)) and reply[1] == p.Data(data)
    assert m.get("file-0-small")[1] == p.Data(b"abc")


def test_thirdget_thirdput_and_url_inputs(connected, tmp_path: Path) -> None:
    m, _, _ = connected
    (tmp_path / "shared.txt").write_text("on the shared fs\n")
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "page.txt").write_text("from http\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(tmp_path / "web"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        m.send(p.ThirdGet(1, "cmd-1-gen", "echo generated > %%"),
               p.ThirdGet(2, "copy-1-shared", str(tmp_path / "shared.txt")),
               p.Url("url-1-page", f"http://127.0.0.1:{httpd.server_address[1]}/page.txt"),
               p.Task(41, "cat gen shared page > all.txt", cores=1,
                      inputs=(p.TaskFile("cmd-1-gen", "gen"), p.TaskFile("copy-1-shared", "shared"),
                              p.TaskFile("url-1-page", "page")),
                      outputs=(p.TaskFile("file-1-all", "all.txt"),)))
        res, _ = m.results()[41]
        assert res.status == 0
        m.send(p.ThirdPut(2, "file-1-all", str(tmp_path / "exported.txt")))
        assert m.until(lambda e: isinstance(e, p.ThirdPutComplete))[-1].ok
        assert (tmp_path / "exported.txt").read_text() == (
            "generated\non the shared fs\nfrom http\n")
    finally:
        httpd.shutdown()


def test_parent_death_ends_the_worker(tmp_path: Path, free_port: int) -> None:
    pidfile = tmp_path / "pid"
    worker = (f"{sys.executable} -m treadle worker --parent-death --connect-timeout 60 "
              f"-s {tmp_path} 127.0.0.1 {free_port}")
    subprocess.run(["/bin/sh", "-c", f"{worker} & echo $! > {pidfile}; sleep 1"],
                   timeout=30, stderr=subprocess.DEVNULL)
    pid = int(pidfile.read_text())
    wait_for(lambda: not alive(pid), 15, "the orphaned worker to end")


@pytest.mark.parametrize("garbage", [
    b"\x00\xffnot a message\n",
    b"put x 5 0644\nab",  # then the connection closes mid-payload
    b"task 1\ncmd 99999999999\n",
    b"dir d\nsymlink l 3\nabcend\nend\nend\n",
])
def test_garbage_drops_the_connection_not_the_worker(
        manager: ScriptedManager, start_worker, tmp_path: Path, garbage: bytes) -> None:
    log = tmp_path / "worker.log"
    proc = start_worker("-t", "60", "-i", "0.1", "-b", "0.2", "-d", "all", "-o", str(log),
                        "-s", str(tmp_path), "127.0.0.1", str(manager.port))
    manager.accept()
    manager.greeting()
    assert manager.sock is not None
    manager.sock.sendall(garbage)
    if garbage.endswith(b"ab"):
        manager.sock.close()
    else:
        manager.until(lambda e: isinstance(e, p.ConnectionClosed))
    manager.accept()  # the worker is still there and comes back
    manager.greeting()
    manager.send(p.Task(1, "echo fine", cores=1))
    assert manager.results()[1][1] == b"fine\n"
    assert proc.poll() is None
    assert "disconnected" in log.read_text()


def test_worker_wall_time_ends_it(manager: ScriptedManager, start_worker,
                                  tmp_path: Path) -> None:
    proc = start_worker("-t", "60", "--wall-time", "2", "-s", str(tmp_path), "127.0.0.1",
                        str(manager.port))
    manager.accept()
    manager.greeting()
    manager.send(p.Task(1, "sleep 60", cores=1))
    events = manager.until(lambda e: isinstance(e, p.ConnectionClosed), timeout=20)
    assert p.Info("wall_time_exhausted", "2") in events
    assert proc.wait(timeout=10) == 0
    assert not list(tmp_path.glob("worker-*"))


def test_tls_to_a_treadle_manager(tmp_path: Path, start_worker, tls_server) -> None:
    from treadle.queue import Manager, Task

    server, cert = tls_server
    with Manager(0, host="127.0.0.1", ssl=server) as m:
        plain = start_worker("--single-shot", "-t", "10", "-s", str(tmp_path), "127.0.0.1",
                             str(m.port))
        plain.wait(timeout=30)  # a plain-text worker gets nowhere with a TLS manager
        assert m.stats.workers_joined == 0
        worker = start_worker("--single-shot", "-t", "30", "--tls-ca", str(cert), "-s",
                              str(tmp_path), "127.0.0.1", str(m.port))
        big = os.urandom(6 << 20)  # above the size the worker reads past asyncio
        t = Task("sha256sum in > sum; echo over-tls", cores=1)
        t.add_input_buffer(big, "in")
        t.add_output(str(tmp_path / "sum"), "sum")
        m.submit(t)
        done = m.wait(timeout=60)
        assert done is not None and done.output == b"over-tls\n"
        assert (tmp_path / "sum").read_text().split()[0] == hashlib.sha256(big).hexdigest()
    assert worker.wait(timeout=30) == 0



SHOW = """#!/bin/sh
printf '[%s]' "$0" "$@"
tmp=${TMPDIR##*/}
echo " cwd=${PWD##*/} tmp=${tmp%.*} cores=$CORES"
echo to-stderr >&2
exit 3
"""


def test_direct_start_gives_what_sh_c_gives(tmp_path: Path, start_worker) -> None:
    """Shell-free commands skip /bin/sh on the worker; nothing observable changes.

    Each command runs twice through a real manager and worker: as written (the
    worker starts the program itself) and with its first word quoted, which is the
    same command to the shell but makes the worker go through ``/bin/sh -c``.
    """
    from tests.queue._manager_fixtures import drain, wait_workers

    from treadle.queue import Manager, Task
    from treadle.queue.spawn import shell_free_argv

    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, text in (("show", SHOW), ("noshebang", "echo no-shebang $# >&2; exit 5\n"),
                       ("crash", "#!/bin/sh\necho before\nkill -SEGV $$\n"),
                       ("terminated", "#!/bin/sh\nkill -TERM $$\n")):
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    commands = [f"{bindir}/show a b=c,d:e", "show x", "noshebang 1 2", f"{bindir}/noshebang",
                "crash", "terminated", "no-such-program-treadle x"]
    env = {"PATH": f"{bindir}:{os.environ['PATH']}"}
    submitted = {}
    with Manager(0, host="127.0.0.1") as m:
        ws = tmp_path / "ws"
        ws.mkdir()
        start_worker("--single-shot", "-t", "30", "--cores", "1", "--memory", "500",
                     "--disk", "500", "-s", str(ws), "127.0.0.1", str(m.port))
        wait_workers(m, 1)
        for command in commands:
            first, _, rest = command.partition(" ")
            quoted = f"'{first}' {rest}"
            assert shell_free_argv(command) is not None and shell_free_argv(quoted) is None
            for via, line in (("direct", command), ("shell", quoted)):
                task = Task(line, cores=1, env=env)
                m.submit(task)
                submitted[task.id] = (command, via)
        done = drain(m)
    seen: dict = {}
    for t in done.values():
        out = re.sub(r"t\.\d+", "t.N", t.output.decode())
        seen[submitted[t.id]] = (int(t.result), t.exit_code, t.signal, out)
    for command in commands:
        assert seen[command, "direct"] == seen[command, "shell"], command
    for command in commands[:2]:
        result, code, sig, out = seen[command, "direct"]
        assert (result, code, sig) == (0, 3, None)
        assert "cwd=t.N tmp=cctools-temp-t.N " in out and "cores=1" in out and "to-stderr" in out
    assert seen["show x", "direct"][3].startswith(f"[{bindir}/show][x]")
    assert seen["noshebang 1 2", "direct"][:2] == (0, 5)
    assert "no-shebang 2" in seen["noshebang 1 2", "direct"][3]
    assert seen["no-such-program-treadle x", "direct"][:2] == (0, 127)
    assert "not found" in seen["no-such-program-treadle x", "direct"][3]
    assert seen["crash", "direct"][3].startswith("before")


def test_every_task_finds_a_new_empty_sandbox_and_stdout(connected) -> None:
    """Sandboxes and stdout files are reused; a task never sees what an earlier one left."""
    m, _, ws = connected
    listing = 'ls -A; stat -c %a .; stat -c %a cctools-temp-*; echo "[$(ls -A $TMPDIR)]"; echo $TMPDIR'
    steps = [
        (1, "touch left-behind; echo long-output-long-output-long-output"),
        (2, listing),
        (3, "chmod 700 .; touch $TMPDIR/x; echo x"),
        (4, listing),
        (5, "true"),
        (6, listing),
    ]
    seen = {}
    for task_id, command in steps:
        m.send(p.Task(task_id, command, cores=1))
        res, out = m.results()[task_id]
        assert (res.status, res.exit_code) == (0, 0), out
        seen[task_id] = out.decode()
        m.send(p.Kill(task_id))
    assert seen[1] == "long-output-long-output-long-output\n"
    (root,) = ws.glob("worker-*")
    umask = os.umask(0)
    os.umask(umask)
    fresh = (f"{0o755 & ~umask:o}", f"{0o700 & ~umask:o}", "[]")
    for task_id in (2, 4, 6):
        names, box_mode, tmp_mode, tmp_listing, tmpdir = seen[task_id].split("\n", 4)
        assert names.startswith(f"cctools-temp-t.{task_id}.") and " " not in names
        assert (box_mode, tmp_mode, tmp_listing) == fresh, seen[task_id]
        assert tmpdir == f"{root}/t.{task_id}/{names}\n"
    m.send(p.Check())
    m.until(lambda e: isinstance(e, p.Alive))
    assert not list(root.glob("t.*"))


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs a second filesystem at /dev/shm")
@pytest.mark.parametrize("allow_symlinks", [True, False])
def test_an_input_that_cannot_be_hard_linked_is_symlinked_or_copied(tmp_path: Path,
                                                                    allow_symlinks: bool) -> None:
    """--disable-symlinks: where a hard link fails (here: another filesystem), copy."""
    from treadle.queue.sandbox import link_tree

    if os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is on the same filesystem as the test's directory")
    source_dir = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        (source_dir / "in.txt").write_text("data\n")
        (source_dir / "tree").mkdir()
        (source_dir / "tree" / "leaf").write_text("leaf\n")
        for name in ("in.txt", "tree"):
            link_tree(str(source_dir / name), str(tmp_path / name), allow_symlinks)
        assert (tmp_path / "in.txt").read_text() == "data\n"
        assert (tmp_path / "tree" / "leaf").read_text() == "leaf\n"
        for path in (tmp_path / "in.txt", tmp_path / "tree" / "leaf"):
            assert path.is_symlink() is allow_symlinks
    finally:
        shutil.rmtree(source_dir)
