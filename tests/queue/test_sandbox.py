"""The worker's file operations stay inside the place they work in (issue 9, defects 6 and 7).

Each test plants what a task or a directory input can plant (symlinks, absolute or
relative, hard links, FIFOs) and checks that nothing outside changes. The last test
lets hypothesis plant them at random.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from treadle.queue import sandbox as sb


def snapshot(top: Path) -> dict:
    """Every path under ``top`` with its type and content (or link target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if path.is_symlink():
                out[str(path)] = ("link", os.readlink(path))
            elif path.is_dir():
                out[str(path)] = ("dir", None)
            else:
                out[str(path)] = ("file", path.read_bytes())
    return out


@pytest.fixture
def place(tmp_path: Path) -> tuple:
    """``(workspace, sandbox, outside)``: a workspace with one cache entry ``file-0-x``,
    an empty sandbox, and an outside directory holding ``victim``."""
    ws = sb.Workspace(str(tmp_path / "parent"))
    ws.create()
    (Path(ws.cache) / "file-0-x").write_text("input\n")
    box = Path(ws.sandbox_path(1))
    box.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("keep me\n")
    yield ws, box, outside
    ws.destroy()


def test_a_nested_input_below_an_absolute_symlink_creates_nothing_outside(place) -> None:
    """Defect 6b: the parents were created before the inside-the-sandbox check."""
    ws, box, outside = place
    (box / "d").mkdir()
    (box / "d" / "link").symlink_to(outside)
    before = snapshot(outside)
    with pytest.raises(sb.SandboxError, match="outside"):
        sb.link_input(ws, str(box), "file-0-x", "d/link/sub/deeper/planted", True)
    with pytest.raises(sb.SandboxError, match="outside"):
        sb.make_empty_dir(str(box), "d/link/newdir")
    assert snapshot(outside) == before


def test_symlinks_that_stay_inside_are_followed(place) -> None:
    ws, box, _ = place
    (box / "real").mkdir()
    (box / "rel").symlink_to("real")
    (box / "abs").symlink_to(box / "real")
    sb.link_input(ws, str(box), "file-0-x", "rel/a/in.txt", True)
    sb.link_input(ws, str(box), "file-0-x", "abs/b/in.txt", True)
    sb.make_empty_dir(str(box), "rel/empty")
    assert (box / "real" / "a" / "in.txt").read_text() == "input\n"
    assert (box / "real" / "b" / "in.txt").read_text() == "input\n"
    assert (box / "real" / "empty").is_dir()


@pytest.mark.parametrize("target", ["..", "../..", "/", "/etc"])
def test_resolve_beneath_refuses_every_way_out(tmp_path: Path, target: str) -> None:
    top = tmp_path / "top"
    top.mkdir()
    (top / "l").symlink_to(target)
    with pytest.raises(OSError) as info:
        sb.open_beneath(str(top), "l/x")
    assert info.value.errno == errno.EXDEV


def test_a_sandbox_swapped_for_a_symlink_is_not_worked_in(place) -> None:
    ws, box, outside = place
    box.rmdir()
    box.symlink_to(outside)
    with pytest.raises(sb.SandboxError):
        sb.link_input(ws, str(box), "file-0-x", "planted", True)
    sb.collect_output(ws, str(box), "victim", "file-1-victim")
    assert sorted(x.name for x in outside.iterdir()) == ["victim"]
    assert not os.path.lexists(ws.cache_path("file-1-victim"))


def test_resolve_beneath_stops_at_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(OSError) as info:
        sb.open_beneath(str(tmp_path), "a")
    assert info.value.errno == errno.ELOOP


def test_an_output_whose_parent_leads_outside_is_not_collected(place) -> None:
    ws, box, outside = place
    (box / "out").symlink_to(outside)
    sb.collect_output(ws, str(box), "out/victim", "file-1-victim")
    assert not os.path.lexists(ws.cache_path("file-1-victim"))
    assert (outside / "victim").read_text() == "keep me\n"


@pytest.mark.parametrize("plant", ["hardlink", "symlink", "fifo"])
def test_a_kept_stdout_file_is_reused_only_while_it_is_the_workers_own(place, plant: str) -> None:
    """Defect 6a: a task replaced its stdout by a hard link to a file elsewhere."""
    ws, _, outside = place
    os.close(ws.open_stdout(1))
    path = Path(ws.stdout_path(1))
    assert ws.recycle_stdout(str(path))
    (spare,) = Path(ws.root).glob(".spare.*.stdout")
    spare.unlink()  # what a task can do: it reaches the workspace
    if plant == "hardlink":
        os.link(outside / "victim", spare)
    elif plant == "symlink":
        spare.symlink_to(outside / "victim")
    else:
        os.mkfifo(spare)
    fd = ws.open_stdout(2)
    try:
        os.write(fd, b"later output\n")
    finally:
        os.close(fd)
    assert (outside / "victim").read_text() == "keep me\n"
    assert Path(ws.stdout_path(2)).read_text() == "later output\n"
    os.link(ws.stdout_path(2), outside / "second-name")
    assert not ws.recycle_stdout(ws.stdout_path(2))  # two names: not kept


def test_remove_if_small_deletes_links_not_what_they_point_to(place) -> None:
    ws, box, outside = place
    (box / "sub").mkdir()
    (box / "sub" / "out").symlink_to(outside)
    (box / "sub" / "victim").symlink_to(outside / "victim")
    assert sb.remove_if_small(str(box))
    assert not box.exists()
    assert sorted(x.name for x in outside.iterdir()) == ["victim"]
    big = Path(ws.sandbox_path(2))
    (big / "d").mkdir(parents=True)
    for i in range(20):
        (big / "d" / str(i)).write_text("x")
    assert not sb.remove_if_small(str(big)) and len(list((big / "d").iterdir())) == 20


def test_a_stale_workspace_is_removed_and_a_live_one_kept(tmp_path: Path) -> None:
    """Defect 7: a worker killed with SIGKILL leaves its workspace behind."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = tmp_path / f"worker-{os.getuid()}-{dead.stdout.strip()}"
    (stale / "cache").mkdir(parents=True)
    (stale / "cache" / "file-0-x").write_text("left behind\n")
    live = sb.Workspace(str(tmp_path))
    live.create()
    other_user = tmp_path / f"worker-{os.getuid() + 1}-{dead.stdout.strip()}"
    other_user.mkdir()
    try:
        assert sb.remove_stale_workspaces(str(tmp_path)) == [str(stale)]
        assert not stale.exists() and Path(live.root).is_dir() and other_user.is_dir()
    finally:
        live.destroy()


def test_a_locked_workspace_of_a_dead_pid_is_kept(tmp_path: Path) -> None:
    """A worker on another host sharing the directory: its pid means nothing here,
    its lock does."""
    import fcntl

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    elsewhere = tmp_path / f"worker-{os.getuid()}-{dead.stdout.strip()}"
    elsewhere.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
         str(elsewhere)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        assert sb.remove_stale_workspaces(str(tmp_path)) == []
        assert elsewhere.is_dir()
    finally:
        holder.communicate("")
    fd = os.open(elsewhere, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released with its holder
    os.close(fd)


# --- fuzz: random plants, random names --------------------------------------------------

# A small alphabet, so that the names operated on meet the names planted; the
# plants are mostly symlinks, mostly leading outside.
component = st.sampled_from(["l", "a", "victim"])
rel_name = st.lists(component, min_size=1, max_size=4).map("/".join)
link_target = st.sampled_from(["OUTSIDE", "OUTSIDE/victim", "..", "../..", ".", "a", "a/l", "/",
                               "BOX", "BOX/a", "l", "nowhere"])
plant = st.tuples(st.lists(component, min_size=1, max_size=2).map("/".join),
                  st.sampled_from(["link", "link", "dir", "file"]), link_target)
operation = st.tuples(st.sampled_from(["link", "empty", "collect"]), rel_name)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plants=st.lists(plant, max_size=6), ops=st.lists(operation, min_size=1, max_size=4))
@example(plants=[("l", "link", "OUTSIDE")], ops=[("link", "l/a/x")])  # defect 6b
@example(plants=[("a", "dir", ""), ("a/l", "link", "../..")], ops=[("empty", "a/l/x/y")])
@example(plants=[("l", "link", "OUTSIDE")], ops=[("collect", "l/victim")])
def test_fuzz_planted_symlinks_never_let_a_sandbox_operation_out(
        tmp_path: Path, plants: list, ops: list) -> None:
    """Whatever a directory input or a task planted, sandbox set-up and output
    collection change nothing outside the sandbox (bar the cache, for outputs)."""
    ws = sb.Workspace(str(tmp_path / "parent"))
    ws.create()
    box = Path(ws.sandbox_path(7))
    outside = tmp_path / "outside"
    try:
        box.mkdir()
        outside.mkdir()
        (outside / "victim").write_text("keep me\n")
        (Path(ws.cache) / "file-0-x").write_text("input\n")
        for name, kind, target in plants:
            path = box / name
            target = target.replace("OUTSIDE", str(outside)).replace("BOX", str(box))
            try:
                path.parent.mkdir(parents=True, exist_ok=True)  # may follow: set-up only
                if kind == "dir":
                    path.mkdir()
                elif kind == "file":
                    path.write_text("planted\n")
                else:
                    path.symlink_to(target)
            except OSError:
                continue
        before = snapshot(outside)
        cache_before = set(os.listdir(ws.cache))
        for op, name in ops:
            try:
                if op == "link":
                    sb.link_input(ws, str(box), "file-0-x", name, True)
                elif op == "empty":
                    sb.make_empty_dir(str(box), name)
                else:
                    sb.collect_output(ws, str(box), name, "file-1-out")
            except (sb.SandboxError, OSError):
                pass
        assert snapshot(outside) == before
        assert set(os.listdir(ws.cache)) <= cache_before | {"file-1-out"}
        assert sorted(os.listdir(tmp_path)) == ["outside", "parent"]
    finally:
        ws.destroy()
        sb.remove(str(outside))
