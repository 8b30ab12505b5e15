"""Where the files under a mount come from: a local repository, or a ``treadle repo serve``.

Both kinds answer the same few questions (docs/vfs.md): a file's metadata by fileid, an
object's by checksum, pages of fileids, user tables, a local replica usable in place, and the
object's bytes. A local repository is read through :mod:`treadle.repo` (which needs SQLAlchemy,
imported here only when such a source is first used); a service only through
:mod:`treadle.repo.client`, so a run with http mounts alone never imports a database driver.

Errors keep the repository's meaning: FileAbsent when the source said "no such thing",
StoreUnreachable when it could not say, RepoError when a service refused the token.
"""

from __future__ import annotations

import base64
import http.client
import shutil
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol
from urllib.parse import quote

from treadle.errors import FileAbsent, RepoDataError, RepoError, StoreUnreachable, VfsError
from treadle.repo.checksums import CHUNK, format_checksum
from treadle.repo.client import ServiceClient, describe_token_source, read_token

if TYPE_CHECKING:
    from treadle.repo.context import RepoContext

HTTP_MOUNT = "/bxgrid"  # an http source's default mount point (docs/vfs.md)
ANSWER_WAIT = 10.0  # longest wait for one answer of a service; the namespace retries until --timeout
META_THREADS = 8  # parallel metadata requests when a service's listing names fileids only


@dataclass(frozen=True)
class FileMeta:
    """What ``stat`` and verification need of a file: ``fileid`` is 0 for a bare object."""

    fileid: int
    checksum: str
    size: int
    extension: str
    mtime: float


@dataclass(frozen=True)
class Replica:
    """One replica of a local repository (``M/replica/<replicaid>``): its object and its file."""

    replicaid: int
    meta: FileMeta
    path: Path


class Source(Protocol):
    """One repository as the namespace sees it (docs/vfs.md, "What appears under M")."""

    default_mount: str
    label: str
    has_replicas: bool

    @property
    def uuid(self) -> str:
        """The repository's uuid (M's xattr ``user.treadle.repository``)."""
        ...

    def file(self, fileid: int) -> FileMeta:
        """File ``fileid``; FileAbsent, StoreUnreachable, or RepoError (token refused)."""
        ...

    def blob(self, hexdigest: str) -> FileMeta:
        """The object named by its SHA-256 ``hexdigest`` (fileid 0)."""
        ...

    def fileids(self, after: int, limit: int) -> tuple[list[tuple[int, str]], int | None]:
        """Up to ``limit`` (fileid, extension) pairs above ``after``; the next ``after`` or None."""
        ...

    def tables(self) -> list[str]:
        """The user tables' names, sorted."""
        ...

    def table_files(self, table: str, after: int,
                    limit: int) -> tuple[list[tuple[int, str]], int | None]:
        """Like :meth:`fileids` for the files table ``table`` names; FileAbsent for no such table."""
        ...

    def local_object(self, meta: FileMeta, skip: Sequence[Path] = ()) -> tuple[Path, bool] | None:
        """A local replica usable in place and whether it is trusted unhashed, else None.

        ``skip`` lists replicas the caller found wrong in this run.
        """
        ...

    def replica_failed(self, meta: FileMeta, path: Path, reason: str) -> str:
        """Record that the local replica at ``path`` held wrong bytes; what was done, for a log."""
        ...

    def replica(self, replicaid: int) -> Replica:
        """Replica ``replicaid`` of a local repository; FileAbsent when there is none."""
        ...

    def fetch(self, meta: FileMeta, out: BinaryIO) -> None:
        """Write the object's bytes into ``out``; the caller verifies them."""
        ...

    def close(self) -> None:
        """Give back what the source holds open (database connections), at the end of a run."""
        ...


def _epoch(moment: datetime) -> float:
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment).timestamp()


class LocalSource:
    """A repository directory, read through treadle.repo without the writer lock.

    The database is opened on first use, not here: nothing is contacted before the command
    starts. A replica that fails verification is marked SUSPECT (fetch.mark_suspect), as a
    reader of the repository may (docs/repo.md).
    """

    has_replicas = True

    def __init__(self, path: Path, timeout: float):
        from treadle.repo.config import is_repository, load_config

        if not is_repository(path):
            raise VfsError(f"{path}: not a repository (no readable repo.toml)")
        try:
            config = load_config(path)
        except (RepoError, OSError) as e:
            raise VfsError(f"{path}: {e}") from None
        self.path = path
        self.uuid = config.uuid
        self.default_mount = config.mount
        self.label = str(path)
        self._timeout = timeout
        self._ctx: RepoContext | None = None
        self._rows: _FileRows | None = None
        self._lock = threading.Lock()
        self._known: dict[int, FileMeta] = {}

    def _context(self) -> RepoContext:
        """The open repository; a schema it cannot read is RepoDataError (EIO), not a refusal."""
        with self._lock:
            return self._context_locked()

    def _context_locked(self) -> RepoContext:
        if self._ctx is None:
            from treadle.repo.context import open_context

            try:
                self._ctx = open_context(self.path)
            except (StoreUnreachable, RepoDataError):
                raise
            except RepoError as e:
                raise RepoDataError(str(e)) from None
        return self._ctx

    def file(self, fileid: int) -> FileMeta:
        known = self._known.get(fileid)
        if known is not None:
            return known
        from treadle.repo.fetch import LARGEST_FILEID

        if not 1 <= fileid <= LARGEST_FILEID:
            raise FileAbsent(f"no such file: fileid {fileid}")
        rows = self._file_rows()
        row = rows.one(fileid)
        if row is None or row[5] == "DELETED":
            raise FileAbsent(f"no such file: fileid {fileid}")
        meta = FileMeta(row[0], row[1], row[2], row[3] or "", rows.epoch(row[4]))
        self._known[fileid] = meta
        return meta

    def _file_rows(self) -> _FileRows:
        with self._lock:
            if self._rows is None:
                self._rows = _FileRows(self._context_locked())
            return self._rows

    def close(self) -> None:
        """Give back the database connections."""
        with self._lock:
            if self._rows is not None:
                self._rows.close()
                self._rows = None
            if self._ctx is not None:
                self._ctx.close()
                self._ctx = None

    def blob(self, hexdigest: str) -> FileMeta:
        from treadle.repo import fetch

        checksum = format_checksum(hexdigest)
        return FileMeta(0, checksum, fetch.object_size(self._context(), checksum), "", 0.0)

    def fileids(self, after: int, limit: int) -> tuple[list[tuple[int, str]], int | None]:
        rows = self._file_rows()
        return self._known_page(rows.page(after, limit), limit, rows.epoch)

    def _known_page(self, rows: Sequence[Any], limit: int,
                    epoch: Callable[[Any], float]) -> tuple[list[tuple[int, str]], int | None]:
        """A page of file rows (fileid, checksum, size, extension, created_at), each kept as
        known: a listing's attributes come with it, not one query per entry."""
        known = self._known
        for row in rows:
            if row[0] not in known:
                known[row[0]] = FileMeta(row[0], row[1], row[2], row[3] or "", epoch(row[4]))
        return _page([(row[0], row[3] or "") for row in rows], limit)

    def tables(self) -> list[str]:
        from treadle.repo.schema import user_tables

        with self._context().reading() as conn:
            return user_tables(conn)

    def table_files(self, table: str, after: int,
                    limit: int) -> tuple[list[tuple[int, str]], int | None]:
        from sqlalchemy import select

        from treadle.repo.schema import files, reflect_user_table

        with self._context().reading() as conn:
            try:
                user = reflect_user_table(conn, table)
            except RepoError as e:
                raise FileAbsent(str(e)) from None
            if "fileid" not in user.c:
                raise FileAbsent(f"table {table} has no fileid column")
            named = select(user.c.fileid).where(user.c.fileid > after).distinct().subquery()
            rows = conn.execute(
                select(files.c.fileid, files.c.checksum, files.c.size, files.c.extension,
                       files.c.created_at)
                .where(files.c.fileid.in_(select(named.c.fileid)), files.c.state == "OK")
                .order_by(files.c.fileid).limit(limit)).all()
        return self._known_page(rows, limit, _epoch)

    def local_object(self, meta: FileMeta, skip: Sequence[Path] = ()) -> tuple[Path, bool] | None:
        from treadle.repo import fetch

        for candidate in fetch.candidates(self._context(), meta.checksum):
            if candidate.path is not None and candidate.path not in skip \
                    and candidate.path.is_file():
                return candidate.path, candidate.trusted
        return None

    def replica_failed(self, meta: FileMeta, path: Path, reason: str) -> str:
        from treadle.repo import fetch

        ctx = self._context()
        for candidate in fetch.candidates(ctx, meta.checksum):
            if candidate.path == path:
                try:
                    fetch.mark_suspect(ctx, meta.checksum, candidate.row.storeid, reason)
                except StoreUnreachable as e:
                    return f"store {candidate.row.name}: {reason}; {e}"
                return f"store {candidate.row.name}: {reason}; replica marked SUSPECT"
        return f"{path}: {reason}"

    def replica(self, replicaid: int) -> Replica:
        from sqlalchemy import select

        from treadle.repo.schema import objects, replicas
        from treadle.repo.stores import DirStore

        ctx = self._context()
        with ctx.reading() as conn:
            row = conn.execute(
                select(replicas.c.checksum, replicas.c.storeid, objects.c.size)
                .join(objects, objects.c.checksum == replicas.c.checksum)
                .where(replicas.c.replicaid == replicaid)).first()
        if row is None:
            raise FileAbsent(f"no replica {replicaid}")
        store_row = next((s for s in ctx.stores() if s.storeid == row.storeid), None)
        store = ctx.open_store(store_row) if store_row is not None else None
        if not isinstance(store, DirStore):
            raise FileAbsent(f"replica {replicaid} is not in a local store")
        return Replica(replicaid, FileMeta(0, row.checksum, int(row.size), "", 0.0),
                       store.object_path(row.checksum))

    def fetch(self, meta: FileMeta, out: BinaryIO) -> None:
        """The object from the repository's own failover (fetch.open_verified): any store, tried
        until ``timeout``; a replica with wrong bytes is marked SUSPECT there."""
        from treadle.repo import fetch

        with fetch.open_verified(self._context(), meta.checksum, timeout=self._timeout) as stream:
            shutil.copyfileobj(stream, out, CHUNK)


class _FileRows:
    """Rows of ``files`` through one DBAPI connection and statements compiled once.

    A program's first look-up of a name waits for a file's row, and a listing for a page of
    them; through a SQLAlchemy connection one row took 0.4 ms, most of it the library's own
    bookkeeping, where the database needs a few microseconds. The statements are compiled
    once and run with their parameters bound; the connection comes from the repository's
    engine (with its pragmas and options) and is shared under a lock, so a run holds one
    connection however many threads ask. Any failure of the database is StoreUnreachable, as
    for every other read (docs/repo.md). Rows are (fileid, checksum, size, extension,
    created_at as the driver gives it, state); :meth:`epoch` reads the time.
    """

    def __init__(self, ctx: RepoContext):
        from sqlalchemy import bindparam, select

        from treadle.repo.schema import files

        dialect = ctx.engine.dialect
        columns = select(files.c.fileid, files.c.checksum, files.c.size, files.c.extension,
                         files.c.created_at, files.c.state)
        self._one = columns.where(files.c.fileid == bindparam("fileid")).compile(dialect=dialect)
        self._page = columns.where(files.c.fileid > bindparam("after"), files.c.state == "OK") \
            .order_by(files.c.fileid).limit(bindparam("limit")).compile(dialect=dialect)
        self._time: Callable[[Any], Any] | None = \
            files.c.created_at.type.dialect_impl(dialect).result_processor(dialect, None)
        self._engine = ctx.engine
        self._dbapi_error: type[Exception] = dialect.loaded_dbapi.Error
        self._raw: Any = None
        self._lock = threading.Lock()

    def epoch(self, created_at: Any) -> float:
        """Epoch seconds of a row's created_at."""
        return _epoch(self._time(created_at) if self._time is not None else created_at)

    def one(self, fileid: int) -> Any:
        """File ``fileid``'s row, or None."""
        rows = self._run(self._one, {"fileid": fileid})
        return rows[0] if rows else None

    def page(self, after: int, limit: int) -> list[Any]:
        """Up to ``limit`` rows of files in state OK above ``after``, by fileid."""
        return self._run(self._page, {"after": after, "limit": limit})

    def _run(self, compiled: Any, given: dict[str, int]) -> list[Any]:
        from sqlalchemy.exc import DBAPIError

        params = {**compiled.params, **given}
        order = compiled.positiontup
        args = tuple(params[name] for name in order) if order else params
        with self._lock:
            try:
                if self._raw is None:
                    self._raw = self._engine.raw_connection()
                cursor = self._raw.cursor()
                try:
                    cursor.execute(compiled.string, args)
                    rows = cursor.fetchall()
                finally:
                    cursor.close()
                self._raw.rollback()  # no transaction left open between questions
            except (DBAPIError, self._dbapi_error) as e:
                if self._raw is not None:  # broken or not, the next question starts afresh
                    self._raw.invalidate()
                    self._raw = None
                raise StoreUnreachable(f"cannot read the repository database: {e}") from None
        return list(rows)

    def close(self) -> None:
        with self._lock:
            if self._raw is not None:
                self._raw.close()
                self._raw = None


class HttpSource:
    """A ``treadle repo serve`` at ``url``, through :class:`ServiceClient` only.

    The token is read when the server is first contacted (docs/vfs.md). 401 and 403 come out
    of the client as RepoError naming the server and where the token came from.
    """

    has_replicas = False

    def __init__(self, url: str, token_file: str | None, timeout: float):
        self.label = url.rstrip("/")
        self.default_mount = HTTP_MOUNT
        self._uuid = ""
        self._url = url
        self._token_file = token_file
        self._timeout = timeout
        self._client: ServiceClient | None = None
        self._lock = threading.Lock()
        self._known: dict[int, FileMeta] = {}
        ServiceClient(url)  # a malformed URL is refused now, before the command starts

    def _service(self) -> ServiceClient:
        with self._lock:
            if self._client is None:
                self._client = ServiceClient(
                    self._url, read_token(self._token_file), min(self._timeout, ANSWER_WAIT),
                    token_source=describe_token_source(self._token_file))
            return self._client

    @property
    def uuid(self) -> str:
        """The service's repository uuid, asked of it (``/v1/health``) when first needed."""
        if not self._uuid:
            uuid = self._service().health().get("uuid")
            if not isinstance(uuid, str) or not uuid:
                raise StoreUnreachable(f"{self.label}: /v1/health names no repository uuid")
            self._uuid = uuid
        return self._uuid

    def _get(self, path: str) -> dict[str, Any]:
        response = self._service().request("GET", path)
        try:
            data = _json_object(response.read(), self.label + path)
        except (OSError, http.client.HTTPException) as e:
            raise StoreUnreachable(f"{self.label}{path}: {e}") from None
        finally:
            response.close()
        return data

    def file(self, fileid: int) -> FileMeta:
        known = self._known.get(fileid)
        if known is not None:
            return known
        if fileid < 1:
            raise FileAbsent(f"no such file: fileid {fileid}")
        meta = self._parse_meta(self._service().meta(fileid), f"fileid {fileid}")
        self._known[fileid] = meta
        return meta

    def blob(self, hexdigest: str) -> FileMeta:
        checksum = format_checksum(hexdigest)
        response = self._service().request("HEAD", f"/v1/blobs/sha256/{hexdigest}")
        try:
            length = response.getheader("Content-Length")
        finally:
            response.close()
        if length is None or not length.isdigit():
            raise StoreUnreachable(f"{self.label}: no size for {checksum}")
        return FileMeta(0, checksum, int(length), "", 0.0)

    def fileids(self, after: int, limit: int) -> tuple[list[tuple[int, str]], int | None]:
        data = self._get(f"/v1/list/fileid?after={after}&limit={limit}")
        if "files" in data:
            return self._listed(_list(data, self.label, "files")), _next(data)
        try:  # a service older than the listing's metadata
            ids = [int(i) for i in _list(data, self.label)]
        except (ValueError, TypeError) as e:
            raise StoreUnreachable(f"{self.label}: a bad listing: {e}") from None
        return self._metas(ids), _next(data)

    def tables(self) -> list[str]:
        try:
            data = self._get("/v1/list/tables")
        except FileAbsent:
            return []  # a service that cannot list its tables: names still look up
        return sorted(str(name) for name in _list(data, self.label, "tables"))

    def table_files(self, table: str, after: int,
                    limit: int) -> tuple[list[tuple[int, str]], int | None]:
        data = self._get(f"/v1/list/table/{quote(table, safe='')}?after={after}&limit={limit}")
        entries = _list(data, self.label)
        if all(isinstance(e, dict) and "checksum" in e for e in entries):
            return self._listed(entries), _next(data)
        try:  # a service older than the listing's metadata
            ids = [int(e["fileid"]) for e in entries]
        except (KeyError, ValueError, TypeError) as e:
            raise StoreUnreachable(f"{self.label}: a bad table listing: {e}") from None
        return self._metas(ids), _next(data)

    def _listed(self, entries: list[Any]) -> list[tuple[int, str]]:
        """(fileid, extension) of a listing whose entries carry their metadata, each kept for
        the run: a directory listed over HTTP costs one request per page, not per file."""
        metas = [self._parse_meta(entry, "a listing") for entry in entries]
        for meta in metas:
            self._known[meta.fileid] = meta
        return [(m.fileid, m.extension) for m in metas]

    def _parse_meta(self, data: Any, what: str) -> FileMeta:
        """FileMeta from a service's JSON (``/v1/meta`` or a listing's entry)."""
        try:
            return FileMeta(int(data["fileid"]), str(data["checksum"]), int(data["size"]),
                            str(data["extension"] or ""),
                            _epoch(datetime.fromisoformat(str(data["created_at"]))))
        except (KeyError, ValueError, TypeError) as e:
            raise StoreUnreachable(f"{self.label}: a bad answer for {what}: {e}") from None

    def _metas(self, ids: list[int]) -> list[tuple[int, str]]:
        """(fileid, extension) of each of ``ids``: a service's listings carry no attributes, so
        its metadata is fetched in parallel and kept for the run."""
        with ThreadPoolExecutor(META_THREADS) as pool:
            metas = list(pool.map(self.file, ids))
        return [(m.fileid, m.extension) for m in metas]

    def local_object(self, meta: FileMeta, skip: Sequence[Path] = ()) -> tuple[Path, bool] | None:
        return None

    def close(self) -> None:
        """Nothing stays open: each request's connection closes with its response."""

    def replica_failed(self, meta: FileMeta, path: Path, reason: str) -> str:
        return f"{path}: {reason}"

    def replica(self, replicaid: int) -> Replica:
        raise FileAbsent(f"{self.label} shows no replicas")

    def fetch(self, meta: FileMeta, out: BinaryIO) -> None:
        service = self._service()
        if meta.fileid:
            stream, headers = service.open_file(meta.fileid)
        else:
            stream, headers = service.open_blob(meta.checksum)
        try:
            _check_digest(headers.get("repr-digest"), meta.checksum, self.label)
            while True:
                try:
                    chunk = stream.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise StoreUnreachable(f"{self.label}: {e or type(e).__name__}") from None
                if not chunk:
                    return
                out.write(chunk)  # the cache's disk: its OSError (ENOSPC) is the cache's
        finally:
            stream.close()


def _check_digest(header: str | None, checksum: str, where: str) -> None:
    """RepoDataError when the service's ``Repr-Digest`` names other bytes than ``checksum``.

    The body is hashed anyway (the cache verifies every fill); this catches a service that
    answers for another object before any byte is written.
    """
    if header is None:
        return
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name.strip().lower() != "sha-256":
            continue
        try:
            digest = base64.b64decode(value.strip().strip(":"), validate=True).hex()
        except ValueError:
            raise RepoDataError(f"{where}: a malformed Repr-Digest {header!r}") from None
        if format_checksum(digest) != checksum:
            raise RepoDataError(f"{where}: the service sent sha256:{digest} for {checksum}")


def _json_object(body: bytes, where: str) -> dict[str, Any]:
    import json

    try:
        data = json.loads(body)
    except ValueError:
        raise StoreUnreachable(f"{where}: a bad answer (not JSON)") from None
    if not isinstance(data, dict):
        raise StoreUnreachable(f"{where}: a bad answer (not a JSON object)")
    return data


def _list(data: dict[str, Any], where: str, key: str = "fileids") -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        raise StoreUnreachable(f"{where}: a bad listing (no {key})")
    return value


def _next(data: dict[str, Any]) -> int | None:
    value = data.get("next")
    return int(value) if value is not None else None


def _page(rows: list[tuple[int, str]], limit: int) -> tuple[list[tuple[int, str]], int | None]:
    """A page and the ``after`` of the next one (None when this page was not full)."""
    return rows, (rows[-1][0] if len(rows) == limit else None)


def open_source(spec: str, *, token_file: str | None, timeout: float) -> Source:
    """The source a ``--mount M=SOURCE`` names: ``http(s)://...``, ``repo:PATH`` or a directory.

    Nothing remote is contacted here; a local repository must have a readable repo.toml, else
    VfsError (exit 125).
    """
    if spec.startswith(("http://", "https://")):
        try:
            return HttpSource(spec, token_file, timeout)
        except RepoError as e:
            raise VfsError(str(e)) from None
    return LocalSource(Path(spec.removeprefix("repo:")).expanduser().absolute(), timeout)
