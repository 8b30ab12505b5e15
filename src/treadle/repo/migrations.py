"""The ordered forward steps from an empty database to this treadle's schema (docs/repo.md).

Step 1 is the format-1 schema; later steps change it. A database records every applied step
in ``schema_version``; ``treadle repo migrate`` applies the pending ones in one transaction,
after a backup copy of an SQLite database. No step deletes user data.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import Connection, Engine, func, inspect, select
from sqlalchemy.schema import CreateTable

from treadle import __version__
from treadle.errors import RepoError
from treadle.repo import schema
from treadle.repo.config import database_url, load_config
from treadle.repo.db import is_sqlite, make_engine, utcnow
from treadle.repo.lock import WriterLock

Step = tuple[int, str, Callable[[Connection], None]]
_LATER_INDICES = (schema.replicas_by_store_state, schema.replicas_by_lastcheck)


def _create_format_1(conn: Connection) -> None:
    for table in schema.metadata.sorted_tables:
        conn.execute(CreateTable(table))
        for index in table.indexes:
            if index not in _LATER_INDICES:
                index.create(conn)


def _add_replica_indices(conn: Connection) -> None:
    for index in _LATER_INDICES:
        index.create(conn)


STEPS: list[Step] = [
    (1, "the format-1 tables", _create_format_1),
    (2, "indices on replicas by (storeid, state) and by lastcheck, for fsck and reads", _add_replica_indices),
]
CURRENT_VERSION: int = STEPS[-1][0]


def apply_steps(conn: Connection, steps: Sequence[Step]) -> list[int]:
    """Run ``steps`` in the caller's transaction, recording each in ``schema_version``."""
    for version, _description, run in steps:
        run(conn)
        conn.execute(schema.schema_version.insert().values(
            version=version, applied_at=utcnow(), treadle_version=__version__))
    return [version for version, _, _ in steps]


def create_schema(conn: Connection) -> None:
    """Create every table of an empty database, at CURRENT_VERSION."""
    if inspect(conn).has_table(schema.schema_version.name):
        raise RepoError("the database already holds a treadle repository")
    apply_steps(conn, STEPS)


def schema_version_of(conn: Connection) -> int:
    """The newest applied step; RepoError when the database is not a repository's."""
    if not inspect(conn).has_table(schema.schema_version.name):
        raise RepoError("the database holds no treadle repository (no schema_version table)")
    version = conn.execute(select(func.max(schema.schema_version.c.version))).scalar()
    return int(version or 0)


def check_version(conn: Connection, *, repo: str = "REPO") -> None:
    """Refuse a database whose schema is older or newer than this treadle's, saying what to do."""
    version = schema_version_of(conn)
    if version < CURRENT_VERSION:
        raise RepoError(f"schema version {version} is older than this treadle's {CURRENT_VERSION}: "
                        f"run treadle repo migrate {repo}")
    if version > CURRENT_VERSION:
        raise RepoError(f"schema version {version} was made by a newer treadle "
                        f"(this one knows up to {CURRENT_VERSION}): upgrade treadle")


def _backup_sqlite(engine: Engine, version: int) -> Path:
    path = Path(engine.url.database or "")
    backup = path.with_name(f"{path.name}.bak-v{version}")
    source = sqlite3.connect(path)
    target = sqlite3.connect(backup)
    try:
        source.backup(target)  # SQLite's online backup: a consistent copy, WAL included
    finally:
        target.close()
        source.close()
    return backup


def migrate(repo_dir: Path, *, wait: float = 0.0) -> list[int]:
    """Apply the pending steps to REPO's database, under the writer lock; return their versions.

    The lock is waited for up to ``wait`` seconds.

    An SQLite database is first copied to ``metadata.db.bak-v<N>`` (N: its version before).
    """
    config = load_config(repo_dir)
    engine = make_engine(database_url(repo_dir, config))
    try:
        with WriterLock(repo_dir, engine, config.uuid, wait):
            with engine.connect() as conn:
                version = schema_version_of(conn)
            if version > CURRENT_VERSION:
                with engine.connect() as conn:
                    check_version(conn, repo=str(repo_dir))
            pending = [step for step in STEPS if step[0] > version]
            if not pending:
                return []
            if is_sqlite(engine):
                _backup_sqlite(engine, version)
            with engine.begin() as conn:
                return apply_steps(conn, pending)
    finally:
        engine.dispose()
