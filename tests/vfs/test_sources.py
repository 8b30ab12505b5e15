"""Sources over real repositories: a local one through treadle.repo, its service through the client.

Both must give the same metadata, listings and bytes; an http-only run must never import
SQLAlchemy (docs/vfs.md).
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from tests.vfs.conftest import Filled

from treadle.errors import FileAbsent, RepoError, StoreUnreachable, VfsError
from treadle.repo.checksums import parse_checksum
from treadle.vfs.sources import HttpSource, LocalSource, Source, open_source

pytestmark = pytest.mark.vfs


def _both(served: tuple[Filled, str]) -> list[Source]:
    filled, url = served
    return [open_source(str(filled.path), token_file=None, timeout=5),
            open_source(f"repo:{filled.path}", token_file=None, timeout=5),
            open_source(url, token_file=None, timeout=5)]


def test_open_source_kinds(served_repo: tuple[Filled, str], tmp_path: Path) -> None:
    local, prefixed, remote = _both(served_repo)
    assert isinstance(local, LocalSource) and isinstance(prefixed, LocalSource)
    assert isinstance(remote, HttpSource)
    assert local.default_mount == remote.default_mount == "/bxgrid"
    assert local.uuid == remote.uuid == served_repo[0].uuid
    assert local.has_replicas and not remote.has_replicas
    with pytest.raises(VfsError, match="repo.toml"):
        open_source(str(tmp_path), token_file=None, timeout=5)
    with pytest.raises(VfsError, match="not a service URL"):
        open_source("http://127.0.0.1:99999", token_file=None, timeout=5)


def test_nothing_is_contacted_when_opening(tmp_path: Path) -> None:
    # a port nobody listens on: opening succeeds, the first question says unreachable
    source = open_source("http://127.0.0.1:9", token_file=None, timeout=1)
    with pytest.raises(StoreUnreachable):
        source.file(1)


def test_same_answers_from_both(served_repo: tuple[Filled, str]) -> None:
    filled = served_repo[0]
    sources = _both(served_repo)
    for fileid, (data, ext) in filled.files.items():
        metas = {source.file(fileid) for source in sources}
        assert len(metas) == 1
        meta = metas.pop()
        assert (meta.size, meta.extension) == (len(data), ext)
        blobs = {source.blob(parse_checksum(meta.checksum)) for source in sources}
        assert len(blobs) == 1 and blobs.pop().size == len(data)
        for source in sources:
            out = io.BytesIO()
            source.fetch(meta, out)
            assert out.getvalue() == data
    expected = [(i, filled.files[i][1]) for i in sorted(filled.files)]
    for source in sources:
        assert source.fileids(0, 100) == (expected, None)
        first, following = source.fileids(0, 5)
        assert first == expected[:5] and following == expected[4][0]
        assert source.fileids(following, 100) == (expected[5:], None)
        assert source.table_files("images", 0, 100) == (expected, None)
        with pytest.raises(FileAbsent):
            source.table_files("nosuch", 0, 10)
        with pytest.raises(FileAbsent):
            source.file(999_999)
        with pytest.raises(FileAbsent):
            source.blob("0" * 64)
    assert sources[0].tables() == ["images"]


def test_local_objects_and_replicas(filled_repo: Filled) -> None:
    source = open_source(str(filled_repo.path), token_file=None, timeout=5)
    fileid, (data, _) = next(iter(filled_repo.files.items()))
    meta = source.file(fileid)
    found = source.local_object(meta)
    assert found is not None
    path, trusted = found
    assert path.read_bytes() == data and trusted  # ingest recorded the stat it wrote
    assert source.local_object(meta, skip=(path,)) is None
    replica = source.replica(1)
    assert replica.path.is_file() and replica.meta.size == replica.path.stat().st_size
    with pytest.raises(FileAbsent):
        source.replica(999_999)


def test_refused_token_names_server_and_source(filled_repo: Filled, tmp_path: Path) -> None:
    token = tmp_path / "bad.token"
    token.write_text("not-a-token\n")
    server = subprocess.Popen(
        [sys.executable, "-m", "treadle", "repo", "serve", str(filled_repo.path),
         "--bind", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        source = open_source(url, token_file=str(token), timeout=5)
        with pytest.raises(RepoError) as info:
            source.file(min(filled_repo.files))
        assert url in str(info.value) and str(token) in str(info.value)
    finally:
        server.terminate()
        server.wait(30)


def test_http_source_imports_no_sqlalchemy(served_repo: tuple[Filled, str],
                                           tmp_path: Path) -> None:
    filled, url = served_repo
    fileid = min(filled.files)
    code = f"""
import sys
from pathlib import Path
from treadle.vfs.cache import Cache
from treadle.vfs.namespace import Namespace
from treadle.vfs.sources import open_source
source = open_source({url!r}, token_file=None, timeout=5)
ns = Namespace([("/bxgrid", source)], Cache(Path({str(tmp_path / "cache")!r}), None))
path = ns.open_file(ns.resolve("/bxgrid/fileid/{fileid}").ino)
assert path.read_bytes() == {filled.files[fileid][0]!r}
ns.listdir(ns.resolve("/bxgrid/table/images").ino, 0, 100)
print(sorted(m for m in sys.modules if m.split(".")[0] == "sqlalchemy"))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_listing_carries_what_a_look_up_gives(served_repo: tuple[Filled, str]) -> None:
    """Metadata kept from a listing page (local rows, or the service's listing entries) is
    what a fresh source's look-up of each file says."""
    filled = served_repo[0]
    listed, fresh = _both(served_repo)[1:], _both(served_repo)[1:]
    for lister, asker in zip(listed, fresh, strict=True):
        lister.fileids(0, 100)
        lister.table_files("images", 0, 100)
        for fileid in filled.files:
            assert lister.file(fileid) == asker.file(fileid)
        lister.close()
        asker.close()


def test_local_look_ups_keep_the_repository_errors(filled_repo: Filled) -> None:
    """Deleted is absent; lost is still a file, but not listed."""
    import sqlite3

    deleted, lost, other = sorted(filled_repo.files)[:3]
    db_path = filled_repo.path / "metadata.db"
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE files SET state = 'DELETED' WHERE fileid = ?", (deleted,))
        db.execute("UPDATE files SET state = 'LOST' WHERE fileid = ?", (lost,))
    db.close()
    source = open_source(str(filled_repo.path), token_file=None, timeout=5)
    with pytest.raises(FileAbsent):
        source.file(deleted)
    assert source.file(lost).size == len(filled_repo.files[lost][0])
    listed = [fileid for fileid, _ in source.fileids(0, 100)[0]]
    assert deleted not in listed and lost not in listed and other in listed
    with pytest.raises(FileAbsent):
        source.file(0)
    source.close()
