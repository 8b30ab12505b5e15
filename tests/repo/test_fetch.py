"""treadle.repo.fetch: which replica is read, failover, SUSPECT, and never a wrong byte.

Repositories are real (SQLite file or the PostgreSQL server of ``database_url``); objects are
put straight into the dir stores with ``put_object`` below, as ingest would leave them.
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from treadle.errors import FileAbsent, RepoDataError, StoreUnreachable
from treadle.repo import fetch
from treadle.repo.checksums import Hasher
from treadle.repo.context import RepoContext, open_context
from treadle.repo.db import utcnow
from treadle.repo.schema import audit_events, files, objects, replicas, stores
from treadle.repo.stores import DirStore, add_store, set_store


def put_object(ctx: RepoContext, data: bytes, *, on: tuple[str, ...] = ("a", "b"),
               extension: str = "dat") -> tuple[int, str]:
    """Record ``data`` as a new file with an OK replica on each store named in ``on``.

    Dir stores get the bytes (and the replica the check_stat of what was written, as after an
    ingest); other stores only the replica row. Returns (fileid, checksum).
    """
    hasher = Hasher()
    hasher.update(data)
    checksum = hasher.checksum
    rows = {row.name: row for row in ctx.stores()}
    with ctx.engine.begin() as conn:
        if conn.execute(select(objects.c.checksum).where(objects.c.checksum == checksum)).first() is None:
            conn.execute(objects.insert().values(checksum=checksum, size=len(data)))
        for name in on:
            store = ctx.open_store(rows[name])
            stat = None
            if isinstance(store, DirStore):
                written = store.write_stream(io.BytesIO(data))
                stat = written.stat.to_json() if written.stat else None
            conn.execute(replicas.insert().values(checksum=checksum, storeid=rows[name].storeid,
                                                  state="OK", lastcheck=utcnow(), check_stat=stat))
        fileid = conn.execute(files.insert().values(
            checksum=checksum, size=len(data), extension=extension, created_at=utcnow(),
            source=f"test.{extension}")).inserted_primary_key[0]
    return int(fileid), checksum


def corrupt(path: Path) -> None:
    """Change one byte in place and put the mtime back: size, mtime and inode stay the same."""
    before = os.stat(path)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))
    os.chmod(path, before.st_mode)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def replica_state(ctx: RepoContext, checksum: str, store: str) -> str:
    with ctx.engine.connect() as conn:
        return str(conn.execute(
            select(replicas.c.state).select_from(replicas.join(stores))
            .where(replicas.c.checksum == checksum, stores.c.name == store)).scalar_one())


def object_path(ctx: RepoContext, store: str, checksum: str) -> Path:
    row = next(r for r in ctx.stores() if r.name == store)
    dir_store = ctx.open_store(row)
    assert isinstance(dir_store, DirStore)
    return dir_store.object_path(checksum)


@pytest.fixture
def ctx(repo_dir: Path) -> Iterator[RepoContext]:
    with open_context(repo_dir) as opened:
        yield opened


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An http store URL whose server accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


DATA = b"the bytes of one iris image\n" * 5000


def test_candidates_this_host_then_no_host_then_others_by_priority(ctx: RepoContext) -> None:
    with ctx.engine.begin() as conn:
        add_store(conn, ctx.dir, ctx.config.uuid, "near", "dir:stores/near", host="here", priority=9)
        add_store(conn, ctx.dir, ctx.config.uuid, "far", "dir:stores/far", host="there", priority=-5)
        add_store(conn, ctx.dir, ctx.config.uuid, "ro", "dir:stores/ro", priority=2)
        add_store(conn, ctx.dir, ctx.config.uuid, "off", "dir:stores/off")
        add_store(conn, ctx.dir, ctx.config.uuid, "drain", "dir:stores/drain")
        set_store(conn, "a", priority=1)
        set_store(conn, "ro", state="readonly")
        set_store(conn, "off", state="down")
        set_store(conn, "drain", state="draining")
    _, checksum = put_object(ctx, DATA, on=("a", "b", "near", "far", "ro", "off", "drain"))
    order = [c.row.name for c in fetch.candidates(ctx, checksum, host="here")]
    assert order == ["near", "b", "a", "ro", "far"]
    with ctx.engine.begin() as conn:
        conn.execute(update(replicas).where(replicas.c.storeid == next(
            r.storeid for r in ctx.stores() if r.name == "b")).values(state="SUSPECT"))
    assert [c.row.name for c in fetch.candidates(ctx, checksum, host="here")] == ["near", "a", "ro", "far"]


def test_equal_stores_are_ordered_by_host_and_checksum(ctx: RepoContext) -> None:
    checksums = [put_object(ctx, f"object {i}\n".encode())[1] for i in range(12)]

    def first(host: str, checksum: str) -> str:
        return fetch.candidates(ctx, checksum, host=host)[0].row.name

    for checksum in checksums:
        assert first("h1", checksum) == first("h1", checksum)
    assert {first("h1", c) for c in checksums} == {"a", "b"}  # objects spread over the stores
    assert {first(f"h{i}", checksums[0]) for i in range(12)} == {"a", "b"}  # so do hosts


def test_trusted_needs_a_recent_check_and_the_same_stat(ctx: RepoContext) -> None:
    _, checksum = put_object(ctx, DATA)
    assert all(c.trusted for c in fetch.candidates(ctx, checksum))
    corrupt(object_path(ctx, "a", checksum))  # undetectable by stat: still trusted, so get hashes
    assert {c.row.name: c.trusted for c in fetch.candidates(ctx, checksum)} == {"a": True, "b": True}
    os.utime(object_path(ctx, "a", checksum), ns=(0, 10**18))
    b = next(r for r in ctx.stores() if r.name == "b")
    with ctx.engine.begin() as conn:
        conn.execute(update(replicas).where(replicas.c.storeid == b.storeid).values(
            lastcheck=utcnow() - timedelta(days=ctx.config.verify_max_age_days + 1)))
    assert {c.row.name: c.trusted for c in fetch.candidates(ctx, checksum)} == {"a": False, "b": False}


def test_fetch_writes_the_bytes_and_leaves_no_temp(ctx: RepoContext, tmp_path: Path) -> None:
    _, checksum = put_object(ctx, DATA)
    out = tmp_path / "out"
    out.mkdir()
    fetch.fetch_to(ctx, checksum, out / "1.dat")
    assert (out / "1.dat").read_bytes() == DATA
    assert os.listdir(out) == ["1.dat"]


def test_a_missing_store_directory_is_skipped_not_marked(ctx: RepoContext, tmp_path: Path) -> None:
    _, checksum = put_object(ctx, DATA)
    first = fetch.candidates(ctx, checksum)[0].row.name
    os.rename(ctx.dir / "stores" / first, tmp_path / "moved")
    lines: list[str] = []
    fetch.fetch_to(ctx, checksum, tmp_path / "x", report=lines.append)
    assert (tmp_path / "x").read_bytes() == DATA
    assert len(lines) == 1 and "unreachable" in lines[0]
    assert replica_state(ctx, checksum, first) == "OK"  # a store that is away is not wrong


def test_a_corrupt_trusted_replica_is_skipped_and_marked_suspect(ctx: RepoContext, tmp_path: Path) -> None:
    _, checksum = put_object(ctx, DATA)
    first = fetch.candidates(ctx, checksum)[0]
    assert first.trusted
    corrupt(object_path(ctx, first.row.name, checksum))
    fetch.fetch_to(ctx, checksum, tmp_path / "x")
    assert (tmp_path / "x").read_bytes() == DATA
    assert replica_state(ctx, checksum, first.row.name) == "SUSPECT"
    with ctx.engine.connect() as conn:
        events = conn.execute(select(audit_events.c.kind, audit_events.c.storeid, audit_events.c.checksum)).all()
    assert [tuple(e) for e in events] == [("suspect", first.row.storeid, checksum)]
    assert [c.row.name for c in fetch.candidates(ctx, checksum)] != [first.row.name]


def test_corrupt_everywhere_writes_nothing(ctx: RepoContext, tmp_path: Path) -> None:
    _, checksum = put_object(ctx, DATA)
    for store in ("a", "b"):
        corrupt(object_path(ctx, store, checksum))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RepoDataError, match="corrupt in every replica") as raised:
        fetch.fetch_to(ctx, checksum, out / "1.dat")
    assert not isinstance(raised.value, StoreUnreachable)
    assert os.listdir(out) == []
    assert {replica_state(ctx, checksum, s) for s in ("a", "b")} == {"SUSPECT"}
    with pytest.raises(RepoDataError, match="no OK replica"):
        fetch.fetch_to(ctx, checksum, out / "1.dat")


def test_absent_files_and_objects(ctx: RepoContext) -> None:
    fileid, checksum = put_object(ctx, DATA, extension="jpg")
    info = fetch.file_info(ctx, fileid)
    assert (info.checksum, info.size, info.extension, info.state) == (checksum, len(DATA), "jpg", "OK")
    assert info.created_at.tzinfo == UTC  # from either database, so HTTP dates can be made of it
    for missing in (fileid + 1, 0, 2**64):
        with pytest.raises(FileAbsent, match="no such file"):
            fetch.file_info(ctx, missing)
    with ctx.engine.begin() as conn:
        conn.execute(update(files).where(files.c.fileid == fileid).values(state="DELETED"))
    with pytest.raises(FileAbsent):
        fetch.file_info(ctx, fileid)
    with pytest.raises(FileAbsent):
        fetch.object_size(ctx, "sha256:" + "0" * 64)
    assert fetch.object_size(ctx, checksum) == len(DATA)
    assert fetch.vpath("/bxgrid/", 17) == "/bxgrid/fileid/17"


def test_open_verified_reads_and_fails_at_the_end_on_a_mismatch(ctx: RepoContext) -> None:
    _, checksum = put_object(ctx, DATA, on=("a",))
    with fetch.open_verified(ctx, checksum) as f:
        assert f.read() == DATA
    corrupt(object_path(ctx, "a", checksum))
    with fetch.open_verified(ctx, checksum) as f:
        f.read(100)
        with pytest.raises(RepoDataError, match="hash"):
            f.read()
    assert replica_state(ctx, checksum, "a") == "SUSPECT"


def test_a_silent_store_costs_at_most_the_timeout(ctx: RepoContext, tmp_path: Path,
                                                  silent_server: str) -> None:
    with ctx.engine.begin() as conn:
        add_store(conn, ctx.dir, ctx.config.uuid, "slow", silent_server, priority=-1)
    _, both = put_object(ctx, DATA, on=("slow", "a"))
    assert fetch.candidates(ctx, both)[0].row.name == "slow"
    start = time.monotonic()
    fetch.fetch_to(ctx, both, tmp_path / "x", timeout=1.0)
    assert time.monotonic() - start < 5
    assert (tmp_path / "x").read_bytes() == DATA
    _, only_slow = put_object(ctx, b"only on the silent store", on=("slow",))
    start = time.monotonic()
    with pytest.raises(StoreUnreachable, match="no answer within 1 s"):
        fetch.fetch_to(ctx, only_slow, tmp_path / "y", timeout=1.0)
    assert time.monotonic() - start < 5
    assert not (tmp_path / "y").exists()


def test_all_unreachable_is_retried_until_a_store_returns(ctx: RepoContext, tmp_path: Path) -> None:
    _, checksum = put_object(ctx, DATA, on=("a",))
    os.rename(ctx.dir / "stores" / "a", tmp_path / "away")
    failed_once = threading.Event()
    result: list[BaseException | None] = []

    def read() -> None:
        try:
            fetch.fetch_to(ctx, checksum, tmp_path / "x", timeout=20.0,
                           report=lambda line: failed_once.set())
            result.append(None)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            result.append(e)

    reader = threading.Thread(target=read)
    reader.start()
    assert failed_once.wait(20)
    os.rename(tmp_path / "away", ctx.dir / "stores" / "a")
    reader.join(30)
    assert result == [None]
    assert (tmp_path / "x").read_bytes() == DATA
