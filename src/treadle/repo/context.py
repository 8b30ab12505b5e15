"""An open repository: its directory, settings, database engine and, for writers, the lock.

Every command and module of treadle.repo works on a RepoContext, so opening a repository
(reading repo.toml, checking the schema version, locking) is done in one place (docs/repo.md).
"""

from __future__ import annotations

import dataclasses
import shutil
import uuid as uuidlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from treadle.errors import RepoError, StoreUnreachable
from treadle.repo.config import SQLITE_PREFIX, RepoConfig, database_url, load_config, write_config
from treadle.repo.db import is_sqlite, make_engine
from treadle.repo.lock import WriterLock
from treadle.repo.migrations import check_version, create_schema
from treadle.repo.stores import (
    Store,
    StoreRow,
    add_store,
    check_store_name,
    check_store_url,
    dir_store,
    load_stores,
)

DEFAULT_STORE = ("a", "dir:stores/a")


@contextmanager
def database_errors() -> Iterator[None]:
    """Any failure of the database driver as StoreUnreachable, for code that reads the database."""
    try:
        yield
    except DBAPIError as e:
        raise StoreUnreachable(f"cannot read the repository database: {e.orig}") from None


@dataclass
class RepoContext:
    """One open repository; ``lock`` is set when it was opened for writing."""

    dir: Path
    config: RepoConfig
    engine: Engine
    lock: WriterLock | None

    def stores(self) -> list[StoreRow]:
        """The stores, read fresh from the database (another host may have changed them)."""
        with self.engine.connect() as conn:
            return load_stores(conn)

    def open_store(self, row: StoreRow) -> Store:
        """The Store for ``row``: ``dir:PATH``, or ``http(s)://`` with the client token from the
        environment (the HTTP client is imported only by the repositories that use it)."""
        if row.url.startswith(("http://", "https://")):
            from treadle.repo.client import read_token
            from treadle.repo.remote import HttpStore
            store: Store = HttpStore(row.name, row.url, read_token(), repo_uuid=self.config.uuid)
            return store
        return dir_store(row, self.dir, self.config.uuid)

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection whose failures read as "unreachable" (StoreUnreachable), never as "no such
        file" nor as treadle's bug: a damaged database file is a DatabaseError, not only an
        OperationalError, and a reader (get, serve, vfs) must answer EIO/503 for both."""
        with database_errors(), self.engine.connect() as conn:
            yield conn

    def close(self) -> None:
        """Release the writer lock (if held) and the database connections."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        self.engine.dispose()

    def __enter__(self) -> RepoContext:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _engine_for(repo_dir: Path, config: RepoConfig, read_only: bool) -> Engine:
    url = database_url(repo_dir, config)
    if url.startswith(SQLITE_PREFIX) and not Path(url[len(SQLITE_PREFIX):]).is_file():
        # opening would create an empty database and hide the loss
        raise StoreUnreachable(f"{repo_dir}: the database {url[len(SQLITE_PREFIX):]} is missing")
    return make_engine(url, read_only=read_only)


def open_context(path: Path | str, *, write: bool = False, wait: float = 0.0,
                 read_only: bool = False) -> RepoContext:
    """Open the repository at ``path``; ``write`` takes the writer lock (waiting up to ``wait`` s).

    ``read_only`` makes the database itself refuse writes (for users' own SQL).
    """
    repo_dir = Path(path)
    config = load_config(repo_dir)
    engine = _engine_for(repo_dir, config, read_only)
    lock = None
    try:
        try:
            with engine.connect() as conn:
                check_version(conn, repo=str(path))
        except OperationalError as e:
            raise StoreUnreachable(f"{repo_dir}: cannot read the database: {e.orig}") from None
        if write:
            lock = WriterLock(repo_dir, engine, config.uuid, wait)
            lock.acquire()
    except BaseException:
        engine.dispose()
        raise
    return RepoContext(dir=repo_dir, config=config, engine=engine, lock=lock)


def _check_new_directory(repo_dir: Path) -> None:
    if repo_dir.exists() and (not repo_dir.is_dir() or any(repo_dir.iterdir())):
        raise RepoError(f"{repo_dir}: not an empty directory; a repository needs a new one")


def _create_database(repo_dir: Path, config: RepoConfig,
                     wanted: Sequence[tuple[str, str]]) -> tuple[Engine, WriterLock]:
    engine = make_engine(database_url(repo_dir, config))
    try:
        if is_sqlite(engine):
            raw = engine.raw_connection()
            try:
                raw.cursor().execute("PRAGMA journal_mode=WAL")  # persistent: set once, here
            finally:
                raw.close()
        with engine.begin() as conn:
            create_schema(conn)
            for name, url in wanted:
                add_store(conn, repo_dir, config.uuid, name, url)
        lock = WriterLock(repo_dir, engine, config.uuid)
        lock.acquire()
    except OperationalError as e:
        engine.dispose()
        raise StoreUnreachable(f"{repo_dir}: cannot create the database: {e.orig}") from None
    except BaseException:
        engine.dispose()
        raise
    return engine, lock


def _remove_contents(repo_dir: Path, keep_dir: bool) -> None:
    if not keep_dir:
        shutil.rmtree(repo_dir, ignore_errors=True)
        return
    for child in repo_dir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def init_repository(path: Path | str, *, database: str | None = None,
                    stores: Sequence[tuple[str, str]] = (), replicas: int = 1,
                    min_replicas: int = 1, mount: str = "/bxgrid") -> RepoContext:
    """Make a repository in a new or empty directory and return it open for writing.

    Without ``stores`` it gets one, ``a`` = ``dir:stores/a``. Stores get storeids in the
    order given.
    """
    repo_dir = Path(path)
    _check_new_directory(repo_dir)
    wanted = list(stores) or [DEFAULT_STORE]
    for name, url in wanted:  # all checked before anything is made
        check_store_name(name)
        check_store_url(url)
    names = [name for name, _ in wanted]
    if len(set(names)) < len(names):
        raise RepoError(f"store names must differ (have {', '.join(names)})")
    if not 1 <= min_replicas <= replicas:
        raise RepoError(f"need 1 <= min-replicas <= replicas (have {min_replicas} and {replicas})")
    if min_replicas > len(wanted):
        raise RepoError(f"min-replicas {min_replicas} needs at least that many stores "
                        f"(have {len(wanted)})")
    if not mount.startswith("/"):
        raise RepoError(f"the mount {mount!r} must be an absolute path")
    config = RepoConfig(uuid=str(uuidlib.uuid4()), replicas=replicas, min_replicas=min_replicas,
                        mount=mount)
    if database:
        config = dataclasses.replace(config, database=database)
    existed = repo_dir.exists()
    repo_dir.mkdir(parents=True, exist_ok=True)
    try:
        write_config(repo_dir, config)
        engine, lock = _create_database(repo_dir, config, wanted)
    except BaseException:
        _remove_contents(repo_dir, existed)  # it was empty: all of it is this init's
        raise
    return RepoContext(dir=repo_dir, config=config, engine=engine, lock=lock)
