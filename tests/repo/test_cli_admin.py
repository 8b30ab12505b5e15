"""treadle repo init / store / migrate, through the command line as a user types it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import delete
from tests._cli import run_cli as run

from treadle.repo import schema
from treadle.repo.config import load_config
from treadle.repo.context import open_context


def test_init_makes_a_repository_with_its_stores(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 database_url: str | None) -> None:
    repo = tmp_path / "images.repo"
    db = ["--db", database_url] if database_url else []
    status, out, _ = run(capsys, "repo", "init", str(repo), *db, "--store", "fast=dir:stores/fast",
                         "--store", f"slow=dir:{tmp_path}/slow", "--replicas", "2", "--mount", "/data")
    assert status == 0 and "made repository" in out
    config = load_config(repo)
    assert (config.replicas, config.min_replicas, config.mount) == (2, 1, "/data")
    assert config.database == (database_url or "sqlite:///metadata.db")
    for store in (repo / "stores/fast", tmp_path / "slow"):
        assert {p.name for p in store.iterdir()} == {"objects", "tmp", "quarantine", "store.toml"}
    with open_context(repo) as ctx:
        assert [(s.storeid, s.name) for s in ctx.stores()] == [(1, "fast"), (2, "slow")]
        if database_url is None:
            with ctx.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_init_defaults_and_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "r"
    assert run(capsys, "repo", "init", str(repo))[0] == 0
    assert (repo / "stores/a/store.toml").is_file() and (repo / "metadata.db").is_file()
    status, _, err = run(capsys, "repo", "init", str(repo))
    assert status == 1 and "not an empty directory" in err and "Traceback" not in err
    for bad in (["--store", "nourl"], ["--store", "a=ftp://x"], ["--replicas", "1", "--min-replicas", "2"],
                ["--mount", "relative"], ["--min-replicas", "2", "--replicas", "2"],
                ["--store", "a=dir:x", "--store", "a=dir:y"], ["--db", "mysql://u@h/db"],
                ["--db", "not a url"]):
        target = tmp_path / f"bad{len(list(tmp_path.iterdir()))}"
        status, _, err = run(capsys, "repo", "init", str(target), *bad)
        assert status == 1 and err.count("\n") == 1, (bad, err)
        assert not target.exists()


def test_init_refuses_a_database_that_holds_a_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         database_url: str | None) -> None:
    db = database_url or f"sqlite:///{tmp_path}/shared.db"
    assert run(capsys, "repo", "init", str(tmp_path / "first"), "--db", db)[0] == 0
    second = tmp_path / "second"
    second.mkdir()
    status, _, err = run(capsys, "repo", "init", str(second), "--db", db)
    assert status == 1 and "already holds a treadle repository" in err
    assert list(second.iterdir()) == []  # nothing half-made is left to block a retry


def test_store_add_list_set_drain(repo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = str(repo_dir)
    status, out, _ = run(capsys, "repo", "store", "add", repo, "c", f"dir:{tmp_path}/c", "--host", "n1",
                         "--priority", "3")
    assert status == 0 and "storeid 3" in out and (tmp_path / "c/store.toml").is_file()
    status, _, err = run(capsys, "repo", "store", "add", repo, "c", "dir:x")
    assert status == 1 and "already a store named c" in err
    with open_context(repo_dir, write=True) as ctx, ctx.engine.begin() as conn:
        conn.execute(schema.objects.insert().values(checksum="sha256:" + "0" * 64, size=1))
        conn.execute(schema.replicas.insert().values(checksum="sha256:" + "0" * 64, storeid=2, state="OK"))
    status, out, _ = run(capsys, "repo", "store", "list", repo)
    lines = [line.split() for line in out.splitlines()]
    assert lines == [["NAME", "URL", "HOST", "STATE", "PRIORITY", "OK"],
                     ["a", "dir:stores/a", "-", "up", "0", "0"],
                     ["b", "dir:stores/b", "-", "up", "0", "1"],
                     ["c", f"dir:{tmp_path}/c", "n1", "up", "3", "0"]]
    assert run(capsys, "repo", "store", "set", repo, "b", "--state", "readonly", "--priority", "7")[0] == 0
    status, out, _ = run(capsys, "repo", "store", "drain", repo, "a")
    assert status == 0 and f"run treadle repo fsck {repo} --repair" in out
    status, out, _ = run(capsys, "repo", "store", "list", repo, "--json")
    listed = {s["name"]: (s["state"], s["priority"], s["replicas_ok"]) for s in json.loads(out)}
    assert listed == {"a": ("draining", 0, 0), "b": ("readonly", 7, 1), "c": ("up", 3, 0)}
    status, _, err = run(capsys, "repo", "store", "set", repo, "zz", "--state", "down")
    assert status == 1 and "no store named zz (stores: a, b, c)" in err
    assert run(capsys, "repo", "store", "set", repo, "a")[0] == 1  # nothing to change


def test_store_changes_take_the_writer_lock(repo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open_context(repo_dir, write=True):
        status, _, err = run(capsys, "repo", "store", "drain", str(repo_dir), "a")
        assert status == 1 and "being written by" in err
        assert run(capsys, "repo", "store", "list", str(repo_dir))[0] == 0


def test_migrate_command(repo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "repo", "migrate", str(repo_dir))
    assert status == 0 and "nothing to do" in out
    # make the database a version-1 one again: step 2's indices and its schema_version row undone
    with open_context(repo_dir, write=True) as ctx, ctx.engine.begin() as conn:
        schema.replicas_by_lastcheck.drop(conn)
        schema.replicas_by_store_state.drop(conn)
        conn.execute(delete(schema.schema_version).where(schema.schema_version.c.version == 2))
    status, _, err = run(capsys, "repo", "store", "list", str(repo_dir))
    assert status == 1 and f"run treadle repo migrate {repo_dir}" in err
    status, out, _ = run(capsys, "repo", "migrate", str(repo_dir))
    assert status == 0 and "applied schema steps 2" in out
    assert run(capsys, "repo", "store", "list", str(repo_dir))[0] == 0


def test_every_admin_command_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["init"], ["migrate"], ["store"], ["store", "add"], ["store", "list"], ["store", "set"],
                 ["store", "drain"]):
        status, out, _ = run(capsys, "repo", *argv, "--help")
        assert status == 0 and "Examples:\n" in out, argv
