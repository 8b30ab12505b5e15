"""The schema: names checked, user tables built and reflected, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import delete, insert, inspect, select
from sqlalchemy.exc import InternalError, OperationalError

from treadle.errors import RepoError
from treadle.repo import audit, schema
from treadle.repo.context import open_context


@pytest.mark.parametrize("name", ["files", "Files", "vpath", "1abc", "a-b", "x" * 64, "", "sqlite_x",
                                  "a b", "é"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(RepoError):
        schema.check_name(name)


@pytest.mark.parametrize("name", ["images", "select", "_x", "A" * 63, "Thumb2"])
def test_good_names_pass(name: str) -> None:
    assert schema.check_name(name) == name


def test_user_table_round_trip(repo_dir: Path) -> None:
    with open_context(repo_dir, write=True) as ctx, ctx.engine.begin() as conn:
        table = schema.user_table("images", {"recording": "text", "n": "int", "w": "real"},
                                  key="recording", links=["thumb"], index=["n"])
        table.create(conn)
        assert schema.user_tables(conn) == ["images"]
        reflected = schema.reflect_user_table(conn, "images")
        kinds = {c.name: schema.column_kind(c) for c in reflected.columns}
        assert kinds == {"fileid": "fileid", "recording": "text", "n": "int", "w": "real", "thumb": "fileid"}
        indexed = {tuple(i["column_names"]) for i in inspect(conn).get_indexes("images")}
        assert {("n",), ("thumb",)} <= indexed
        schema.add_link_column(conn, "images", "small")
        assert schema.column_kind(schema.reflect_user_table(conn, "images").c.small) == "fileid"
        with pytest.raises(RepoError, match=r"no table movies \(tables: images\)"):
            schema.reflect_user_table(conn, "movies")
        with pytest.raises(RepoError):
            schema.reflect_user_table(conn, "files")
        audit.record(conn, "orphan", checksum="sha256:" + "0" * 64, detail="left by a dead ingest")
        assert conn.execute(select(schema.audit_events.c.kind)).scalars().all() == ["orphan"]


def test_foreign_keys_are_enforced(repo_dir: Path) -> None:
    with open_context(repo_dir, write=True) as ctx:
        with pytest.raises(Exception, match="(?i)foreign key"), ctx.engine.begin() as conn:
            conn.execute(insert(schema.replicas).values(checksum="sha256:" + "1" * 64, storeid=1, state="OK"))


def test_a_read_only_context_cannot_write(repo_dir: Path) -> None:
    with open_context(repo_dir, read_only=True) as ctx:
        with ctx.engine.connect() as conn:
            assert [r.name for r in ctx.stores()] == ["a", "b"]
            with pytest.raises(OperationalError if ctx.engine.dialect.name == "sqlite" else InternalError,
                               match="(?i)read.only|readonly"):
                conn.execute(delete(schema.stores))
    if ctx.engine.dialect.name == "postgresql":
        with ctx.engine.connect() as conn:  # a user's own SELECT cannot run for ever
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "1min"
