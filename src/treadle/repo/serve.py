"""``treadle repo serve``: the asyncio server around the sans-I/O handler of ``http.py``.

This module moves bytes and nothing else decides anything here: the handler says what to
answer, :mod:`treadle.repo.fetch` says which replica to read and whether it can be trusted
unhashed (docs/repo.md, "Which copies are trusted without rehashing"), and this module reads
sockets, runs database look-ups in a thread pool and sends object bodies: ``loop.sendfile`` for a trusted replica in a dir store,
hashed-as-sent for anything else, cut short before its last byte when the hash is wrong so that
a client that does not verify still never gets a complete wrong body (docs/repo.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import ssl
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

import h11
from sqlalchemy import func, select

from treadle.errors import FileAbsent, RepoDataError, RepoError, StoreUnreachable
from treadle.repo import fetch
from treadle.repo.checksums import CHUNK
from treadle.repo.config import FORMAT
from treadle.repo.context import RepoContext, database_errors
from treadle.repo.http import (
    MAX_HEAD,
    Handler,
    ObjectBody,
    ObjectInfo,
    Plan,
    Upload,
    error_plan,
    new_connection,
    stored_plan,
)
from treadle.repo.migrations import CURRENT_VERSION
from treadle.repo.schema import files, reflect_user_table, replicas, user_tables
from treadle.repo.stores import DirStore, fsync_dirs, read_store_toml
from treadle.repo.tokens import TokenChecker, tokens_path

HEAD_TIMEOUT = 10.0  # a request head must be complete this long after its first byte
IDLE_TIMEOUT = 60.0  # a keep-alive connection with no request in flight closes after this
DRAIN_TIMEOUT = 10.0  # on SIGINT/SIGTERM, transfers in flight may finish for this long
READ_SIZE = 64 * 1024
SMALL_SEGMENT = 64 * 1024  # a segment this small is read and written; sendfile costs more
INFO_CACHE_SIZE = 4096
# How long a request may wait for a replica's bytes, across fetch's retries, before it is a 503:
# the client is waiting, and a vfs or get client retries on its own (docs/repo.md, "Get")
FETCH_TIMEOUT = 2.0
# A replica chosen for an object is used again for this long without asking the database; a
# replica marked SUSPECT or a store set down meanwhile is noticed once it passes
RECENT_TTL = 5.0


class NotCached(Exception):
    """A look-up in RepoLookup.cache_only() mode that would need the database."""


class _Flag(threading.local):
    active = False


class RepoLookup:
    """The handler's questions answered from a repository's database.

    File rows never change once written, so successful look-ups stay in a small LRU cache;
    absent answers are not cached, so a new ingest shows at once.
    """

    accepts_put = False

    def __init__(self, ctx: RepoContext):
        self.ctx = ctx
        self._infos: OrderedDict[int, fetch.FileInfo] = OrderedDict()
        self._lock = threading.Lock()
        self._cache_only = _Flag()

    @contextlib.contextmanager
    def cache_only(self) -> Iterator[None]:
        """Within: answer from the cache or raise NotCached, never touch the database.

        Lets the server plan a request for a known file in the event loop, without a thread.
        """
        self._cache_only.active = True
        try:
            yield
        finally:
            self._cache_only.active = False

    def _file_info(self, fileid: int) -> fetch.FileInfo:
        with self._lock:
            info = self._infos.get(fileid)
            if info is not None:
                self._infos.move_to_end(fileid)
                return info
        if self._cache_only.active:
            raise NotCached()
        with database_errors():
            info = fetch.file_info(self.ctx, fileid)
        with self._lock:
            self._infos[fileid] = info
            while len(self._infos) > INFO_CACHE_SIZE:
                self._infos.popitem(last=False)
        return info

    def health(self) -> dict[str, Any]:
        with self.ctx.reading() as conn:
            conn.execute(select(func.count()).select_from(files).where(files.c.fileid == 0))
        return {"status": "ok", "uuid": self.ctx.config.uuid, "format": self.ctx.config.format,
                "schema": CURRENT_VERSION, "mount": self.ctx.config.mount}

    def file(self, fileid: int) -> ObjectInfo:
        info = self._file_info(fileid)
        return ObjectInfo(info.checksum, info.size, info.media_type, info.created_at)

    def blob(self, checksum: str) -> ObjectInfo:
        with database_errors():
            return ObjectInfo(checksum, fetch.object_size(self.ctx, checksum))

    def meta(self, fileid: int) -> dict[str, Any]:
        info = self._file_info(fileid)
        with self.ctx.reading() as conn:
            ok = conn.execute(select(func.count()).select_from(replicas).where(
                replicas.c.checksum == info.checksum, replicas.c.state == "OK")).scalar_one()
        return {"fileid": info.fileid, "size": info.size, "checksum": info.checksum,
                "extension": info.extension, "media_type": info.media_type,
                "created_at": info.created_at.isoformat(), "state": info.state,
                "replicas_ok": ok}

    def fileids(self, after: int, limit: int) -> list[dict[str, Any]]:
        with self.ctx.reading() as conn:
            rows = conn.execute(
                select(*_LISTED).where(files.c.fileid > after, files.c.state == "OK")
                .order_by(files.c.fileid).limit(limit)).all()
        return [_listed(row) for row in rows]

    def table_fileids(self, table: str, after: int, limit: int) -> list[dict[str, Any]]:
        with self.ctx.reading() as conn:
            try:
                user = reflect_user_table(conn, table)
            except RepoError as e:
                raise FileAbsent(str(e)) from None
            rows = conn.execute(
                select(*_LISTED)
                .join(files, files.c.fileid == user.c.fileid)
                .where(user.c.fileid > after, files.c.state == "OK")
                .order_by(user.c.fileid).limit(limit)).all()
        return [_listed(row) for row in rows]

    def tables(self) -> list[str]:
        with self.ctx.reading() as conn:
            return user_tables(conn)


_LISTED = (files.c.fileid, files.c.size, files.c.checksum, files.c.extension, files.c.created_at)


def _listed(row: Any) -> dict[str, Any]:
    """A listing's entry: the fileid with what ``stat`` shows of it, so that a client listing
    a directory (treadle vfs) needs no request per file (docs/repo.md)."""
    return {"fileid": row.fileid, "size": row.size, "checksum": row.checksum,
            "extension": row.extension or "", "created_at": row.created_at.isoformat()}


class StoreLookup:
    """The handler's questions answered from one bare store (``serve --store DIR``): blobs only."""

    accepts_put = True

    def __init__(self, store: DirStore, store_uuid: str):
        self.store = store
        self.store_uuid = store_uuid

    def health(self) -> dict[str, Any]:
        self.store.check()
        return {"status": "ok", "kind": "store", "uuid": self.store_uuid,
                "repository": self.store.repo_uuid, "format": FORMAT}

    def _no_files(self, *_: object) -> Any:
        raise FileAbsent("this server serves one store: it has blobs, not files")

    file = meta = fileids = table_fileids = tables = _no_files

    def blob(self, checksum: str) -> ObjectInfo:
        size = self.store.size_of(checksum)
        if size is None:
            raise FileAbsent(f"no object {checksum} in this store")
        modified = datetime.fromtimestamp(self.store.object_path(checksum).stat().st_mtime, UTC)
        return ObjectInfo(checksum, size, None, modified)


def open_bare_store(directory: Path) -> tuple[DirStore, str]:
    """The store at ``directory`` with its uuid; RepoError when it is not a store."""
    try:
        identity = read_store_toml(directory)
    except FileNotFoundError:
        raise RepoError(f"{directory}: not a store (no store.toml; make one with "
                        f"treadle repo store add)") from None
    except (OSError, ValueError) as e:
        raise RepoError(f"{directory}: cannot read store.toml: {e}") from None
    store = DirStore(directory.name, directory, identity["repository"])
    store.check()
    return store, identity["uuid"]


@dataclass
class _Source:
    """Where a response's body comes from: a file to sendfile/pread, or a stream to hash.

    ``stream`` is fetch.open_verified's reader (or a store's raw stream): reading it to its end
    raises RepoDataError when the bytes are wrong. ``file`` is a trusted replica's open file.
    """

    file: BinaryIO | None = None
    stream: BinaryIO | None = None

    def close(self) -> None:
        for f in (self.file, self.stream):
            if f is not None:
                f.close()


class _Closed(Exception):
    """The peer went away, or the connection must be dropped; nothing more is sent."""


class _Connection:
    """One client connection: h11 state, the stream pair and whether a response is under way."""

    def __init__(self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server = server
        self.reader = reader
        self.writer = writer
        self.h11 = new_connection()
        self.busy = False
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    async def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def next_event(self, idle: float) -> h11.Event:
        """The next h11 event, reading as needed.

        A connection may wait ``idle`` s for a request to start; once its first byte is here
        the whole head must follow within HEAD_TIMEOUT s (a slow head ties up a connection
        slot, which is what a slowloris client is after); each read of a body may take
        IDLE_TIMEOUT s. Timeouts and resets raise _Closed.
        """
        head_deadline = None
        while True:
            event = self.h11.next_event()
            if isinstance(event, h11.Event):
                return event
            if event is h11.PAUSED:
                raise _Closed()  # a request came before the last one was answered
            in_head = self.h11.their_state is h11.IDLE
            if in_head and head_deadline is None and self.h11.trailing_data[0]:
                head_deadline = time.monotonic() + HEAD_TIMEOUT
            if not in_head:
                wait = IDLE_TIMEOUT
            elif head_deadline is None:
                wait = idle
            else:
                wait = head_deadline - time.monotonic()
            try:
                # a head is read in MAX_HEAD pieces, so h11 refuses one that is too long
                # after at most one piece more than its limit
                size = MAX_HEAD if in_head else READ_SIZE
                data = await asyncio.wait_for(self.reader.read(size), max(wait, 0.0))
            except (TimeoutError, ConnectionError) as e:
                raise _Closed() from e
            if in_head and head_deadline is None:
                head_deadline = time.monotonic() + HEAD_TIMEOUT
            self.h11.receive_data(data)


class Server:
    """The service: a handler, the lookup behind it, and the listening socket."""

    def __init__(self, handler: Handler, *, ctx: RepoContext | None = None,
                 store: DirStore | None = None, max_connections: int = 256,
                 log: Callable[[str], None] | None = None):
        self.handler = handler
        self.ctx = ctx
        self.store = store
        self.max_connections = max_connections
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="serve")
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        # checksum -> (replica file, trusted, until when): the last replica chosen for it
        self._recent: OrderedDict[str, tuple[Path, bool, float]] = OrderedDict()
        self.stopping = False
        self._store_write = threading.Lock()

    async def _blocking(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, function, *args)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(self, reader, writer)
        if len(self.connections) >= self.max_connections or self.stopping:
            await self._refuse(connection)
            return
        self.connections.add(connection)
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        try:
            await self._serve(connection)
        except (_Closed, ConnectionError, h11.ProtocolError):
            pass
        finally:
            self.connections.discard(connection)
            if task is not None:
                self.tasks.discard(task)
            if connection.h11.our_state in (h11.SEND_BODY, h11.ERROR):
                writer.transport.abort()  # a body cut short: end it now, buffered bytes too
            else:
                writer.close()

    async def _refuse(self, connection: _Connection) -> None:
        with contextlib.suppress(_Closed, ConnectionError, h11.ProtocolError):
            event = await connection.next_event(HEAD_TIMEOUT)
            if isinstance(event, h11.Request):
                await self._send_plan(connection, error_plan(503, "too many connections",
                                                             [("Retry-After", "1")]))
        connection.writer.close()

    async def _serve(self, connection: _Connection) -> None:
        idle = HEAD_TIMEOUT  # a new connection must start its request at once
        while not self.stopping:
            try:
                event = await connection.next_event(idle)
            except h11.RemoteProtocolError as e:
                await self._protocol_error(connection, e)
                return
            idle = IDLE_TIMEOUT
            if isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                raise _Closed()
            connection.busy = True
            started = time.monotonic()
            status, sent = await self._respond(connection, event)
            self.log(f"{connection.peer} {event.method.decode('ascii', 'replace')} "
                     f"{event.target.decode('ascii', 'replace')[:300]} {status} {sent} "
                     f"{time.monotonic() - started:.3f}s")
            connection.busy = False
            if self.stopping or not _body_done(connection.h11):
                return
            if connection.h11.our_state is h11.MUST_CLOSE:
                return
            connection.h11.start_next_cycle()

    async def _protocol_error(self, connection: _Connection, error: h11.RemoteProtocolError) -> None:
        if connection.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        status = error.error_status_hint
        with contextlib.suppress(h11.ProtocolError, ConnectionError):
            await self._send_plan(connection, error_plan(status, str(error) or "bad request"))
        self.log(f"{connection.peer} - - {status} 0 bad request: {error}")

    async def _respond(self, connection: _Connection, request: h11.Request) -> tuple[int, int]:
        try:
            plan = self._plan_from_cache(request)
            if plan is None:
                plan = await self._blocking(self.handler.plan, request)
            if isinstance(plan, Upload):
                plan = await self._receive(connection, plan)
            return plan.status, await self._send_plan(connection, plan)
        except (_Closed, ConnectionError):
            raise
        except Exception as e:  # noqa: BLE001 - a bug of ours: a 500 and a line, not a dead server
            self.log(f"{connection.peer} internal error: {type(e).__name__}: {e}")
            if connection.h11.our_state is not h11.SEND_RESPONSE:
                raise _Closed() from e
            await self._send_plan(connection, error_plan(500, "internal error (see the server's log)"))
            return 500, 0

    def _plan_from_cache(self, request: h11.Request) -> Plan | Upload | None:
        """The plan for a file whose row is cached, made here; None when it needs a thread."""
        lookup = self.handler.lookup
        if not isinstance(lookup, RepoLookup) or not request.target.startswith(b"/v1/files/"):
            return None
        try:
            with lookup.cache_only():
                return self.handler.plan(request)
        except NotCached:
            return None

    async def _send_plan(self, connection: _Connection, plan: Plan) -> int:
        """Send ``plan``; the number of body bytes sent."""
        body = plan.body
        if isinstance(body, ObjectBody) and plan.send_body:
            return await self._send_object(connection, plan, body)
        await connection.send(plan.response())
        if plan.send_body and isinstance(body, bytes) and body:
            await connection.send(h11.Data(data=body))
        await connection.send(h11.EndOfMessage())
        return len(body) if plan.send_body and isinstance(body, bytes) else 0

    async def _open_source(self, body: ObjectBody) -> _Source:
        """Open the replica to send from, before any header goes out (so failures can be 503)."""
        if self.store is not None:
            return _Source(file=await self._blocking(self.store.open_read, body.checksum))
        assert self.ctx is not None
        ctx = self.ctx
        recent = self._recent.get(body.checksum)
        if recent is not None and recent[2] > time.monotonic() and (recent[1] or not body.whole):
            try:  # opened moments ago: no thread, no database (what keeps small ranges fast)
                return _Source(file=open(recent[0], "rb"))  # noqa: SIM115 - closed by _Source
            except OSError:
                del self._recent[body.checksum]
        candidates = await self._blocking(_candidates, ctx, body.checksum)
        for candidate in candidates:
            if candidate.path is not None and (candidate.trusted or not body.whole):
                # a part of an object cannot be verified; whole objects are, unless trusted
                with contextlib.suppress(OSError):
                    file = await self._blocking(open, candidate.path, "rb")
                    self._remember(body.checksum, candidate.path, candidate.trusted)
                    return _Source(file=file)
        stream = await self._blocking(lambda: fetch.open_verified(
            ctx, body.checksum, timeout=FETCH_TIMEOUT, report=self.log))
        return _Source(stream=stream)

    def _remember(self, checksum: str, path: Path, trusted: bool) -> None:
        self._recent[checksum] = (path, trusted, time.monotonic() + RECENT_TTL)
        self._recent.move_to_end(checksum)
        while len(self._recent) > INFO_CACHE_SIZE:
            self._recent.popitem(last=False)

    async def _send_object(self, connection: _Connection, plan: Plan, body: ObjectBody) -> int:
        try:
            source = await self._open_source(body)
        except (FileNotFoundError, FileAbsent) as e:
            return await self._send_plan(connection, error_plan(503, f"no replica to read: {e}"))
        except RepoDataError as e:
            return await self._send_plan(connection, error_plan(503, str(e)))
        try:
            await connection.send(plan.response())
            if source.file is not None:
                await self._send_file(connection, source.file, body)
            else:
                assert source.stream is not None
                await self._send_stream(connection, source.stream, body)
            await connection.send(h11.EndOfMessage())
        finally:
            source.close()
        return body.length

    async def _send_file(self, connection: _Connection, file: BinaryIO, body: ObjectBody) -> None:
        if body.length <= SMALL_SEGMENT:
            data = os.pread(file.fileno(), body.length, body.offset)
            if len(data) != body.length:
                raise _Closed()  # the file is shorter than the database says: stop short
            await connection.send(h11.Data(data=data))
            return
        # h11 frames the body; the bytes themselves go from the file to the socket in the kernel
        segment = h11.Data(data=_Segment(body.length))  # type: ignore[arg-type]  # h11's sendfile support passes any object with a length
        for piece in connection.h11.send_with_data_passthrough(segment) or []:
            if isinstance(piece, _Segment):
                await asyncio.get_running_loop().sendfile(connection.writer.transport, file,
                                                          body.offset, body.length)
            else:
                connection.writer.write(piece)
        await connection.writer.drain()

    async def _send_stream(self, connection: _Connection, stream: BinaryIO, body: ObjectBody) -> None:
        """Send from a stream, each chunk only once the next has been read.

        For a whole object the last read is the verified reader's end, where a wrong hash
        raises: the body then stops before its last chunk, and the replica is SUSPECT.
        """
        if body.offset:
            await self._blocking(_skip, stream, body.offset)
        left = body.length
        held = b""
        try:
            while left > 0:
                chunk = await self._blocking(stream.read, min(CHUNK, left))
                if not chunk:
                    raise _Closed()  # shorter than the database says
                left -= len(chunk)
                if held:
                    await connection.send(h11.Data(data=held))
                held = chunk
            if body.whole:
                await self._blocking(stream.read, 1)
        except (RepoDataError, OSError) as e:
            self.log(f"{connection.peer} stopped sending {body.checksum}: {e}")
            raise _Closed() from e
        if held:
            await connection.send(h11.Data(data=held))

    async def _receive(self, connection: _Connection, upload: Upload) -> Plan:
        """Store a PUT's body through the store's verified write: 201, 200 (there already), 422."""
        assert self.store is not None
        store = self.store
        pipe = _Pipe()
        loop = asyncio.get_running_loop()

        def write() -> bool:
            with self._store_write:  # dirs_touched is shared: one write and its fsync at a time
                written = store.write_stream(cast(BinaryIO, pipe), expected=upload.checksum)
                fsync_dirs(store.dirs_touched)
                store.dirs_touched.clear()
            return written.created

        writing = loop.run_in_executor(self.pool, write)
        try:
            while not writing.done():
                event = await connection.next_event(IDLE_TIMEOUT)
                if isinstance(event, h11.Data):
                    await loop.run_in_executor(self.pool, pipe.put, bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    await loop.run_in_executor(self.pool, pipe.put, b"")
                    break
                else:
                    raise _Closed()
        except BaseException:
            pipe.abort()
            with contextlib.suppress(Exception):
                await writing
            raise
        try:
            created = await writing
        except StoreUnreachable as e:
            return error_plan(503, str(e))
        except RepoDataError as e:
            return error_plan(422, str(e))
        return stored_plan(created)

    async def drain_and_stop(self, server: asyncio.Server) -> None:
        """Stop accepting, drop idle connections, give transfers DRAIN_TIMEOUT s to finish."""
        self.stopping = True
        server.close()
        for connection in list(self.connections):
            if not connection.busy:
                connection.writer.transport.abort()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while any(c.busy for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.writer.transport.abort()
        if self.tasks:  # their reads end with the aborted transports; let them return
            await asyncio.wait(self.tasks, timeout=1.0)


def _candidates(ctx: RepoContext, checksum: str) -> list[fetch.Candidate]:
    with database_errors():
        return fetch.candidates(ctx, checksum)


def _body_done(connection: h11.Connection) -> bool:
    """Whether the request's body has been read to its end, reading only what is buffered.

    A GET's empty body ends at once; a body the answer did not need (a refused PUT) would cost
    a read of all of it, so its connection is closed instead of reused.
    """
    while connection.their_state is h11.SEND_BODY:
        if connection.next_event() is h11.NEED_DATA:
            return False
    return connection.their_state is h11.DONE


class _Segment:
    """A body placeholder that h11 frames (it needs the length) and serve sends with sendfile."""

    def __init__(self, length: int):
        self.length = length

    def __len__(self) -> int:
        return self.length


class _Pipe:
    """The body of a PUT as a file the store's writer thread reads; the event loop feeds it.

    Bounded, so a fast client cannot fill memory ahead of the disk; ``abort`` ends both sides
    when the client goes away or the writer fails.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=16)
        self._pending = b""
        self._aborted = threading.Event()

    def put(self, data: bytes) -> None:
        while not self._aborted.is_set():
            try:
                self._queue.put(data, timeout=0.2)
                return
            except queue.Full:
                continue

    def abort(self) -> None:
        self._aborted.set()

    def read(self, size: int = -1) -> bytes:
        while not self._pending:
            if self._aborted.is_set():
                raise ConnectionError("the client went away during the upload")
            try:
                self._pending = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if not self._pending:
                return b""
        if size < 0:
            size = len(self._pending)
        out, self._pending = self._pending[:size], self._pending[size:]
        return out


def _skip(stream: BinaryIO, count: int) -> None:
    while count > 0:
        data = stream.read(min(CHUNK, count))
        if not data:
            raise StoreUnreachable("the replica ended early")
        count -= len(data)


def ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server TLS context from a certificate chain and its key; RepoError naming a bad file."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise RepoError(f"cannot load --tls-cert {cert} / --tls-key {key}: {e}") from None
    return context


def make_server(*, repo: Path | None = None, store_dir: Path | None = None, no_auth: bool = False,
                max_connections: int = 256) -> Server:
    """The service of a repository (``repo``) or of one bare store (``store_dir``)."""
    if store_dir is not None:
        store, store_uuid = open_bare_store(store_dir)
        lookup: RepoLookup | StoreLookup = StoreLookup(store, store_uuid)
        tokens = tokens_path(store_dir)
        ctx = None
    else:
        assert repo is not None
        from treadle.repo.context import open_context

        ctx = open_context(repo)
        lookup, tokens, store = RepoLookup(ctx), tokens_path(repo), None
    checker = None if no_auth else TokenChecker(tokens)
    handler = Handler(lookup, None if checker is None else checker.check)
    return Server(handler, ctx=ctx, store=store, max_connections=max_connections)


async def run(server: Server, host: str, port: int, tls: ssl.SSLContext | None,
              on_listening: Callable[[str], None]) -> None:
    """Listen on host:port until SIGINT or SIGTERM, then drain; ``on_listening`` gets the URL."""
    loop = asyncio.get_running_loop()
    listener = await asyncio.start_server(server.handle, host, port, ssl=tls,
                                          limit=READ_SIZE, reuse_address=True)
    bound = listener.sockets[0].getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    on_listening(f"{'https' if tls else 'http'}://{shown}:{bound[1]}")
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        await server.drain_and_stop(listener)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        server.pool.shutdown(wait=False, cancel_futures=True)
        if server.ctx is not None:
            server.ctx.close()
