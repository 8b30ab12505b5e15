"""``treadle repo get``: verified copies by fileid or vpath, exit statuses, failover, timeouts.

Run in-process through ``treadle.cli.main`` (and once as ``python -m treadle`` for stdout).
Objects are put with test_fetch's ``put_object``, as ingest would leave them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from tests._cli import run_cli
from tests.repo.test_fetch import DATA, corrupt, object_path, put_object, replica_state

from treadle.cli.repo_get import parse_file_argument
from treadle.errors import RepoDataError, UsageError
from treadle.repo.context import RepoContext, open_context
from treadle.repo.fetch import output_name, vpath
from treadle.repo.schema import audit_events, replicas
from treadle.repo.stores import add_store, set_store


def get(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``treadle repo get ARGS``; (exit status, stdout, stderr)."""
    return run_cli(capsys, "repo", "get", *args)


@pytest.fixture
def ctx(repo_dir: Path) -> Iterator[RepoContext]:
    with open_context(repo_dir) as opened:
        yield opened


def test_files_are_written_as_fileid_dot_extension(ctx: RepoContext, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    jpg, _ = put_object(ctx, DATA, extension="jpg")
    bare, _ = put_object(ctx, b"no extension", extension="")
    out = tmp_path / "out" / "new"
    status, _, err = get(capsys, str(ctx.dir), str(jpg), f"/bxgrid/fileid/{bare}", "-o", str(out))
    assert (status, err) == (0, "")
    assert sorted(os.listdir(out)) == sorted([f"{jpg}.jpg", str(bare)])
    assert (out / f"{jpg}.jpg").read_bytes() == DATA
    assert (out / str(bare)).read_bytes() == b"no extension"


def test_one_file_to_stdout(ctx: RepoContext) -> None:
    fileid, _ = put_object(ctx, DATA)
    done = subprocess.run([sys.executable, "-m", "treadle", "repo", "get", str(ctx.dir),
                           f"/bxgrid/fileid/{fileid}", "-o", "-"], capture_output=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout == DATA


def test_an_absent_file_exits_2_and_the_others_are_written(ctx: RepoContext, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    fileid, _ = put_object(ctx, DATA)
    status, _, err = get(capsys, str(ctx.dir), str(fileid + 1), str(fileid), "-o", str(tmp_path))
    assert status == 2
    assert f"fileid {fileid + 1}: no such file" in err
    assert "1 of 2 files not written" in err
    assert (tmp_path / f"{fileid}.dat").read_bytes() == DATA


def test_a_corrupt_replica_gives_the_right_bytes_and_becomes_suspect(
        ctx: RepoContext, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fileid, checksum = put_object(ctx, DATA)
    from treadle.repo.fetch import candidates

    first = candidates(ctx, checksum)[0].row
    corrupt(object_path(ctx, first.name, checksum))  # size, mtime and inode unchanged: "trusted"
    status, _, err = get(capsys, str(ctx.dir), str(fileid), "-o", str(tmp_path))
    assert status == 0
    assert f"store {first.name}" in err and "SUSPECT" in err
    assert (tmp_path / f"{fileid}.dat").read_bytes() == DATA
    assert replica_state(ctx, checksum, first.name) == "SUSPECT"
    with ctx.engine.connect() as conn:
        assert conn.execute(select(audit_events.c.kind)).scalars().all() == ["suspect"]


def test_corrupt_in_every_replica_exits_2_and_writes_nothing(
        ctx: RepoContext, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fileid, checksum = put_object(ctx, DATA)
    for store in ("a", "b"):
        corrupt(object_path(ctx, store, checksum))
    out = tmp_path / "out"
    status, _, err = get(capsys, str(ctx.dir), str(fileid), "-o", str(out))
    assert status == 2
    assert f"fileid {fileid}: corrupt in every replica" in err
    assert os.listdir(out) == []
    status, out, err = get(capsys, str(ctx.dir), str(fileid), "-o", "-")
    assert (status, out) == (2, "")
    assert f"fileid {fileid}: {checksum} has no OK replica" in err  # both are SUSPECT now


def test_a_store_that_never_answers_is_given_up_within_the_timeout(
        ctx: RepoContext, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        with ctx.engine.begin() as conn:
            add_store(conn, ctx.dir, ctx.config.uuid, "slow",
                      f"http://127.0.0.1:{listener.getsockname()[1]}", priority=-1)
        fileid, _ = put_object(ctx, b"only on a store that never answers", on=("slow",))
        start = time.monotonic()
        status, _, err = get(capsys, str(ctx.dir), str(fileid), "--timeout", "1.5", "-o", str(tmp_path))
        assert time.monotonic() - start < 6
    assert status == 2
    assert f"fileid {fileid}: no replica could be read (slow: no answer within 1.5 s)" in err
    assert os.listdir(tmp_path) == [ctx.dir.name]


@pytest.mark.parametrize("args, message", [
    (["REPO"], "give REPO and at least one FILEID"),
    (["REPO", "seventeen"], "not a fileid or vpath"),
    (["REPO", "/elsewhere/fileid/1"], "not under this repository's mount /bxgrid"),
    (["REPO", "1", "2", "-o", "-"], "-o - writes exactly one file"),
    (["REPO", "1", "--timeout", "0"], "--timeout"),
    (["NOTREPO", "1"], "repo.toml"),
])
def test_usage_errors_exit_1(ctx: RepoContext, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             args: list[str], message: str) -> None:
    replaced = [str(ctx.dir) if a == "REPO" else str(tmp_path) if a == "NOTREPO" else a for a in args]
    status, _, err = get(capsys, *replaced)
    assert status == 1
    assert message in err
    assert len(err.strip().splitlines()) == 1


@contextmanager
def serving(log: Path, *args: str) -> Iterator[str]:
    """``treadle repo serve ARGS`` on a free loopback port without tokens; its URL. Stopped after."""
    with open(log, "ab") as errors:
        server = subprocess.Popen(
            [sys.executable, "-m", "treadle", "repo", "serve", *args, "--bind", "127.0.0.1:0", "--no-auth"],
            stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()  # printed once it listens
        assert url.startswith("http://"), f"serve did not start: {log.read_text()}"
        yield url
    finally:
        server.terminate()
        server.wait(30)


def test_an_http_store_is_read_and_a_stopped_one_skipped(ctx: RepoContext, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    fileid, checksum = put_object(ctx, DATA)
    with serving(tmp_path / "serve.log", "--store", str(ctx.dir / "stores" / "b")) as url:
        with ctx.engine.begin() as conn:
            http_store = add_store(conn, ctx.dir, ctx.config.uuid, "h", url, priority=-1)
            set_store(conn, "b", state="down")  # b is read only through the service now
            conn.execute(replicas.insert().values(checksum=checksum, storeid=http_store.storeid,
                                                  state="OK"))
        corrupt(object_path(ctx, "a", checksum))  # so right bytes can only have come from h
        status, _, err = get(capsys, str(ctx.dir), str(fileid), "-o", str(tmp_path / "up"))
        assert (status, err) == (0, "")
        assert (tmp_path / "up" / f"{fileid}.dat").read_bytes() == DATA
    status, _, err = get(capsys, str(ctx.dir), str(fileid), "-o", str(tmp_path / "down"), "--timeout", "1")
    assert status == 2  # h is down and a is corrupt: nothing written, both named
    assert "store h" in err and f"fileid {fileid}: no replica could be read" in err
    assert os.listdir(tmp_path / "down") == []
    assert replica_state(ctx, checksum, "h") == "OK"  # a server that is down is not wrong
    assert replica_state(ctx, checksum, "a") == "SUSPECT"


def test_get_from_a_service(ctx: RepoContext, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fileid, _ = put_object(ctx, DATA, extension="png")
    with serving(tmp_path / "serve.log", str(ctx.dir)) as url:
        status, _, err = get(capsys, "--from", url, f"/bxgrid/fileid/{fileid}", str(fileid + 1),
                             "-o", str(tmp_path / "out"))
        assert status == 2
        assert f"fileid {fileid + 1}" in err and "1 of 2 files not written" in err
        assert os.listdir(tmp_path / "out") == [f"{fileid}.png"]
        assert (tmp_path / "out" / f"{fileid}.png").read_bytes() == DATA
    status, _, err = get(capsys, "--from", url, str(fileid), "-o", str(tmp_path / "later"), "--timeout", "1")
    assert status == 2
    assert f"fileid {fileid}: {url}" in err


@given(st.text())
def test_a_file_argument_is_a_fileid_a_vpath_or_refused(text: str) -> None:
    try:
        fileid = parse_file_argument(text, lambda: "/bxgrid")
    except UsageError:
        return
    assert 1 <= fileid < 10**19
    assert text in (str(fileid), vpath("/bxgrid", fileid), vpath("/bxgrid/", fileid))


@given(st.integers(min_value=1, max_value=2**63 - 1), st.sampled_from(["/bxgrid", "/data/irises"]))
def test_vpaths_of_any_mount_read_back(fileid: int, mount: str) -> None:
    assert parse_file_argument(vpath(mount, fileid), lambda: mount) == fileid
    assert parse_file_argument(str(fileid), lambda: mount) == fileid


@given(st.text())
def test_an_output_name_never_leaves_its_directory(extension: str) -> None:
    try:
        name = output_name(17, extension)
    except RepoDataError:
        assert "/" in extension or "\0" in extension
        return
    assert "/" not in name and name.startswith("17")
