"""SQL datasets through SQLAlchemy Core, SQLite included (docs/weaver.md, "SQL datasets").

Filter values only ever travel as bound parameters. Table, field and ordering
names are checked against the reflected table before any SQL is built, so no
text from a script reaches the database as SQL.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from treadle.errors import RepoError, require_extra
from treadle.weave.datasets import Dataset, Query
from treadle.weave.diagnostics import error
from treadle.weave.nest import CurrentScript, File

log = logging.getLogger("treadle.weave.data")

DEFAULT_QUERY_FORMAT = "SELECT {fields} FROM {table} WHERE {filters}"
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
REPO_PREFIX = "repo:"


class Database(NamedTuple):
    """Where an SQL dataset's rows come from, as :func:`resolve_database` found it."""

    url: str
    base_dir: str | None  # relative paths of the rows are taken from here (None: the cwd)
    mount: str | None = None  # set when the database is a repository's: the prefix of vpaths


def resolve_database(host: str | None, name: str | None) -> Database:
    """The database of a host/alias/repository/file/name, first match wins (docs/weaver.md).

    A repository (a directory holding repo.toml, or ``repo:PATH``, given directly or as the
    target of an alias) is recognised before a plain file; then ``name`` is ignored.
    treadle.repo is imported here, not with treadle.weave: scripts without SQL never load it.
    """
    from treadle.repo.config import is_repository

    script = CurrentScript()
    if host and host.startswith(REPO_PREFIX):
        return _repository(host[len(REPO_PREFIX):])
    if host and "://" in host:
        from sqlalchemy.engine import make_url

        url = make_url(host)
        if url.database is None and name:
            url = url.set(database=name)
        if url.get_backend_name() == "sqlite" and url.database:
            return Database(url.render_as_string(hide_password=False),
                            os.path.dirname(os.path.abspath(url.database)))
        return Database(url.render_as_string(hide_password=False), None)
    if host:
        bound = script.config.db_aliases.get(host) or os.environ.get(f"TREADLE_DB_{host.upper()}")
        if bound:
            if bound.startswith(REPO_PREFIX) or is_repository(Path(bound)):
                return _repository(bound.removeprefix(REPO_PREFIX))
            return resolve_database(bound if "://" in bound else f"sqlite:///{bound}", name)
        if is_repository(Path(host)):
            return _repository(host)
        if os.path.isfile(host):
            path = os.path.abspath(host)
            return Database(f"sqlite:///{path}", os.path.dirname(path))
    searched = []
    if name:
        for directory in (script.directory, os.getcwd()):
            for suffix in SQLITE_SUFFIXES:
                candidate = os.path.join(directory, name + suffix)
                searched.append(candidate)
                if os.path.isfile(candidate):
                    return Database(f"sqlite:///{candidate}", directory)
    what = f"host {host!r}" if host else "no host"
    tried = f", and none of {', '.join(searched)} exists" if searched else ""
    raise error(
        f"cannot find the database ({what}, name {name!r}): it is no URL, no bound alias, no "
        f"repository, no file{tried}. "
        f"Bind an alias with --db {host or 'ALIAS'}=URL or TREADLE_DB_{(host or 'ALIAS').upper()}"
        f"=URL, or give a SQLAlchemy URL"
    )


def _repository(path: str) -> Database:
    """A repository's database: the URL of its repo.toml (a relative SQLite path resolved)."""
    from treadle.repo.config import database_url, load_config

    repo_dir = Path(path).absolute()
    try:
        config = load_config(repo_dir)
    except RepoError as e:
        raise error(str(e)) from None
    return Database(database_url(repo_dir, config), str(repo_dir), config.mount)


class SQLDataset(Dataset):
    """Rows of a table as Files; each File carries its row (``f.row``, ``f.color``)."""

    def __init__(self, host: str | None = None, name: str | None = None,
                 table: str | None = None, user: str | None = None,
                 password: str | None = None, fields: list[str] | None = None,
                 query_format: str | None = None, keep_alive: bool = False,
                 path: str | Callable[[Any, Any], str] | None = None, order_by: Any = None):
        super().__init__()
        require_extra("sqlalchemy", "sql")
        if not table:
            raise error("an SQL dataset needs a table")
        self._host = host
        self._dbname = name
        self._table_name = table
        self._user = user
        self._password = password
        self._fields = fields
        self._query_format = query_format or DEFAULT_QUERY_FORMAT
        self._keep_alive = keep_alive
        self._path = path
        self._order_by = order_by
        self._url, self._base_dir, self._mount = self._find_database()
        self._engine: Any = None
        self._table: Any = None
        self._connection: Any = None

    def _find_database(self) -> Database:
        return resolve_database(self._host, self._dbname)

    def _sql_source(self) -> SQLDataset:
        return self

    # --- connection ----------------------------------------------------------------------
    def connect(self) -> Any:
        """Open the engine (once per compile) and reflect the table (once)."""
        if self._engine is None:
            from sqlalchemy import MetaData, Table
            from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

            script = CurrentScript()
            key = self._url if self._mount is None else REPO_PREFIX + self._url
            engine = script.sql_engines.get(key)
            try:
                if engine is None:
                    engine = script.sql_engines[key] = self._new_engine()
                self._table = Table(self._table_name, MetaData(), autoload_with=engine)
            except NoSuchTableError:
                raise error(f"the database {self._display_url()} has no table "
                            f"{self._table_name!r}") from None
            except SQLAlchemyError as e:
                raise error(f"cannot open {self._display_url()}: {e.__class__.__name__}: "
                            f"{str(e).splitlines()[0]}") from None
            self._engine = engine
        if self._keep_alive and self._connection is None:
            self._connection = self._engine.connect()
        return self._engine

    def _new_engine(self) -> Any:
        """A repository's database is opened read-only: a compile only ever reads it."""
        if self._mount is not None:
            from treadle.repo.db import make_engine

            return make_engine(self._url, read_only=True)
        from sqlalchemy import create_engine

        return create_engine(self._url)

    def disconnect(self) -> None:
        """Close the kept connection, if any."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _display_url(self) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self._url).render_as_string(hide_password=True)

    def _column(self, name: str) -> Any:
        cols = self._table.c
        if not isinstance(name, str) or name not in cols:
            hint = (" (vpath is computed from fileid: filter on fileid)"
                    if name == "vpath" and self._mount is not None else "")
            raise error(f"table {self._table_name!r} has no field {name!r}{hint}; its fields are "
                        f"{', '.join(c.name for c in cols)}")
        return cols[name]

    def _column_of(self, subquery: Any, name: str) -> Any:
        """The column called ``name`` of a subquery of this table (validated like ``_column``)."""
        return subquery.c[self._column(name).name]

    def _order(self, order_by: Any) -> list[Any]:
        if order_by is None:
            return list(self._table.primary_key.columns)
        names = [order_by] if isinstance(order_by, str) else list(order_by)
        return [self._column(n) for n in names]

    # --- queries -------------------------------------------------------------------------
    def _generate(self) -> Iterator[File]:
        yield from self._run_query(None)

    def _run_query(self, query: Query | None) -> Iterator[File]:
        """Run this dataset (or a chain of Queries over it) as one bound SQL statement."""
        from sqlalchemy import select

        self.connect()
        chain: list[Query] = []
        q: Any = query
        while isinstance(q, Query):
            chain.append(q)
            q = q._dataset
        chain.reverse()
        outer = chain[-1] if chain else None
        fields = (outer._fields if outer and outer._fields else None) or self._fields
        path = (outer._path if outer and outer._path is not None else None) or self._path
        order_by = (outer._order_by if outer and outer._order_by is not None else None)
        if order_by is None:
            order_by = self._order_by
        columns = [self._column(n) for n in fields] if fields else list(self._table.c)
        with_vpath = self._mount is not None and "fileid" in self._table.c
        if with_vpath and "fileid" not in [c.name for c in columns]:
            columns.append(self._table.c["fileid"])  # every row of a repository carries its vpath
        if path is None and "path" not in [c.name for c in columns]:
            if "path" in self._table.c:
                columns.append(self._table.c["path"])
            elif not with_vpath:
                neither = " nor a 'fileid'" if self._mount is not None else ""
                raise error(f"table {self._table_name!r} has no 'path'{neither} column; give "
                            f"path= (a template such as '/data/{{id}}' or a function); its "
                            f"fields are {', '.join(c.name for c in self._table.c)}")
        order = self._order(order_by)
        if self._query_format != DEFAULT_QUERY_FORMAT:
            rows = self._run_custom(columns, chain, order)
        else:
            stmt = select(*columns)
            col: Callable[[str], Any]
            for i, step in enumerate(chain):
                if i > 0 and chain[i - 1]._limit is not None:
                    sub = stmt.subquery()
                    stmt = select(*[sub.c[c.name] for c in columns])
                    col = partial(self._column_of, sub)
                    order = [sub.c[c.name] for c in order]
                else:
                    col = self._column
                for flt in step._filters:
                    stmt = stmt.where(flt.sql(col))
                stmt = stmt.order_by(*order)
                if step._limit is not None:
                    stmt = stmt.limit(step._limit)
            if not chain:
                stmt = stmt.order_by(*order)
            rows = self._execute(stmt)
        for row in rows:
            yield self._file(dict(row._mapping), path)

    def _execute(self, stmt: Any) -> Iterator[Any]:
        from sqlalchemy.exc import SQLAlchemyError

        log.debug("%s: %s", self._display_url(), " ".join(str(stmt).split()))
        try:
            if self._connection is not None:
                yield from self._connection.execute(stmt)
                return
            with self._engine.connect() as conn:
                yield from conn.execution_options(stream_results=True).execute(stmt)
        except SQLAlchemyError as e:
            raise error(f"query on {self._display_url()} failed: {str(e).splitlines()[0]}") \
                from None

    def _run_custom(self, columns: list[Any], chain: list[Query], order: list[Any]) -> Any:
        """A user's ``query_format``: names are validated and quoted, values still bound."""
        from sqlalchemy import and_, text, true

        if any(q._limit is not None for q in chain[:-1]):
            raise error("query_format cannot combine with a limit on an inner Query")
        dialect = self._engine.dialect
        prep = dialect.identifier_preparer
        clause = and_(true(), *[f.sql(self._column) for q in chain for f in q._filters])
        compiled = clause.compile(compile_kwargs={"render_postcompile": True})
        params = compiled.params
        sql = self._query_format.format(
            fields=", ".join(prep.quote(c.name) for c in columns),
            table=prep.quote(self._table_name), filters=str(compiled))
        limit = chain[-1]._limit if chain else None
        stmt = text(sql).bindparams(**params).columns(*columns)
        stmt_rows = self._execute(stmt)
        count = 0
        for row in stmt_rows:
            if limit is not None and count >= limit:
                break
            count += 1
            yield row

    def _file(self, row: dict[str, Any], path: Any) -> File:
        if self._mount is not None and row.get("fileid") is not None:
            from treadle.repo.fetch import vpath  # SQLAlchemy is there: the rows came through it

            row["vpath"] = vpath(self._mount, row["fileid"])
        if path is None:
            value = row["path"] if "path" in row else row.get("vpath")
        elif callable(path):
            value = path(self, row)
        else:
            try:
                value = str(path).format(**row)
            except KeyError as e:
                raise error(f"path template {path!r} names {e.args[0]!r}, which is not a "
                            f"field of {self._table_name!r}") from None
        if value is None or value == "":
            raise error(f"a row of {self._table_name!r} has no path: {row}")
        value = str(value)
        if not os.path.isabs(value) and self._base_dir is not None:
            value = os.path.join(self._base_dir, value)
        return File(value, self._nest, row=row)

    def __repr__(self) -> str:
        return f"SQLDataset({self._display_url()!r}, table={self._table_name!r})"


SQLDataSet = SQLDataset


class MySQLDataset(SQLDataset):
    """``mysql+pymysql://user:password@host/name`` (driver: the treadle[mysql] extra)."""

    def _find_database(self) -> Database:
        from sqlalchemy.engine import URL

        url = URL.create("mysql+pymysql", username=self._user, password=self._password,
                         host=self._host, database=self._dbname)
        return Database(url.render_as_string(hide_password=False), None)
