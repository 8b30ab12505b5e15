"""fsck: each finding of docs/repo.md's table provoked and found, on SQLite and PostgreSQL.

Repositories are made by init_repository (the `repo_dir` fixture: stores a and b, R = 2) and
filled through the stores' own writes plus direct inserts, so these tests do not depend on
ingest. The command runs in-process through treadle.cli.main, as a user would run it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from tests._cli import run_cli
from tests.repo.test_get import serving

from treadle.repo import schema
from treadle.repo.context import RepoContext, open_context
from treadle.repo.db import is_sqlite, utcnow
from treadle.repo.fsck import fsck
from treadle.repo.ingest import ingest
from treadle.repo.stores import DirStore, add_store, set_store

DAY = 24 * 3600


def fsck_cli(repo: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``treadle repo fsck REPO ARGS`` in-process: (exit status, stdout, stderr)."""
    return run_cli(capsys, "repo", "fsck", str(repo), *args)


@pytest.fixture
def repo(repo_dir: Path) -> Iterator[RepoContext]:
    """The fixture repository, opened without the writer lock (the command takes it itself)."""
    with open_context(repo_dir) as ctx:
        yield ctx


def store_of(ctx: RepoContext, name: str) -> DirStore:
    row = next(r for r in ctx.stores() if r.name == name)
    opened = ctx.open_store(row)
    assert isinstance(opened, DirStore)
    return opened


def storeid(ctx: RepoContext, name: str) -> int:
    return next(r.storeid for r in ctx.stores() if r.name == name)


def put(ctx: RepoContext, data: bytes, stores: tuple[str, ...] = ("a", "b"), *,
        state: str = "OK") -> tuple[str, int]:
    """One file whose object is written into ``stores``, with rows as an ingest commits them."""
    checksum = ""
    for name in stores:
        checksum = store_of(ctx, name).write_stream(io.BytesIO(data)).checksum
    with ctx.engine.begin() as conn:
        conn.execute(schema.objects.insert().values(checksum=checksum, size=len(data)))
        for name in stores:
            conn.execute(schema.replicas.insert().values(checksum=checksum, storeid=storeid(ctx, name),
                                                         state=state))
        fileid = conn.execute(schema.files.insert().values(checksum=checksum, size=len(data),
                                                           extension="dat", created_at=utcnow(),
                                                           source="x.dat")
                              .returning(schema.files.c.fileid)).scalar_one()
    return checksum, fileid


def replica_states(ctx: RepoContext, checksum: str) -> dict[str, str]:
    names = {r.storeid: r.name for r in ctx.stores()}
    with ctx.engine.connect() as conn:
        rows = conn.execute(select(schema.replicas.c.storeid, schema.replicas.c.state)
                            .where(schema.replicas.c.checksum == checksum))
        return {names[sid]: state for sid, state in rows}


def events(ctx: RepoContext) -> list[tuple[str, int | None, str | None]]:
    audit = schema.audit_events
    with ctx.engine.connect() as conn:
        rows = conn.execute(select(audit.c.kind, audit.c.fileid, audit.c.checksum)
                            .order_by(audit.c.eventid))
        return [(kind, fileid, checksum) for kind, fileid, checksum in rows]


def rewrite(path: Path, data: bytes) -> None:
    """Replace an object's bytes in place (objects are read-only: as a disk error would)."""
    path.chmod(0o644)
    path.write_bytes(data)
    path.chmod(0o444)


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


# -- healthy ---------------------------------------------------------------------------------


def test_a_healthy_repository_is_clean_and_full_sets_lastcheck(repo: RepoContext, repo_dir: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    checksums = [put(repo, f"object {i}".encode() * 100)[0] for i in range(3)]
    status, _, err = fsck_cli(repo_dir, capsys=capsys)
    assert status == 0, err
    assert "6 replicas checked" in err and "no problems" in err
    with repo.engine.connect() as conn:
        # a size check verifies no bytes, so it must not tell readers the replica was verified
        assert conn.execute(select(schema.replicas.c.lastcheck)).scalars().all() == [None] * 6
    status, _, err = fsck_cli(repo_dir, "--full", capsys=capsys)
    assert status == 0, err
    with repo.engine.connect() as conn:
        rows = conn.execute(select(schema.replicas.c.lastcheck, schema.replicas.c.check_stat)).all()
    assert all(lastcheck is not None and stat is not None for lastcheck, stat in rows)
    assert events(repo) == [] and all(replica_states(repo, c) == {"a": "OK", "b": "OK"} for c in checksums)


# -- stores ----------------------------------------------------------------------------------


def test_an_unreachable_store_is_reported_once_and_its_replicas_are_left(
        repo: RepoContext, repo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checksums = [put(repo, f"object {i}".encode())[0] for i in range(3)]
    b_root = store_of(repo, "b").root
    b_root.rename(b_root.with_name("b-away"))
    status, _, err = fsck_cli(repo_dir, "--full", capsys=capsys)
    assert status == 2
    assert err.count("store b is unreachable") == 1
    assert [kind for kind, _, _ in events(repo)] == ["unreachable"]
    assert all(replica_states(repo, c) == {"a": "OK", "b": "OK"} for c in checksums)
    b_root.with_name("b-away").rename(b_root)
    status, _, err = fsck_cli(repo_dir, "--full", capsys=capsys)
    assert status == 0, err


def test_a_store_of_another_repository_is_unreachable(repo: RepoContext, repo_dir: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    checksum, _ = put(repo, b"some bytes")
    toml = store_of(repo, "b").root / "store.toml"
    toml.write_text('uuid = "x"\nrepository = "another"\n')
    status, _, err = fsck_cli(repo_dir, capsys=capsys)
    assert status == 2 and "belongs to another repository" in err
    assert replica_states(repo, checksum) == {"a": "OK", "b": "OK"}


# -- bad replicas ----------------------------------------------------------------------------


def test_a_missing_replica_becomes_bad_and_underreplicated(repo: RepoContext, repo_dir: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    checksum, fileid = put(repo, b"gone from b")
    store_of(repo, "b").object_path(checksum).unlink()
    status, _, err = fsck_cli(repo_dir, capsys=capsys)
    assert status == 2
    assert "the object is absent: marked BAD" in err
    assert f"fileid {fileid} ({checksum}): 1 of 2 OK replicas" in err
    assert replica_states(repo, checksum) == {"a": "OK", "b": "BAD"}
    assert [kind for kind, _, _ in events(repo)] == ["missing", "underreplicated"]


def test_a_wrong_size_is_found_quickly_and_quarantined(repo: RepoContext, repo_dir: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    checksum, _ = put(repo, b"right bytes")
    b = store_of(repo, "b")
    rewrite(b.object_path(checksum), b"longer, wrong bytes")
    status, _, err = fsck_cli(repo_dir, capsys=capsys)
    assert status == 2 and "19 bytes instead of 11" in err
    assert replica_states(repo, checksum) == {"a": "OK", "b": "BAD"}
    assert not b.object_path(checksum).exists()
    quarantined = list(b.quarantine_dir.iterdir())
    assert [p.read_bytes() for p in quarantined] == [b"longer, wrong bytes"]
    assert ("corrupt", None, checksum) in events(repo)


def test_a_wrong_hash_needs_full(repo: RepoContext, repo_dir: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    checksum, _ = put(repo, b"right bytes")
    b = store_of(repo, "b")
    rewrite(b.object_path(checksum), b"wrong bytes")  # same size
    status, _, err = fsck_cli(repo_dir, capsys=capsys)
    assert status == 0, err  # a size check cannot see it
    status, _, err = fsck_cli(repo_dir, "--full", capsys=capsys)
    assert status == 2 and "its bytes hash to sha256:" in err
    assert replica_states(repo, checksum) == {"a": "OK", "b": "BAD"}
    assert [p.read_bytes() for p in b.quarantine_dir.iterdir()] == [b"wrong bytes"]


def test_a_suspect_replica_is_rehashed_even_in_quick_mode(repo: RepoContext, repo_dir: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    good, _ = put(repo, b"good bytes")
    bad, _ = put(repo, b"bad bytes!")
    with repo.engine.begin() as conn:
        conn.execute(schema.replicas.update().where(schema.replicas.c.storeid == storeid(repo, "b"))
                     .values(state="SUSPECT"))
    rewrite(store_of(repo, "b").object_path(bad), b"bad bytes?")
    status, _, err = fsck_cli(repo_dir, capsys=capsys)
    assert status == 2
    assert "was SUSPECT: rehashed, its bytes are right, OK again" in err
    assert replica_states(repo, good) == {"a": "OK", "b": "OK"}
    assert replica_states(repo, bad) == {"a": "OK", "b": "BAD"}
    kinds = [kind for kind, _, _ in events(repo)]
    assert sorted(kinds) == ["corrupt", "suspect", "underreplicated"]


# -- replication -----------------------------------------------------------------------------


def test_repair_copies_an_underreplicated_object_and_verifies_it(
        repo: RepoContext, repo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checksum, fileid = put(repo, b"only on a" * 1000, stores=("a",))
    status, _, err = fsck_cli(repo_dir, capsys=capsys)
    assert status == 2 and "1 of 2 OK replicas (fsck --repair copies it)" in err
    assert not store_of(repo, "b").object_path(checksum).exists()
    status, out, err = fsck_cli(repo_dir, "--repair", "--json", capsys=capsys)
    assert status == 1, err
    assert f"fileid {fileid} ({checksum}): had 1 of 2 OK replicas: copied to b" in err
    assert store_of(repo, "b").object_path(checksum).read_bytes() == b"only on a" * 1000
    assert replica_states(repo, checksum) == {"a": "OK", "b": "OK"}
    assert json.loads(out)["findings"][0]["kind"] == "repaired"
    assert events(repo)[-1] == ("repaired", fileid, checksum)
    status, _, err = fsck_cli(repo_dir, "--full", capsys=capsys)
    assert status == 0, err


def test_repair_replaces_a_corrupt_replica_and_keeps_the_quarantined_bytes(
        repo: RepoContext, repo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checksum, _ = put(repo, b"precious bytes")
    b = store_of(repo, "b")
    rewrite(b.object_path(checksum), b"rotten bytes!!")
    status, _, err = fsck_cli(repo_dir, "--full", "--repair", "--gc", capsys=capsys)
    assert status == 1, err
    assert b.object_path(checksum).read_bytes() == b"precious bytes"
    assert replica_states(repo, checksum) == {"a": "OK", "b": "OK"}
    assert [p.read_bytes() for p in b.quarantine_dir.iterdir()] == [b"rotten bytes!!"]
    for path in b.quarantine_dir.iterdir():
        age(path, 2 * DAY)
    status, _, err = fsck_cli(repo_dir, "--full", "--repair", "--gc", capsys=capsys)
    assert status == 0, err
    assert [p.read_bytes() for p in b.quarantine_dir.iterdir()] == [b"rotten bytes!!"]


def test_repair_does_not_copy_from_a_replica_whose_bytes_are_wrong(
        repo: RepoContext, repo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checksum, _ = put(repo, b"the bytes", stores=("a",))
    rewrite(store_of(repo, "a").object_path(checksum), b"bad bytes")  # unseen by a quick check
    status, _, err = fsck_cli(repo_dir, "--repair", capsys=capsys)
    assert status == 2
    assert "no further store could take a copy" in err and "hash to" in err
    assert replica_states(repo, checksum) == {"a": "OK"}
    assert list(store_of(repo, "b").iter_objects()) == [] and list(store_of(repo, "b").iter_temp()) == []


def test_a_file_with_no_good_replica_is_lost_and_listed(repo: RepoContext, repo_dir: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    _, kept = put(repo, b"survivor")
    checksum, fileid = put(repo, b"doomed bytes")
    for name in ("a", "b"):
        store_of(repo, name).object_path(checksum).unlink()
    status, out, err = fsck_cli(repo_dir, "--repair", "--json", capsys=capsys)
    assert status == 2
    assert f"fileid {fileid} ({checksum}): lost: no OK replica left (a BAD, b BAD)" in err
    assert err.splitlines()[-2] == f"lost (1 files, no OK replica anywhere): fileids {fileid}"
    assert "1 files lost; exit status 2" in err.splitlines()[-1]
    assert json.loads(out)["lost"] == [fileid]
    assert ("lost", fileid, checksum) in events(repo)
    assert kept != fileid


# -- draining --------------------------------------------------------------------------------


def test_a_draining_store_is_emptied_only_with_repair(repo: RepoContext, repo_dir: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    checksums = [put(repo, f"object {i}".encode())[0] for i in range(3)]
    with repo.engine.begin() as conn:
        add_store(conn, repo.dir, repo.config.uuid, "c", "dir:stores/c")
        set_store(conn, "b", state="draining")
    status, _, err = fsck_cli(repo_dir, capsys=capsys)
    assert status == 2 and "store b: 3 replicas to move off or delete" in err
    assert all(replica_states(repo, c) == {"a": "OK", "b": "OK"} for c in checksums)
    status, _, err = fsck_cli(repo_dir, "--repair", capsys=capsys)
    assert status == 1, err
    assert err.count("copied to c, then removed from store b (draining)") == 3
    b, c = store_of(repo, "b"), store_of(repo, "c")
    for checksum in checksums:
        assert replica_states(repo, checksum) == {"a": "OK", "c": "OK"}
        assert not b.object_path(checksum).exists() and c.object_path(checksum).exists()
    status, _, err = fsck_cli(repo_dir, "--full", capsys=capsys)
    assert status == 0, err


def test_a_draining_store_keeps_what_cannot_go_elsewhere(repo: RepoContext, repo_dir: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    checksum, _ = put(repo, b"two copies wanted")
    with repo.engine.begin() as conn:
        set_store(conn, "b", state="draining")  # and no third store to take its copy
    status, _, err = fsck_cli(repo_dir, "--repair", capsys=capsys)
    assert status == 2 and "kept on store b: only 1 of 2 OK copies elsewhere" in err
    assert replica_states(repo, checksum) == {"a": "OK", "b": "OK"}
    assert store_of(repo, "b").object_path(checksum).exists()


def test_an_interrupted_deletion_is_finished(repo: RepoContext, repo_dir: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    checksum, _ = put(repo, b"on its way out")
    with repo.engine.begin() as conn:
        add_store(conn, repo.dir, repo.config.uuid, "c", "dir:stores/c")
    put_c = store_of(repo, "c").write_stream(io.BytesIO(b"on its way out"))
    with repo.engine.begin() as conn:
        conn.execute(schema.replicas.insert().values(checksum=put_c.checksum,
                                                     storeid=storeid(repo, "c"), state="DELETING"))
    status, _, err = fsck_cli(repo_dir, capsys=capsys)
    assert status == 2 and "store c: 1 replicas to move off or delete" in err
    status, _, err = fsck_cli(repo_dir, "--repair", capsys=capsys)
    assert status == 1, err
    assert replica_states(repo, checksum) == {"a": "OK", "b": "OK"}
    assert not store_of(repo, "c").object_path(checksum).exists()


# -- garbage ---------------------------------------------------------------------------------


def test_gc_deletes_old_orphans_and_temp_files_and_spares_young_ones(
        repo: RepoContext, repo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    put(repo, b"a real file")
    a = store_of(repo, "a")
    old = a.write_stream(io.BytesIO(b"old orphan")).checksum
    young = a.write_stream(io.BytesIO(b"young orphan")).checksum
    age(a.object_path(old), DAY + 60)
    old_temp, young_temp = a.tmp_dir / "1.dead.tmp", a.tmp_dir / "2.live.tmp"
    old_temp.write_bytes(b"half")
    young_temp.write_bytes(b"half")
    age(old_temp, DAY + 60)
    status, _, err = fsck_cli(repo_dir, capsys=capsys)
    assert status == 2 and err.count("older than 24 h (fsck --gc deletes it)") == 2
    assert err.count("left alone (may be a running ingest's)") == 2
    assert a.object_path(old).exists() and old_temp.exists()
    status, _, err = fsck_cli(repo_dir, "--gc", capsys=capsys)
    assert status == 1, err
    assert not a.object_path(old).exists() and not old_temp.exists()
    assert a.object_path(young).exists() and young_temp.exists()
    status, _, err = fsck_cli(repo_dir, "--gc", capsys=capsys)
    assert status == 0, err  # young leftovers are not problems yet
    assert [kind for kind, _, _ in events(repo)].count("orphan") == 4 + 4 + 2


def test_gc_keeps_the_only_bytes_of_a_lost_object(repo: RepoContext, repo_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    checksum, fileid = put(repo, b"last copy")
    with repo.engine.begin() as conn:
        conn.execute(schema.replicas.delete().where(schema.replicas.c.checksum == checksum))
    path = store_of(repo, "a").object_path(checksum)
    age(path, 2 * DAY)
    status, out, err = fsck_cli(repo_dir, "--gc", "--json", capsys=capsys)
    assert status == 2
    assert "kept: the only bytes of an object with no OK replica" in err
    assert path.read_bytes() == b"last copy" and json.loads(out)["lost"] == [fileid]


def test_gc_removes_old_creating_rows_only(repo: RepoContext, repo_dir: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with repo.engine.begin() as conn:
        add_store(conn, repo.dir, repo.config.uuid, "c", "dir:stores/c")
    old, _ = put(repo, b"old write")
    young, _ = put(repo, b"young write")
    c = storeid(repo, "c")
    with repo.engine.begin() as conn:
        for checksum, made in ((old, utcnow() - timedelta(hours=25)), (young, utcnow())):
            conn.execute(schema.replicas.insert().values(checksum=checksum, storeid=c,
                                                         state="CREATING", lastcheck=made))
    status, _, err = fsck_cli(repo_dir, capsys=capsys)
    assert status == 2 and "CREATING for more than 24 h (fsck --gc removes the row)" in err
    status, _, err = fsck_cli(repo_dir, "--gc", capsys=capsys)
    assert status == 1, err
    assert replica_states(repo, old) == {"a": "OK", "b": "OK"}
    assert replica_states(repo, young) == {"a": "OK", "b": "OK", "c": "CREATING"}


# -- invariants ------------------------------------------------------------------------------


def test_broken_invariants_are_reported(repo: RepoContext, repo_dir: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    checksum, fileid = put(repo, b"image bytes")
    table = schema.user_table("images", {"subject": "text"}, key="subject", links=["thumb"])
    with repo.engine.begin() as conn:
        table.create(conn)
        conn.execute(table.insert().values(fileid=fileid, subject="s1", thumb=None))
    # written around treadle with foreign keys off, as a careless tool could: SQLite enforces
    # them only on connections that ask (treadle's do), PostgreSQL skips them for a replica
    careless = (create_engine(f"sqlite:///{repo_dir / 'metadata.db'}") if is_sqlite(repo.engine)
                else repo.engine)
    with careless.begin() as conn:
        if not is_sqlite(repo.engine):
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(table.insert().values(fileid=9001, subject="s2"))
        conn.execute(table.update().where(table.c.fileid == fileid).values(thumb=9002))
        conn.execute(schema.files.insert().values(fileid=9003, checksum="sha256:" + "0" * 64, size=1,
                                                  created_at=utcnow()))
    careless.dispose()
    status, _, err = fsck_cli(repo_dir, capsys=capsys)
    assert status == 2
    assert "table images: row fileid 9001 names fileid 9001 in column fileid" in err
    assert f"table images: row fileid {fileid} names fileid 9002 in column thumb" in err
    assert "fileid 9003 names object sha256:" + "0" * 64 in err
    assert sorted(f or 0 for kind, f, _ in events(repo) if kind == "invariant") == [9001, 9002, 9003]


# -- incremental runs, scope, locking --------------------------------------------------------


def test_max_time_runs_progress_by_lastcheck(repo: RepoContext) -> None:
    for i in range(3):
        put(repo, f"object {i}".encode())

    def checked() -> dict[int, datetime]:
        with repo.engine.connect() as conn:
            rows = conn.execute(select(schema.replicas.c.replicaid, schema.replicas.c.lastcheck))
            return {rid: when for rid, when in rows if when is not None}

    seen: dict[int, datetime] = {}
    for run in range(1, 7):
        result = fsck(repo, full=True, max_time=0)
        assert (result.checked, result.unvisited) == (1, 5)
        now = checked()
        assert len(now) == run and all(now[rid] == when for rid, when in seen.items())
        seen = now
    first = min(seen, key=lambda rid: seen[rid])
    fsck(repo, full=True, max_time=0)
    revisited = checked()
    assert [rid for rid in seen if revisited[rid] != seen[rid]] == [first]


def test_store_and_sample_limit_what_is_checked(repo: RepoContext, repo_dir: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(4):
        put(repo, f"object {i}".encode())
    assert fsck(repo, store="b").checked == 4
    assert fsck(repo, sample=100).checked == 8
    status, _, err = fsck_cli(repo_dir, "--store", "nosuch", capsys=capsys)
    assert status == 1 and "no store 'nosuch' (stores: a, b)" in err


def test_repair_waits_for_the_writer_lock(repo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open_context(repo_dir, write=True):
        status, _, err = fsck_cli(repo_dir, "--repair", capsys=capsys)
        assert status == 1 and "the repository is being written by" in err
        status, _, err = fsck_cli(repo_dir, capsys=capsys)  # a plain check needs no lock
        assert status == 0, err


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_cli(capsys, "repo", "fsck", "--help")
    assert "Examples:" in out and "treadle repo fsck images.repo --repair --gc" in out


def test_not_a_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = fsck_cli(tmp_path, capsys=capsys)
    assert status == 1 and "not a repository" in err


# -- a store served over HTTP ----------------------------------------------------------------


def test_an_http_store_is_checked_repaired_into_and_unreachable_when_stopped(
        repo: RepoContext, repo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    remote = DirStore("h", tmp_path / "remote", repo.config.uuid)
    remote.init_layout()
    held, _ = put(repo, b"held by h", stores=("a",))
    rewrite_later = remote.object_path(remote.write_stream(io.BytesIO(b"held by h")).checksum)
    short, _ = put(repo, b"copied to h", stores=("a",))
    with serving(tmp_path / "serve.log", "--store", str(remote.root)) as url:
        with repo.engine.begin() as conn:
            h = add_store(conn, repo.dir, repo.config.uuid, "h", url, priority=-1).storeid
            set_store(conn, "b", state="readonly")  # so h is the only store that can take a copy
            conn.execute(schema.replicas.insert().values(checksum=held, storeid=h, state="OK"))
        status, _, err = fsck_cli(repo_dir, "--full", "--repair", capsys=capsys)
        assert status == 1, err
        assert f"({short}): had 1 of 2 OK replicas: copied to h" in err
        assert remote.object_path(short).read_bytes() == b"copied to h"
        assert replica_states(repo, short) == {"a": "OK", "h": "OK"}
        rewrite(rewrite_later, b"held by X")
        status, _, err = fsck_cli(repo_dir, capsys=capsys)
        assert status == 0, err  # a HEAD sees the right size
        status, _, err = fsck_cli(repo_dir, "--full", capsys=capsys)
        assert status == 2 and "its bytes hash to" in err
        assert replica_states(repo, held) == {"a": "OK", "h": "BAD"}
    status, _, err = fsck_cli(repo_dir, "--full", capsys=capsys)
    assert status == 2 and err.count("store h") == 1 and "unreachable" in err
    assert replica_states(repo, short) == {"a": "OK", "h": "OK"}  # a server that is down is not wrong


def test_an_ingest_while_a_store_was_away_is_topped_up_once_it_is_back(
        repo_dir: Path, make_files: Callable[..., list[Path]], capsys: pytest.CaptureFixture[str]) -> None:
    b_root = repo_dir / "stores" / "b"
    b_root.rename(repo_dir / "b-away")
    sources = make_files(5, size=5000)
    with open_context(repo_dir, write=True) as ctx:
        added = ingest(ctx, None, table="images", files=[str(p) for p in sources]).fileids
    status, _, err = fsck_cli(repo_dir, "--repair", capsys=capsys)
    assert status == 2 and "store b is unreachable" in err
    assert err.count("1 of 2 OK replicas; no further store could take a copy") == 5
    (repo_dir / "b-away").rename(b_root)
    status, _, err = fsck_cli(repo_dir, "--repair", capsys=capsys)
    assert status == 1, err
    assert err.count("had 1 of 2 OK replicas: copied to b") == 5
    status, _, err = fsck_cli(repo_dir, "--full", capsys=capsys)
    assert status == 0, err
    with open_context(repo_dir) as ctx:
        b = store_of(ctx, "b")
        for fileid, source in zip(added, sources, strict=True):
            with ctx.engine.connect() as conn:
                checksum = conn.execute(select(schema.files.c.checksum)
                                        .where(schema.files.c.fileid == fileid)).scalar_one()
            assert b.object_path(checksum).read_bytes() == source.read_bytes()


def test_a_sample_always_includes_suspect_replicas(repo: RepoContext) -> None:
    for i in range(20):
        put(repo, f"object {i}".encode())
    suspect, _ = put(repo, b"under suspicion")
    with repo.engine.begin() as conn:
        conn.execute(schema.replicas.update().where(schema.replicas.c.checksum == suspect)
                     .values(state="SUSPECT"))
    result = fsck(repo, sample=0.001)
    assert result.checked >= 2 and replica_states(repo, suspect) == {"a": "OK", "b": "OK"}
    assert [f.kind for f in result.findings] == ["suspect", "suspect"] and result.exit_status == 1


def test_the_command_exits_with_fscks_status(repo: RepoContext, repo_dir: Path) -> None:
    checksum, fileid = put(repo, b"one copy left", stores=("a",))
    done = subprocess.run([sys.executable, "-m", "treadle", "repo", "fsck", str(repo_dir), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].endswith("1 underreplicated; 0 files lost; exit status 2")
    report = json.loads(done.stdout)
    assert report["exit_status"] == 2 and report["findings"][0]["fileid"] == fileid
    assert report["findings"][0]["checksum"] == checksum
