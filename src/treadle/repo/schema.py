"""The repository's tables, and the checked construction of user tables (docs/repo.md).

SQLAlchemy Core only, so one definition serves SQLite and PostgreSQL. Every name a user gives
(a table, a column) passes :func:`check_name` before it reaches SQL, and SQLAlchemy quotes it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from treadle.errors import RepoError, require_extra

require_extra("sqlalchemy", "sql")

from sqlalchemy import (  # noqa: E402
    BigInteger,
    Column,
    Connection,
    DateTime,
    Double,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    inspect,
)
from sqlalchemy.engine import Dialect  # noqa: E402


class UtcDateTime(TypeDecorator[datetime]):
    """A time that always comes back timezone-aware in UTC: SQLite keeps no zone, and PostgreSQL
    answers in the session's, which HTTP dates and comparisons must not see."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", UtcDateTime(), nullable=False),
    Column("treadle_version", Text, nullable=False),
)

objects = Table(
    "objects", metadata,
    Column("checksum", Text, primary_key=True),
    Column("size", BigInteger, nullable=False),
)

ingests = Table(
    "ingests", metadata,
    Column("ingest_id", Integer, primary_key=True),
    Column("table_name", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("command", Text, nullable=False, default=""),
    Column("host", Text, nullable=False, default=""),
    Column("pid", Integer, nullable=False, default=0),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime()),
    Column("state", Text, nullable=False, default="running"),
    Column("rows", BigInteger, nullable=False, default=0),
    Column("bytes", BigInteger, nullable=False, default=0),
    sqlite_autoincrement=True,
)

files = Table(
    "files", metadata,
    # AUTOINCREMENT on SQLite (and an identity on PostgreSQL): a fileid is never reused
    Column("fileid", Integer, Identity(), primary_key=True),
    Column("checksum", Text, ForeignKey("objects.checksum"), nullable=False, index=True),
    Column("size", BigInteger, nullable=False),
    Column("extension", Text, nullable=False, default=""),
    Column("media_type", Text),
    Column("state", Text, nullable=False, default="OK"),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("ingest_id", Integer, ForeignKey("ingests.ingest_id")),
    Column("source", Text, nullable=False, default=""),
    sqlite_autoincrement=True,
)

stores = Table(
    "stores", metadata,
    Column("storeid", Integer, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("url", Text, nullable=False),
    Column("host", Text, nullable=False, default=""),
    Column("state", Text, nullable=False, default="up"),
    Column("priority", Integer, nullable=False, default=0),
    Column("uuid", Text, nullable=False, default=""),
    sqlite_autoincrement=True,
)

replicas = Table(
    "replicas", metadata,
    Column("replicaid", Integer, primary_key=True),
    Column("checksum", Text, ForeignKey("objects.checksum"), nullable=False),
    Column("storeid", Integer, ForeignKey("stores.storeid"), nullable=False),
    Column("state", Text, nullable=False),
    Column("lastcheck", UtcDateTime()),
    Column("check_stat", Text),  # JSON {"size", "mtime_ns", "inode"} seen at lastcheck
    UniqueConstraint("checksum", "storeid", name="uq_replicas_checksum_storeid"),
    sqlite_autoincrement=True,
)

audit_events = Table(
    "audit_events", metadata,
    Column("eventid", Integer, primary_key=True),
    Column("time", UtcDateTime(), nullable=False),
    Column("kind", Text, nullable=False),
    # no foreign keys: an event may be about a fileid or object the database lacks
    Column("fileid", Integer),
    Column("checksum", Text),
    Column("storeid", Integer),
    Column("detail", Text, nullable=False, default=""),
    sqlite_autoincrement=True,
)

# Added by schema version 2 (treadle/repo/migrations.py): fsck visits replicas oldest check
# first and looks replicas up by store and state; format-1 databases lack them.
replicas_by_store_state = Index("ix_replicas_storeid_state", replicas.c.storeid, replicas.c.state)
replicas_by_lastcheck = Index("ix_replicas_lastcheck", replicas.c.lastcheck)

OWN_TABLES: frozenset[str] = frozenset(metadata.tables)
COLUMN_TYPES = ("int", "real", "text", "fileid")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_RESERVED = frozenset({"vpath"})
_MAX_INDEX_NAME = 63  # PostgreSQL's identifier limit


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it may name a user table or column, else raise RepoError saying why.

    SQLite compares table names without regard to case, so ``Files`` is refused like ``files``.
    """
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise RepoError(f"bad {what} {name!r}: use letters, digits and _, not starting with a "
                        f"digit, at most 63 characters")
    lowered = name.lower()
    if lowered in OWN_TABLES or lowered.startswith("sqlite_"):
        raise RepoError(f"bad {what} {name!r}: the name of one of treadle's own tables")
    if lowered in _RESERVED:
        raise RepoError(f"bad {what} {name!r}: vpath is computed for every row, not stored")
    return name


def index_name(table: str, *columns: str) -> str:
    """A deterministic index name within PostgreSQL's 63-character limit."""
    name = "ix_" + "_".join((table, *columns))
    if len(name) <= _MAX_INDEX_NAME:
        return name
    digest = hashlib.sha256("\0".join((table, *columns)).encode()).hexdigest()[:16]
    return f"ix_{table[:40]}_{digest}"


def _column_type(kind: str) -> type[BigInteger] | type[Double] | type[Text] | type[Integer]:
    types = {"int": BigInteger, "real": Double, "text": Text, "fileid": Integer}
    if kind not in types:
        raise RepoError(f"bad column type {kind!r} (types: {', '.join(COLUMN_TYPES)})")
    return types[kind]


def user_table(name: str, columns: dict[str, str], *, key: str | None,
               links: Iterable[str] = (), index: Iterable[str] = ()) -> Table:
    """The Table of a new user table: ``fileid`` (primary key, to files) and ``columns``.

    ``columns`` maps a column to one of COLUMN_TYPES; ``key`` is UNIQUE; ``links`` are added as
    nullable ``fileid`` columns if missing; every link column and every ``index`` column is
    indexed. The Table lives in its own MetaData (with a copy of ``files`` for its foreign
    keys), so building one never changes treadle's own schema.
    """
    check_name(name, "table")
    kinds = dict(columns)
    for link in links:
        kinds.setdefault(link, "fileid")
    for column in (*kinds, *([key] if key else []), *index):
        check_name(column, "column")
        if column == "fileid":
            raise RepoError(f"bad column 'fileid' in table {name}: every table has it as its key")
    if key is not None and key not in kinds:
        raise RepoError(f"the key {key!r} is not a column of table {name}")
    indexed = set(index)
    missing = sorted(indexed - set(kinds))
    if missing:
        raise RepoError(f"cannot index {', '.join(missing)}: not a column of table {name}")
    own = MetaData()
    files.to_metadata(own)
    table = Table(name, own, Column("fileid", Integer, ForeignKey("files.fileid"), primary_key=True,
                                    autoincrement=False))
    for column, kind in kinds.items():
        col_type = _column_type(kind)
        args = [ForeignKey("files.fileid")] if kind == "fileid" else []
        table.append_column(Column(column, col_type(), *args, unique=column == key, nullable=column != key))
        if kind == "fileid" or column in indexed:
            Index(index_name(name, column), table.c[column])
    return table


def user_tables(conn: Connection) -> list[str]:
    """The names of the user tables in the database, sorted."""
    return sorted(t for t in inspect(conn).get_table_names() if t.lower() not in OWN_TABLES)


def reflect_user_table(conn: Connection, name: str) -> Table:
    """The user table ``name`` as the database has it; RepoError naming the tables there are."""
    check_name(name, "table")
    tables = user_tables(conn)
    if name not in tables:
        raise RepoError(f"no table {name} (tables: {', '.join(tables) or 'none yet'})")
    return Table(name, MetaData(), autoload_with=conn, resolve_fks=False)


def column_kind(column: Column) -> str:
    """``int``, ``real``, ``text``, or ``fileid`` for a column that refers to ``files``."""
    if any(fk.target_fullname == "files.fileid" for fk in column.foreign_keys):
        return "fileid"
    if isinstance(column.type, Integer):
        return "int"
    if isinstance(column.type, Float):
        return "real"
    return "text"


def add_link_column(conn: Connection, table_name: str, column: str) -> None:
    """Add ``column`` to an existing user table as a nullable, indexed link to ``files``."""
    table = reflect_user_table(conn, table_name)
    check_name(column, "column")
    if column in table.c:
        raise RepoError(f"table {table_name} already has a column {column}")
    quote = conn.dialect.identifier_preparer.quote
    conn.exec_driver_sql(f"ALTER TABLE {quote(table_name)} ADD COLUMN {quote(column)} "
                         f"INTEGER NULL REFERENCES files (fileid)")
    table = reflect_user_table(conn, table_name)
    Index(index_name(table_name, column), table.c[column]).create(conn)
