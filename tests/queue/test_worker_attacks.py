"""Attacks on a real ``treadle worker`` (issue 9, defects 5, 6, 7 and 9).

A scripted manager (tests/queue/test_worker.py) sends exactly the lines of each
attack; where the issue says an honest manager can do it, the real Manager's
public API does. Each test asserts what the user sees: the file outside the
workspace unchanged, not created, not read; the task failed with a result; the
worker still serving with all its cores.
"""

from __future__ import annotations

import errno
import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tests._wait import alive, wait_for
from tests.queue.test_worker import ScriptedManager, put

from treadle.queue import protocol as p

INPUT_MISSING = 1


@pytest.fixture
def manager():
    m = ScriptedManager()
    yield m
    m.close()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside every workspace, holding ``victim`` and ``secret``."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "victim").write_text("keep me\n")
    (d / "secret").write_text("not for the manager\n")
    return d


def connect(manager: ScriptedManager, start_worker, ws: Path, *options: str):
    """A 2-core worker on workspace parent ``ws``, connected, its greeting consumed."""
    ws.mkdir(exist_ok=True)
    proc = start_worker("--single-shot", "-t", "60", "--cores", "2", "--memory", "1000",
                        "--disk", "1000", *options, "-s", str(ws), "127.0.0.1",
                        str(manager.port))
    manager.accept()
    manager.greeting()
    return proc


@pytest.fixture
def connected(manager: ScriptedManager, start_worker, tmp_path: Path) -> ScriptedManager:
    connect(manager, start_worker, tmp_path / "ws")
    return manager


def test_a_nul_byte_fails_the_task_and_its_cores_come_back(connected: ScriptedManager) -> None:
    """Defect 5: the task's coroutine raised, never reported, and kept its cores."""
    m = connected
    m.send(p.Task(1, "echo a\0b", cores=2))
    res, out = m.results()[1]
    assert res.status == INPUT_MISSING and b"null" in out
    m.send(p.Task(2, "true", cores=1, env=("X=a\0b",)))
    assert m.results()[2][0].status == INPUT_MISSING
    m.send(p.Task(3, "echo all-cores", cores=2))  # needs both cores: none was lost
    res, out = m.results()[3]
    assert (res.status, out) == (0, b"all-cores\n")


def test_a_stdout_hard_linked_outside_is_not_reused(connected: ScriptedManager,
                                                    outside: Path) -> None:
    """Defect 6a: a kept stdout file replaced by a hard link to an outside file."""
    m = connected
    m.send(p.Task(1, f"ln -f {outside}/victim ../t.1.stdout", cores=1))
    assert m.results()[1][0].status == 0
    m.send(p.Kill(1))  # the stdout file is kept for the next task
    m.send(p.Task(2, "echo overwritten", cores=1))
    assert m.results()[2][1] == b"overwritten\n"
    assert (outside / "victim").read_text() == "keep me\n"


def test_a_nested_input_below_an_absolute_symlink_creates_nothing_outside(
        start_worker, tmp_path: Path, outside: Path) -> None:
    """Defect 6b, through the public API of an honest manager: a directory input
    holding an absolute symlink, and an input nested below it."""
    from tests.queue._manager_fixtures import wait_workers

    from treadle.queue import Manager, Result, Task

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "link").symlink_to(outside)
    (tmp_path / "in.txt").write_text("in\n")
    with Manager(0, host="127.0.0.1") as m:
        ws = tmp_path / "ws"
        ws.mkdir()
        start_worker("--single-shot", "-t", "30", "--cores", "1", "-s", str(ws), "127.0.0.1",
                     str(m.port))
        wait_workers(m, 1)
        t = Task("true", cores=1)
        t.add_input_dir(str(tree), "d")
        t.add_input(str(tmp_path / "in.txt"), "d/link/sub/deeper/in.txt")
        m.submit(t)
        done = m.wait(30)
    assert done is not None and done.result is Result.INPUT_MISSING
    assert sorted(x.name for x in outside.iterdir()) == ["secret", "victim"]


def test_get_of_an_output_symlinked_outside_is_missing(connected: ScriptedManager,
                                                       outside: Path) -> None:
    """Defect 6c: `get` followed a planted symlink and streamed the outside file."""
    m = connected
    m.send(p.Task(1, f"ln -s {outside}/secret out.txt; mkdir od; ln -s {outside} od/all; "
                     "echo fine > od/ok", cores=1,
                  outputs=(p.TaskFile("file-1-out", "out.txt", 0),
                           p.TaskFile("dir-1-od", "od", 0))))
    assert m.results()[1][0].status == 0
    assert m.get("file-1-out") == [p.Missing("file-1-out", errno.EXDEV), p.End()]
    od = m.get("dir-1-od")
    assert p.FileReply("dir-1-od/ok", 5) in od and p.Missing("dir-1-od/all", errno.EXDEV) in od
    assert not any(isinstance(e, p.Data) and b"not for the manager" in e.data for e in od)


def test_a_stdout_replaced_by_a_symlink_is_not_read(connected: ScriptedManager,
                                                    outside: Path) -> None:
    """Defect 6c: the worker read the task's stdout through a planted symlink."""
    m = connected
    m.send(p.Task(1, f"echo mine; rm ../t.1.stdout; ln -s {outside}/secret ../t.1.stdout",
                  cores=1))
    res, out = m.results()[1]
    assert res.status == 0 and b"not for the manager" not in out


def test_a_signal_death_report_is_not_appended_outside(connected: ScriptedManager,
                                                       outside: Path) -> None:
    """Defect 6c: the shell's report of a signal death was appended through a symlink
    the task had put in place of its stdout (O_APPEND without O_NOFOLLOW)."""
    m = connected
    script = (f"#!/bin/sh\nrm ../t.1.stdout\nln -s {outside}/victim ../t.1.stdout\n"
              "kill -SEGV $$\n").encode()
    put(m, "file-0-evil", script, 0o755)
    m.send(p.Task(1, "./evil", cores=1, inputs=(p.TaskFile("file-0-evil", "evil", 0),)))
    res, _ = m.results()[1]
    assert (res.status, res.exit_code) == (0, 128 + signal.SIGSEGV)  # as /bin/sh -c reports it
    assert (outside / "victim").read_text() == "keep me\n"


def test_a_directory_being_received_cannot_be_redirected_outside(
        connected: ScriptedManager, tmp_path: Path, outside: Path) -> None:
    """Defect 6: the items of a `dir` stream were created by path, so a directory
    of it swapped for a symlink meanwhile (what a running task can do: the cache is
    in the workspace) sent them outside. The test plays that task."""
    m = connected
    m.send(p.Dir("dir-0-tree"), p.Dir("sub"))
    (root,) = (tmp_path / "ws").glob("worker-*")
    sub = root / "cache" / "dir-0-tree" / "sub"
    wait_for(sub.is_dir, what="the directory being received")
    sub.rename(root / "moved")
    sub.symlink_to(outside)
    m.send(p.Put("planted", 3, 0o644), p.Data(b"bad"), p.Symlink("link", b"/etc/hostname\0"),
           p.End(), p.End(), p.Check())
    m.until(lambda e: isinstance(e, p.Alive))
    assert sorted(x.name for x in outside.iterdir()) == ["secret", "victim"]
    assert (root / "moved" / "planted").read_bytes() == b"bad"  # where it was meant to go


def _pids_written(path: Path, n: int) -> list:
    wait_for(lambda: path.exists() and len(path.read_text().split()) >= n, what=str(path))
    return [int(x) for x in path.read_text().split()]


def test_sigkill_of_the_worker_kills_its_tasks_and_the_next_worker_cleans_up(
        manager: ScriptedManager, start_worker, tmp_path: Path) -> None:
    """Defect 7: tasks outlived a SIGKILLed worker, and so did its workspace."""
    ws = tmp_path / "ws"
    proc = connect(manager, start_worker, ws)
    pids = tmp_path / "pids"
    manager.send(p.Task(1, f"sleep 300 & echo $! >> {pids}; sleep 300", cores=1),
                 p.Task(2, f"echo $$ >> {pids}; exec sleep 300", cores=1))
    tasks = _pids_written(pids, 2)
    (stale,) = ws.glob("worker-*")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    wait_for(lambda: not any(alive(pid) for pid in tasks), timeout=10, what="tasks to die")
    assert stale.exists()  # nobody removed it: the worker had no chance
    manager.sock.close()
    connect(manager, start_worker, ws)
    wait_for(lambda: not stale.exists(), timeout=10, what="the stale workspace to go")
    assert len(list(ws.glob("worker-*"))) == 1


def test_disable_third_party_refuses_what_reaches_outside(
        manager: ScriptedManager, start_worker, tmp_path: Path, outside: Path) -> None:
    """Defect 9: with --disable-third-party, thirdget, thirdput and file:// URLs fail
    the task (or the thirdput) and touch nothing outside."""
    m = manager
    connect(m, start_worker, tmp_path / "ws", "--disable-third-party")
    put(m, "file-0-data", b"from the manager\n")
    m.send(p.ThirdGet(2, "copy-1-secret", str(outside / "secret")),
           p.ThirdGet(1, "cmd-1-made", f"touch {outside}/made; cp {outside}/secret %%"),
           p.ThirdGet(3, "link-1-secret", str(outside / "secret")),
           p.Url("url-1-secret", f"file://{outside}/secret"))
    for task_id, name in enumerate(("copy-1-secret", "cmd-1-made", "link-1-secret",
                                    "url-1-secret"), start=1):
        m.send(p.Task(task_id, "cat in", cores=1, inputs=(p.TaskFile(name, "in", 1),)))
    results: dict = {}
    while len(results) < 4:
        results.update(m.results())
    for res, out in results.values():
        assert res.status == INPUT_MISSING and b"not for the manager" not in out
    for mode in (1, 2):
        m.send(p.ThirdPut(mode, "file-0-data", f"cat > {outside}/exported" if mode == 1
                          else str(outside / "exported")))
        assert not m.until(lambda e: isinstance(e, p.ThirdPutComplete))[-1].ok
    assert sorted(x.name for x in outside.iterdir()) == ["secret", "victim"]


# --- fuzz: random plants in inputs and outputs against one live worker ------------------

NAMES = st.lists(st.sampled_from(["l", "a", "victim"]), min_size=1, max_size=3).map("/".join)
TARGETS = st.sampled_from(["OUTSIDE", "OUTSIDE/victim", "..", "../..", "../../..", ".", "a",
                           "/", "l", "WS"])


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One worker for every fuzz example, and the outside directory it must not touch."""
    top = tmp_path_factory.mktemp("fuzz")
    outside = top / "outside"
    outside.mkdir()
    (outside / "victim").write_text("keep me\n")
    (top / "ws").mkdir()
    m = ScriptedManager()
    proc = subprocess.Popen([sys.executable, "-m", "treadle", "worker", "--single-shot", "-t",
                             "120", "--cores", "1", "-s", str(top / "ws"), "127.0.0.1",
                             str(m.port)], start_new_session=True, stderr=subprocess.DEVNULL)
    m.accept()
    m.greeting()
    yield m, outside, top / "ws", itertools.count(1)
    proc.kill()
    proc.wait(timeout=10)
    m.close()


@settings(max_examples=25, deadline=None)
@given(links=st.lists(st.tuples(st.sampled_from(["l", "a", "victim"]), TARGETS), max_size=3),
       inputs=st.lists(NAMES, max_size=3),
       plants=st.lists(st.tuples(st.sampled_from(["l", "a", "victim"]), TARGETS), max_size=3),
       outputs=st.lists(NAMES, min_size=1, max_size=3))
@example(links=[("l", "OUTSIDE")], inputs=["l/a/x"], plants=[], outputs=["out"])  # 6b
@example(links=[], inputs=[], plants=[("l", "OUTSIDE/victim")], outputs=["l"])  # 6c
@example(links=[], inputs=[], plants=[("l", "OUTSIDE")], outputs=["l/victim", "l"])
def test_fuzz_planted_symlinks_reach_nothing_outside(live, links: list, inputs: list,
                                                      plants: list, outputs: list) -> None:
    """A directory input with random symlinks, inputs nested in it, a task planting
    random symlinks among its outputs: the task ends with a result, nothing outside
    changes, and no outside byte comes back."""
    m, outside, ws, ids = live
    (root,) = ws.glob("worker-*")

    def target(t: str) -> bytes:
        return t.replace("OUTSIDE", str(outside)).replace("WS", str(root)).encode() + b"\0"

    task_id = next(ids)
    m.send(p.Dir(f"dir-{task_id}-d"), *[p.Symlink(n, target(t)) for n, t in dict(links).items()],
           p.End())
    put(m, f"file-{task_id}-x", b"input\n")
    # the task plants only in its own top directory: its program must not write outside itself
    command = "; ".join(f"ln -sfn {target(t)[:-1].decode()} {n}" for n, t in plants) or "true"
    m.send(p.Task(task_id, command, cores=1,
                  inputs=(p.TaskFile(f"dir-{task_id}-d", "d", 0),)
                  + tuple(p.TaskFile(f"file-{task_id}-x", f"d/{n}", 0) for n in inputs),
                  outputs=tuple(p.TaskFile(f"file-{task_id}-o{i}", n, 0)
                                for i, n in enumerate(outputs))))
    res, _ = m.results()[task_id]
    assert res.status in (0, INPUT_MISSING)
    for i in range(len(outputs)):
        for ev in m.get(f"file-{task_id}-o{i}"):
            assert not (isinstance(ev, p.Data) and b"keep me" in ev.data)
    m.send(p.Kill(task_id))
    assert sorted(x.name for x in outside.iterdir()) == ["victim"]
    assert (outside / "victim").read_text() == "keep me\n"
