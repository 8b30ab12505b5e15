"""Rows of a user table that match conditions, and a user's own read-only SELECT (docs/repo.md).

Parrot's BXGrid module formatted path components into SQL text; here no user text ever becomes
SQL. Every name is looked up in the reflected table before a statement is built (an unknown
name is a :class:`RepoError` listing the real ones), and every value travels as a bound
parameter, converted first to the column's type so that ``-w 'size > 9'`` compares numbers.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy
from sqlalchemy import Column, ColumnElement, Connection, Select, Table, func, select, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from treadle.errors import RepoError
from treadle.repo import schema
from treadle.repo.config import database_url
from treadle.repo.db import is_sqlite, make_engine
from treadle.repo.fetch import vpath

if TYPE_CHECKING:
    from treadle.repo.context import RepoContext

# longest first, so that "<=" is never read as "<" followed by a value "=..."
OPERATORS = ("is not", "!=", "<=", ">=", "is", "=", "<", ">", "~")
# the escape character of "~" patterns: "\%" and "\_" match a literal % and _
LIKE_ESCAPE = "\\"
# both databases store 64-bit integers; a bigger number could never match, and SQLite's
# driver would fail on it rather than say so
INT64 = (-(1 << 63), (1 << 63) - 1)
INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")

Condition = tuple[str, str, Any]


def select_rows(ctx: RepoContext, table: str, *, where: Iterable[Condition] = (),
                null: Iterable[str] = (), not_null: Iterable[str] = (),
                columns: Sequence[str] | None = None, order: str | None = None,
                limit: int | None = None) -> Iterator[dict[str, Any]]:
    """The rows of user table ``table`` that meet every condition, as dicts, in fileid order.

    ``where`` items are ``(column, operator, value)`` with an operator of :data:`OPERATORS`;
    ``null``/``not_null`` name columns that must be (or must not be) NULL. Each dict holds
    ``fileid``, the chosen ``columns`` (default: all) and ``vpath``. ``order`` sorts by one
    column first (NULLs last on both databases), then by fileid, so the order is reproducible.
    Names and values are checked here, before the first row is asked for; the rows then stream
    on a connection that stays open until the iterator is exhausted or closed.
    """
    if limit is not None and limit < 0:
        raise RepoError(f"the limit must be 0 or more, not {limit}")
    conditions = list(where)
    with ctx.engine.connect() as conn:
        reflected = schema.reflect_user_table(conn, table)
    stmt = (select(*_chosen_columns(reflected, columns))
            .where(*_clauses(reflected, conditions, null, not_null)))
    keys = [_column(reflected, order).nulls_last()] if order is not None else []
    stmt = stmt.order_by(*keys, reflected.c.fileid)
    if limit is not None:
        stmt = stmt.limit(limit)
    return _stream(ctx, stmt, conditions)


def _stream(ctx: RepoContext, stmt: Select[Any], conditions: list[Condition]) -> Iterator[dict[str, Any]]:
    with ctx.engine.connect() as conn, _like_matches_case(conn, conditions):
        for row in _run(conn.execution_options(stream_results=True), stmt):
            record = dict(row._mapping)
            record["vpath"] = vpath(ctx.config.mount, record["fileid"])
            yield record


def row_columns(ctx: RepoContext, table: str, columns: Sequence[str] | None = None) -> list[str]:
    """The keys of the dicts :func:`select_rows` gives, in order, known before any row is read."""
    with ctx.engine.connect() as conn:
        chosen = _chosen_columns(schema.reflect_user_table(conn, table), columns)
    return [column.name for column in chosen] + ["vpath"]


def count_rows(ctx: RepoContext, table: str, *, where: Iterable[Condition] = (),
               null: Iterable[str] = (), not_null: Iterable[str] = ()) -> int:
    """How many rows :func:`select_rows` would give for the same conditions, counted by the database."""
    conditions = list(where)
    with ctx.engine.connect() as conn:
        reflected = schema.reflect_user_table(conn, table)
        stmt = (select(func.count()).select_from(reflected)
                .where(*_clauses(reflected, conditions, null, not_null)))
        with _like_matches_case(conn, conditions):
            return int(_run(conn, stmt).scalar_one())


def run_sql(ctx: RepoContext, sql: str, params: Mapping[str, Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
    """A user's own statement, ``:NAME`` placeholders bound from ``params``: (column names, rows).

    It runs on an engine of its own opened read-only whatever ``ctx`` is, so the database
    itself refuses any write: SQLite opened ``mode=ro`` with ``query_only``, PostgreSQL in a
    ``READ ONLY`` transaction with a statement timeout. PostgreSQL would run several
    ``;``-separated statements sent without parameters (and a ``COMMIT`` among them would end
    the read-only transaction), so the statement is always prepared, which takes exactly one.
    SQLite would create the file an ``ATTACH`` or ``VACUUM INTO`` names, so they are refused.
    """
    stmt = text(sql)
    wanted = set(stmt.compile().params)
    unknown = sorted(set(params) - wanted)
    if unknown:
        raise RepoError(f"the statement has no placeholder :{', :'.join(unknown)}")
    missing = sorted(wanted - set(params))
    if missing:
        raise RepoError(f"no value for :{', :'.join(missing)}: give --param NAME=VALUE")
    engine = make_engine(database_url(ctx.dir, ctx.config), read_only=True)
    try:
        with engine.connect() as conn:
            driver: Any = conn.connection.driver_connection  # sqlite3's or psycopg's connection
            if is_sqlite(engine):
                driver.set_authorizer(_refuse_attach)
            else:
                driver.prepare_threshold = 0
                conn.execute(text("SET TRANSACTION READ ONLY"))
            result = _run(conn, stmt, dict(params))
            if not result.returns_rows:
                raise RepoError("the statement returns no rows: only a SELECT can be run here")
            names = list(result.keys())
            return names, [tuple(row) for row in result]
    finally:
        engine.dispose()


def _refuse_attach(action: int, *_: Any) -> int:
    """SQLite authorizer: ATTACH (and VACUUM INTO) would create the file they name, read-only or not."""
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _run(conn: Connection, stmt: Any, params: Mapping[str, Any] | None = None) -> Any:
    """Execute ``stmt``; a statement the database refuses is the user's mistake, told in one line."""
    try:
        return conn.execute(stmt, params)
    except SQLAlchemyError as e:
        detail = str(e.orig if isinstance(e, DBAPIError) else e).strip()
        raise RepoError(f"the database refused the statement: {detail.splitlines()[0]}") from None


@contextmanager
def _like_matches_case(conn: Connection, conditions: list[Condition]) -> Iterator[None]:
    """Make ``~`` case-sensitive on SQLite too, as it is on PostgreSQL and as ``=`` is on both.

    SQLite's LIKE ignores the case of ASCII letters unless this pragma is on; it is set only
    around a statement that uses ``~`` and set back after, since it belongs to the connection.
    """
    toggle = is_sqlite(conn.engine) and any(op == "~" for _, op, _ in conditions)
    if toggle:
        conn.exec_driver_sql("PRAGMA case_sensitive_like = ON")
    try:
        yield
    finally:
        if toggle:
            conn.exec_driver_sql("PRAGMA case_sensitive_like = OFF")


def _chosen_columns(table: Table, names: Sequence[str] | None) -> list[Column[Any]]:
    """fileid first, then the named columns (default: all) in the order given, each once."""
    if names is None:
        return list(table.c)
    chosen = [table.c.fileid]
    for name in names:
        column = _column(table, name)
        if column not in chosen:
            chosen.append(column)
    return chosen


def _column(table: Table, name: str) -> Column[Any]:
    """The reflected column called ``name``; anything else, ``vpath`` included, is refused."""
    if isinstance(name, str) and name in table.c:
        return table.c[name]
    hint = " (vpath is computed from fileid: use fileid)" if name == "vpath" else ""
    raise RepoError(f"table {table.name} has no column {name!r}{hint} "
                    f"(columns: {', '.join(c.name for c in table.c)})")


def _clauses(table: Table, where: list[Condition], null: Iterable[str],
             not_null: Iterable[str]) -> list[ColumnElement[bool]]:
    clauses = [_condition(table, name, op, value) for name, op, value in where]
    clauses += [_column(table, name).is_(None) for name in null]
    clauses += [_column(table, name).is_not(None) for name in not_null]
    return clauses


def _condition(table: Table, name: str, op: str, value: Any) -> ColumnElement[bool]:
    """One ``column OP value`` as SQL with the value bound, after converting it to the column's type."""
    column = _column(table, name)
    if op not in OPERATORS:
        raise RepoError(f"unknown operator {op!r} (operators: {' '.join(OPERATORS)})")
    if value is None:
        if op in ("=", "is"):
            return column.is_(None)
        if op in ("!=", "is not"):
            return column.is_not(None)
        raise RepoError(f"{table.name}.{name} {op} NULL is never true: use --null or --not-null")
    if op in ("is", "is not"):
        raise RepoError(f"{op!r} compares only with NULL, not {value!r}")
    if op == "~":
        pattern = _pattern(value)
        target = column if schema.column_kind(column) == "text" else sqlalchemy.cast(
            column, sqlalchemy.Text)
        return target.like(pattern, escape=LIKE_ESCAPE)
    bound = convert(schema.column_kind(column), value, f"{table.name}.{name}")
    comparisons = {"=": column.__eq__, "!=": column.__ne__, "<": column.__lt__,
                   "<=": column.__le__, ">": column.__gt__, ">=": column.__ge__}
    clause: ColumnElement[bool] = comparisons[op](bound)
    return clause


def convert(kind: str, value: Any, what: str) -> int | float | str:
    """``value`` as the Python type of a column of ``kind`` (int, real, text, fileid), or RepoError.

    The value is bound either way; converting first makes ``'10' > '9'`` compare as numbers
    and tells the user at once when a value can never match the column.
    """
    if kind in ("int", "fileid"):
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and INTEGER_TEXT.fullmatch(value.strip()):
            number = int(value.strip())
        else:
            raise RepoError(f"{what} holds integers: {value!r} is not one")
        if not INT64[0] <= number <= INT64[1]:
            raise RepoError(f"{what}: {value!r} is out of the 64-bit integer range")
        return number
    if kind == "real":
        try:
            real = float(value)
        except (TypeError, ValueError):
            raise RepoError(f"{what} holds numbers: {value!r} is not one") from None
        if not math.isfinite(real):
            raise RepoError(f"{what}: {value!r} is not a finite number")
        return real
    return _text(value, what)


def _text(value: Any, what: str) -> str:
    """A text value; NUL is refused because PostgreSQL cannot store or compare it."""
    result = str(value)
    if "\x00" in result:
        raise RepoError(f"{what}: a value cannot contain a NUL character")
    return result


def _pattern(value: Any) -> str:
    """A ``~`` pattern: ``%`` any run, ``_`` one character, ``\\`` makes the next one literal."""
    pattern = _text(value, "a ~ pattern")
    if re.search(r"(?<!\\)(\\\\)*\\$", pattern):
        raise RepoError(f"the pattern {pattern!r} ends with a lone \\ (write \\\\ for a backslash)")
    return pattern
