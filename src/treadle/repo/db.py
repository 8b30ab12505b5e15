"""Engines for a repository's database, SQLite or PostgreSQL, set up the same way everywhere.

SQLite enforces foreign keys only when asked on each connection, and a writer's commit survives
a power loss only with ``synchronous=FULL``; both are set here once (docs/repo.md).
"""

from __future__ import annotations

import importlib.util
import urllib.parse
from datetime import UTC, datetime
from typing import Any

from treadle.errors import MissingExtra, RepoError, require_extra

require_extra("sqlalchemy", "sql")

import sqlalchemy  # noqa: E402
from sqlalchemy import event  # noqa: E402

BUSY_TIMEOUT_MS = 30_000
READ_ONLY_STATEMENT_TIMEOUT_MS = 60_000


def _sqlite_pragmas(read_only: bool) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Python's sqlite3 opens no transaction before DDL, so a migration would commit step
        # by step; with its own handling off, _begin below makes every transaction explicit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=FULL")
        if read_only:
            cursor.execute("PRAGMA query_only=1")
        cursor.close()
    return on_connect


def _sqlite_engine(url: sqlalchemy.URL, read_only: bool) -> sqlalchemy.Engine:
    if read_only and url.database:
        uri = "file:" + urllib.parse.quote(url.database) + "?mode=ro"
        engine = sqlalchemy.create_engine("sqlite:///" + uri + "&uri=true")
    else:
        engine = sqlalchemy.create_engine(url)
    event.listen(engine, "connect", _sqlite_pragmas(read_only))
    event.listen(engine, "begin", _begin)
    return engine


def _begin(connection: sqlalchemy.Connection) -> None:
    connection.exec_driver_sql("BEGIN")


def _postgres_engine(url: sqlalchemy.URL, read_only: bool) -> sqlalchemy.Engine:
    if importlib.util.find_spec("psycopg") is None:
        raise MissingExtra("postgres")
    url = url.set(drivername="postgresql+psycopg")
    options = ""
    if read_only:
        options = (f"-c default_transaction_read_only=on "
                   f"-c statement_timeout={READ_ONLY_STATEMENT_TIMEOUT_MS}")
    connect_args = {"options": options} if options else {}
    return sqlalchemy.create_engine(url, connect_args=connect_args, pool_pre_ping=True)


def make_engine(url: str, *, read_only: bool = False) -> sqlalchemy.Engine:
    """An engine for ``url`` with treadle's settings; ``read_only`` makes writes fail in the database.

    The read-only mode is enforced by the database itself (SQLite ``mode=ro`` and
    ``query_only``; PostgreSQL ``default_transaction_read_only``), so a user's own SELECT
    cannot write however it is written.
    """
    try:
        parsed = sqlalchemy.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise RepoError(f"not a database URL: {url!r}") from None
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, read_only)
    if parsed.get_backend_name() == "postgresql":
        return _postgres_engine(parsed, read_only)
    raise RepoError(f"unsupported database {parsed.get_backend_name()!r}: use SQLite "
                    f"(sqlite:///PATH) or PostgreSQL (postgresql+psycopg://...)")


def is_sqlite(engine: sqlalchemy.Engine) -> bool:
    """Whether the engine talks to SQLite (the embedded default) rather than a server."""
    return engine.dialect.name == "sqlite"


def utcnow() -> datetime:
    """Now, timezone-aware UTC: every time the repository stores is UTC."""
    return datetime.now(UTC)
