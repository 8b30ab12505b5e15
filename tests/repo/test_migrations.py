"""Schema versions: an older repository migrates with its rows intact; older and newer refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import insert, inspect, select

from treadle.errors import RepoError
from treadle.repo import schema
from treadle.repo.config import RepoConfig, database_url, write_config
from treadle.repo.context import open_context
from treadle.repo.db import make_engine, utcnow
from treadle.repo.migrations import CURRENT_VERSION, STEPS, apply_steps, migrate

CHECKSUM = "sha256:" + "ab" * 32


def _version_1_repository(path: Path, database: str | None) -> Path:
    """A repository as the first format made it: step 1 only, with a file in it."""
    path.mkdir()
    config = RepoConfig(uuid="6a1c54a5-3c55-4f1e-a1f1-1f8c3b9d2e01", **({"database": database} if database else {}))
    write_config(path, config)
    engine = make_engine(database_url(path, config))
    with engine.begin() as conn:
        apply_steps(conn, STEPS[:1])
        conn.execute(insert(schema.objects).values(checksum=CHECKSUM, size=3))
        conn.execute(insert(schema.stores).values(name="a", url="dir:stores/a"))
        conn.execute(insert(schema.files).values(checksum=CHECKSUM, size=3, extension="txt",
                                                 created_at=utcnow(), source="x.txt"))
        conn.execute(insert(schema.replicas).values(checksum=CHECKSUM, storeid=1, state="OK"))
    engine.dispose()
    return path


def _replica_indices(ctx_dir: Path) -> set[str]:
    with open_context(ctx_dir) as ctx, ctx.engine.connect() as conn:
        return {str(i["name"]) for i in inspect(conn).get_indexes("replicas")}


def test_an_older_schema_is_refused_then_migrated(tmp_path: Path, database_url: str | None) -> None:
    repo = _version_1_repository(tmp_path / "old.repo", database_url)
    with pytest.raises(RepoError, match=f"schema version 1 is older than this treadle's {CURRENT_VERSION}: "
                                        f"run treadle repo migrate {repo}"):
        open_context(repo)
    assert migrate(repo) == list(range(2, CURRENT_VERSION + 1))
    assert {"ix_replicas_storeid_state", "ix_replicas_lastcheck"} <= _replica_indices(repo)
    with open_context(repo) as ctx, ctx.engine.connect() as conn:
        assert conn.execute(select(schema.files.c.fileid, schema.files.c.source)).all() == [(1, "x.txt")]
        versions = conn.execute(select(schema.schema_version.c.version)).scalars().all()
        assert sorted(versions) == list(range(1, CURRENT_VERSION + 1))
    if database_url is None:
        backup = repo / "metadata.db.bak-v1"
        with sqlite3.connect(backup) as copy:
            assert copy.execute("SELECT max(version) FROM schema_version").fetchone() == (1,)
            assert copy.execute("SELECT source FROM files").fetchall() == [("x.txt",)]
    assert migrate(repo) == []


def test_a_newer_schema_is_refused(repo_dir: Path) -> None:
    with open_context(repo_dir, write=True) as ctx, ctx.engine.begin() as conn:
        conn.execute(insert(schema.schema_version).values(version=CURRENT_VERSION + 1, applied_at=utcnow(),
                                                          treadle_version="99"))
    with pytest.raises(RepoError, match="made by a newer treadle"):
        open_context(repo_dir)
    with pytest.raises(RepoError, match="made by a newer treadle"):
        migrate(repo_dir)


def test_a_fresh_repository_is_current(repo_dir: Path) -> None:
    assert migrate(repo_dir) == []
    assert {"ix_replicas_storeid_state", "ix_replicas_lastcheck"} <= _replica_indices(repo_dir)
