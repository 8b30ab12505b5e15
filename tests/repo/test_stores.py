"""Dir stores: verified writes, read-only objects, and unreachable never taken for empty."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from treadle.errors import RepoDataError, RepoError, StoreUnreachable
from treadle.repo.context import open_context
from treadle.repo.disk import sync_filesystem
from treadle.repo.stores import (
    DirStore,
    Staged,
    add_store,
    fsync_dirs,
    fsync_files,
    set_store,
    stage,
)


def _checksum(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> DirStore:
    s = DirStore("a", tmp_path / "store", "repo-uuid")
    s.init_layout()
    return s


def test_write_stream_places_a_read_only_object(store: DirStore) -> None:
    data = os.urandom(3 << 20)
    written = store.write_stream(io.BytesIO(data))
    assert written.checksum == _checksum(data) and written.size == len(data) and written.created
    path = store.object_path(written.checksum)
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert written.stat is not None and written.stat.inode == path.stat().st_ino
    assert path.parent in store.dirs_touched
    fsync_dirs(store.dirs_touched)
    assert list(store.iter_objects()) == [(written.checksum, path)]
    assert list(store.iter_temp()) == []
    again = store.write_stream(io.BytesIO(data))
    assert not again.created and list(store.iter_temp()) == []


def test_a_mismatch_is_refused_and_leaves_nothing(store: DirStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"the real bytes")
    with pytest.raises(RepoDataError, match="store a"):
        store.put_file(src, _checksum(b"other bytes"), 14)
    assert list(store.iter_objects()) == [] and list(store.iter_temp()) == []
    written = store.put_file(src, _checksum(b"the real bytes"), 14)
    assert store.size_of(written.checksum) == 14
    with store.open_read(written.checksum) as f:
        assert f.read() == b"the real bytes"


def test_a_wrong_sized_object_is_quarantined_and_replaced(store: DirStore, tmp_path: Path) -> None:
    data = b"right bytes"
    path = store.object_path(_checksum(data))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"trunc")
    src = tmp_path / "src"
    src.write_bytes(data)
    written = store.put_file(src, _checksum(data), len(data))
    assert written.created and path.read_bytes() == data
    assert [p.read_bytes() for p in store.quarantine_dir.iterdir()] == [b"trunc"]
    assert not store.put_file(src, _checksum(data), len(data)).created  # present: nothing copied


def test_threads_writing_at_once(store: DirStore) -> None:
    blobs = [b"shared"] * 8 + [os.urandom(100_000) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda b: store.write_stream(io.BytesIO(b)), blobs))
    assert [r.checksum for r in results] == [_checksum(b) for b in blobs]
    assert sorted(c for c, _ in store.iter_objects()) == sorted({_checksum(b) for b in blobs})
    assert all(store.object_path(_checksum(b)).read_bytes() == b for b in blobs)
    assert list(store.iter_temp()) == []


def test_absent_object_in_a_reachable_store(store: DirStore) -> None:
    missing = _checksum(b"never written")
    assert store.size_of(missing) is None
    with pytest.raises(FileNotFoundError):
        store.open_read(missing)


def test_a_missing_store_directory_is_unreachable_not_empty(store: DirStore) -> None:
    written = store.write_stream(io.BytesIO(b"x"))
    store.root.rename(store.root.with_name("moved"))
    for call in (store.check, lambda: store.size_of(written.checksum),
                 lambda: store.open_read(written.checksum)):
        with pytest.raises(StoreUnreachable, match="store a is unreachable"):
            call()


def test_another_repositorys_store_is_unreachable(store: DirStore) -> None:
    written = store.write_stream(io.BytesIO(b"x"))
    stranger = DirStore("a", store.root, "another-uuid")
    for call in (stranger.check, lambda: stranger.size_of(written.checksum),
                 lambda: stranger.open_read(written.checksum)):
        with pytest.raises(StoreUnreachable, match="another repository"):
            call()
    with pytest.raises(RepoError, match="another repository"):
        stranger.init_layout()


def test_quarantine_keeps_the_bad_object(store: DirStore) -> None:
    written = store.write_stream(io.BytesIO(b"y"))
    moved = store.quarantine(written.checksum)
    assert moved.parent == store.quarantine_dir and moved.read_bytes() == b"y"
    assert store.size_of(written.checksum) is None


def test_store_rows_add_and_set(repo_dir: Path) -> None:
    with open_context(repo_dir, write=True) as ctx:
        assert [(s.storeid, s.name, s.url) for s in ctx.stores()] == [
            (1, "a", "dir:stores/a"), (2, "b", "dir:stores/b")]
        with ctx.engine.begin() as conn:
            row = add_store(conn, ctx.dir, ctx.config.uuid, "c", "dir:elsewhere/c", host="n1", priority=5)
            assert (row.name, row.host, row.priority, row.state) == ("c", "n1", 5, "up")
            assert (repo_dir / "elsewhere/c/store.toml").is_file()
            with pytest.raises(RepoError, match="already a store named c"):
                add_store(conn, ctx.dir, ctx.config.uuid, "c", "dir:x")
            with pytest.raises(RepoError, match="bad store URL"):
                add_store(conn, ctx.dir, ctx.config.uuid, "d", "ftp://x")
            with pytest.raises(RepoError, match="bad store name"):
                add_store(conn, ctx.dir, ctx.config.uuid, "../d", "dir:d")
            far = add_store(conn, ctx.dir, ctx.config.uuid, "far", "https://store.example.org:8765")
            assert (far.storeid, far.state) == (4, "up")
            assert set_store(conn, "c", state="draining").state == "draining"
            with pytest.raises(RepoError, match="bad store state"):
                set_store(conn, "c", state="sideways")
            with pytest.raises(RepoError, match=r"no store named z \(stores: a, b, c, far\)"):
                set_store(conn, "z", priority=1)
        opened = ctx.open_store(ctx.stores()[2])
        assert isinstance(opened, DirStore) and opened.root == repo_dir / "elsewhere/c"
        opened.check()
        far = ctx.open_store(ctx.stores()[3])
        assert (type(far).__name__, far.name) == ("HttpStore", "far")


def test_stage_writes_every_store_from_one_read_and_names_nothing_until_placed(tmp_path: Path) -> None:
    stores = [DirStore(name, tmp_path / name, "repo-uuid") for name in ("a", "b")]
    for s in stores:
        s.init_layout()
    data = os.urandom((2 << 20) + 7)  # more than one chunk
    source = io.BytesIO(data)
    checksum, size, outcomes = stage(source, stores)
    assert (checksum, size) == (_checksum(data), len(data))
    assert source.tell() == len(data)  # read once, not once per store
    staged = [o for o in outcomes if isinstance(o, Staged)]
    assert len(staged) == 2
    for s, one in zip(stores, staged, strict=True):
        assert list(s.iter_objects()) == []  # no name before the caller made the bytes durable
        assert list(s.iter_temp()) == [one.temp] and one.temp.read_bytes() == data
        assert sync_filesystem(s.root) or fsync_files([one.temp]) is None
        written = s.place(one)
        path = s.object_path(checksum)
        assert written.created and path.read_bytes() == data and list(s.iter_temp()) == []
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
        assert written.stat is not None and written.stat.inode == path.stat().st_ino
        assert s.size_of(checksum) == len(data)


def test_a_store_that_fails_while_staging_leaves_the_others_their_copy(tmp_path: Path) -> None:
    good, bad = DirStore("a", tmp_path / "a", "repo-uuid"), DirStore("b", tmp_path / "b", "repo-uuid")
    for s in (good, bad):
        s.init_layout()
    (bad.root / "tmp").rmdir()
    (bad.root / "tmp").write_text("not a directory")
    checksum, _, (ok, failed) = stage(io.BytesIO(b"bytes"), [good, bad])
    assert isinstance(ok, Staged) and isinstance(failed, str) and failed
    assert good.place(ok).created and good.size_of(checksum) == 5
    again = stage(io.BytesIO(b"bytes"), [good])[2][0]
    assert isinstance(again, Staged)
    assert not good.place(again).created and list(good.iter_temp()) == []  # present: temp dropped
