"""The host's object cache on a real disk: verified fills, one download for concurrent runs,
eviction, stale temp files and views, a full disk (docs/vfs.md, "Cache and verification")."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest
from tests._wait import wait_for

from treadle.errors import RepoDataError, VfsError
from treadle.vfs.cache import Cache, CacheFull, default_cache_dir, parse_size

pytestmark = pytest.mark.vfs


def _object(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _writer(data: bytes, calls: list[int]) -> Callable[[BinaryIO], None]:
    def write(out: BinaryIO) -> None:
        calls.append(1)
        out.write(data)
    return write


def test_fill_verifies_then_lookup_trusts_the_recorded_stat(tmp_path: Path) -> None:
    cache = Cache(tmp_path, None)
    data = b"some bytes\n" * 1000
    calls: list[int] = []
    path = cache.fill(_object(data), len(data), _writer(data, calls))
    assert path.read_bytes() == data and path.stat().st_mode & 0o777 == 0o444
    assert path == tmp_path / "objects/sha256" / path.name[:2] / path.name[2:4] / path.name
    assert cache.fill(_object(data), len(data), _writer(data, calls)) == path
    assert calls == [1] and cache.lookup(_object(data)) == path
    assert Cache(tmp_path, None).lookup(_object(data)) == path  # recorded in cache.db
    os.utime(path, ns=(0, 12345))  # a changed stat: no longer trusted, removed
    assert cache.lookup(_object(data)) is None and not path.exists()


def test_wrong_bytes_are_never_renamed(tmp_path: Path) -> None:
    cache = Cache(tmp_path, None)
    data = b"right"
    for wrong in (b"wrong", b"righ", b"right and more"):
        with pytest.raises(RepoDataError, match="hashing to"):
            cache.fill(_object(data), len(data), _writer(wrong, []))
    assert cache.lookup(_object(data)) is None
    assert not cache.object_path(_object(data)).exists()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_eviction_keeps_the_recently_used_and_open_files(tmp_path: Path) -> None:
    cache = Cache(tmp_path, 3000)
    blobs = [bytes([i]) * 1000 for i in range(4)]
    paths = [cache.fill(_object(b), len(b), _writer(b, [])) for b in blobs[:3]]
    with open(paths[1], "rb") as held:
        cache.touch(_object(blobs[0]))
        cache.fill(_object(blobs[3]), 1000, _writer(blobs[3], []))
        assert cache.lookup(_object(blobs[1])) is None  # least recently used
        assert held.read() == blobs[1]  # an open copy survives its unlinking
    assert [cache.lookup(_object(b)) is not None for b in blobs] == [True, False, True, True]
    big = b"x" * 5000
    assert cache.fill(_object(big), len(big), _writer(big, [])).read_bytes() == big
    assert [cache.lookup(_object(b)) is not None for b in blobs] == [False] * 4


def test_stale_temp_files_and_views_of_dead_processes_go(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    cache = Cache(tmp_path, None)
    mine = tmp_path / "tmp" / f"{os.getpid()}.abcd.part"
    theirs = tmp_path / "tmp" / f"{dead.pid}.abcd.part"
    mine.write_bytes(b"1")
    theirs.write_bytes(b"2")
    live_view = cache.view_dir(f"{os.getpid()}-run")
    dead_view = cache.view_dir(f"{dead.pid}-run")
    (dead_view / "sub").mkdir()
    Cache(tmp_path, None)
    assert mine.exists() and live_view.is_dir()
    assert not theirs.exists() and not dead_view.exists()
    with pytest.raises(VfsError):
        cache.view_dir("../x")


_FILLER = textwrap.dedent("""
    import hashlib, sys, time
    from pathlib import Path
    from treadle.vfs.cache import Cache
    root, log, go = map(Path, sys.argv[1:4])
    data = b"shared object\\n" * 10000
    def writer(out):
        with log.open("a") as f:
            f.write("fetch\\n")
        while not go.exists():
            time.sleep(0.01)
        out.write(data)
    path = Cache(root, None).fill("sha256:" + hashlib.sha256(data).hexdigest(), len(data), writer)
    print(path.read_bytes() == data)
""")


def test_two_processes_fetch_one_object_once(tmp_path: Path) -> None:
    log, go = tmp_path / "log", tmp_path / "go"
    argv = [sys.executable, "-c", _FILLER, str(tmp_path / "cache"), str(log), str(go)]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    second = None
    try:
        wait_for(log.exists, what="the first process to start its fetch")
        second = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)

        def second_waits() -> bool:
            lines = Path("/proc/locks").read_text().splitlines()
            return any("->" in line and "FLOCK" in line for line in lines)
        wait_for(second_waits, what="the second process to wait on the object's lock")
        go.touch()
        assert first.communicate(timeout=60)[0].strip() == "True"
        assert second.communicate(timeout=60)[0].strip() == "True"
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert log.read_text() == "fetch\n"


def test_full_disk_is_cache_full(tmp_path: Path) -> None:
    root = tmp_path / "small"
    root.mkdir()
    code = textwrap.dedent(f"""
        import hashlib, subprocess
        from pathlib import Path
        from treadle.vfs.cache import Cache, CacheFull
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "none", {str(root)!r}], check=True)
        cache = Cache(Path({str(root)!r}), None)
        data = b"z" * (1 << 20)
        try:
            cache.fill("sha256:" + hashlib.sha256(data).hexdigest(), len(data), lambda out: out.write(data))
        except CacheFull as e:
            print(e, list((cache.root / "tmp").iterdir()))
    """)
    result = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c",
                             code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"cache full: {root} []"
    assert issubclass(CacheFull, RepoDataError)


def test_sizes_and_default_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert [parse_size(t) for t in ("123", "10G", "500M", "64KiB", "1t")] == \
        [123, 10 << 30, 500 << 20, 64 << 10, 1 << 40]
    for bad in ("", "ten", "1.5G", "-1"):
        with pytest.raises(VfsError):
            parse_size(bad)
    monkeypatch.setenv("TREADLE_CACHE", str(tmp_path / "a"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("TREADLE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x" / "treadle"
    limit = Cache(tmp_path / "c", None).size_limit
    assert 0 < limit <= 10 << 30
