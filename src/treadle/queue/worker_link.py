"""The worker's connection to its manager: finding it, reaching it, reading and writing.

``Dialer`` finds a manager (by address, or by project through the catalog),
connects (plain TCP or TLS) and reconnects with backoff; ``Link`` is the socket
as chunks of bytes for ``protocol.WorkerConnection``. Standard library only and
Python 3.8 syntax: the worker zipapp ships this module.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import select
import socket
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable

from . import protocol as p
from .worker_options import WorkerOptions

log = logging.getLogger("treadle.worker")

READ_SIZE = 1 << 20  # flow-control unit of the socket reader


class Dialer:
    """Reaches a manager and keeps serving managers until there is nothing left to do."""

    def __init__(self, opts: WorkerOptions, wake: asyncio.Event) -> None:
        self.opts = opts
        self.wake = wake  # set by signals and the lifetime watch: a pause ends at once
        self.where = ""  # the manager last reached, or why none was (see connect)

    async def keep_serving(self, serve: Callable[[Link], Awaitable[str]],
                           stopping: Callable[[], str | None]) -> int:
        """Connect, ``serve`` (which says why the connection ended), reconnect; the exit
        status once there is nothing left to do, or once ``stopping`` names a reason.

        An unreachable manager is reported once per outage, not once per attempt:
        a worker started before its manager (or outliving it) would otherwise fill
        its batch job's log. A worker that served a manager which then went away
        for good exits 0, as the reference worker does: the manager finished.
        """
        backoff = self.opts.min_backoff
        give_up = time.monotonic() + self.opts.connect_timeout
        served = False
        told = False  # the user knows that no manager answers
        while True:
            stop = stopping()
            if stop:
                return 0 if stop == "wall_time" else 1
            link = await self.connect()
            if link is None:
                if not told:
                    print(f"worker: cannot reach manager {self.where}; retrying for up to "
                          f"{self.opts.connect_timeout:g} s", file=sys.stderr, flush=True)
                    told = True
                if time.monotonic() >= give_up:
                    if served:
                        log.warning("the manager went away (none answered for %gs); exiting",
                                    self.opts.connect_timeout)
                        return 0
                    log.warning("no manager reached within %gs; exiting",
                                self.opts.connect_timeout)
                    return 1
                log.info("retrying in %gs", backoff)
                await self.pause(backoff)
                backoff = min(backoff * 2, self.opts.max_backoff)
                continue
            if told:
                print(f"worker: connected to manager {self.where}", file=sys.stderr, flush=True)
                told = False
            served = True
            began = time.monotonic()
            reason = await serve(link)
            log.info("disconnected: %s", reason)
            if reason in ("exit", "idle", "wall_time", "parent"):
                return 0
            if reason in ("vacate", "password", "exhausted"):
                return 1
            if self.opts.single_shot:
                return 0
            # a manager that drops us at once must not be hammered: back off unless the
            # connection lasted a while
            backoff = self.opts.min_backoff if time.monotonic() - began > 30 else \
                min(backoff * 2, self.opts.max_backoff)
            await self.pause(backoff)
            give_up = time.monotonic() + self.opts.connect_timeout

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake at once for a signal or the end of the wall time."""
        try:
            await asyncio.wait_for(self.wake.wait(), seconds)
        except asyncio.TimeoutError:  # noqa: UP041 - not the builtin before 3.11
            pass

    async def connect(self) -> Link | None:
        """A link to the first manager that answers, or None; ``where`` says which
        address was reached, or why none was."""
        addresses = await self._manager_addresses()
        if not addresses:
            self.where = f"matching {self.opts.project!r} (none in the catalog)"
        for host, port in addresses:
            try:
                tls = {"ssl": self._tls_context(), "server_hostname": host} if self.opts.tls \
                    else {}
                _, link = await asyncio.wait_for(
                    asyncio.get_running_loop().create_connection(Link, host, port, **tls), 10)
            except (asyncio.TimeoutError, OSError) as e:  # noqa: UP041 - 3.8 has its own
                tls_failed = type(e).__module__ == "ssl"  # say why, it will not heal itself
                (log.warning if tls_failed else log.info)(
                    "cannot connect to %s:%d: %s", host, port, e)
                errno = getattr(e, "errno", None)  # a 3.8 TimeoutError has none
                why = os.strerror(errno) if errno else str(e) or "timed out"
                self.where = f"{host}:{port} ({why})"
                continue
            sock = link.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            log.info("connected to %s:%d", host, port)
            self.where = f"{host}:{port}"
            return link
        return None

    def _tls_context(self):
        import ssl  # only TLS users pay for importing it

        return ssl.create_default_context(cafile=self.opts.tls_ca)

    async def _manager_addresses(self) -> list:
        if not self.opts.project:
            return self.opts.managers
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, find_managers, self.opts.catalog,
                                              self.opts.project)
        except OSError as e:
            log.info("catalog query failed: %s", e)
            return []


def recv_to_file(sock_fd: int, fd: int, size: int) -> bool:
    """Copy exactly ``size`` bytes from a non-blocking socket to ``fd`` (runs in a thread).

    Returns False if writing failed (the bytes are still consumed, to keep the
    framing); raises ConnectionError if the peer closes or stalls for an hour.
    """
    buf = bytearray(min(size, READ_SIZE))
    view = memoryview(buf)
    ok = True
    while size:
        try:
            n = os.readv(sock_fd, [view[: min(size, len(buf))]])
        except (BlockingIOError, InterruptedError):
            if not select.select([sock_fd], [], [], 3600)[0]:
                raise ConnectionResetError("manager stalled during a transfer") from None
            continue
        if n == 0:
            raise ConnectionResetError("manager closed the connection during a transfer")
        size -= n
        if ok:
            try:
                part = view[:n]
                while part:
                    part = part[os.write(fd, part):]
            except OSError:
                ok = False
    return ok


def find_managers(catalog: str | None, project: str) -> list:
    """Managers whose project matches ``project`` in a catalog's JSON listing."""
    import json
    import re

    host = catalog or os.environ.get("CATALOG_HOST")
    if not host:
        raise OSError("-M needs a catalog: give -C HOST:PORT or set CATALOG_HOST")
    if ":" not in host:
        host += ":9097"
    with urllib.request.urlopen(f"http://{host}/query.json", timeout=10) as r:
        records = json.loads(r.read(p.MAX_STATUS_REPLY).decode("utf-8", "replace"))
    pattern = re.compile(project)
    out = []
    for rec in records if isinstance(records, list) else []:
        if not isinstance(rec, dict) or rec.get("type") not in ("wq_master", "wq_manager"):
            continue
        if not pattern.fullmatch(str(rec.get("project", ""))):
            continue
        try:
            port = int(rec["port"])
        except (KeyError, ValueError, TypeError):
            continue
        for addr in [rec.get("address")] + [i.get("host") for i in rec.get(
                "network_interfaces", []) if isinstance(i, dict)] + [rec.get("name")]:
            if addr:
                out.append((str(addr), port))
    return out


class Link(asyncio.Protocol):
    """The socket as chunks of bytes, without StreamReader's extra buffer copy.

    Bulk payloads pass from the transport to the protocol module and on to
    ``os.write`` as the very bytes objects the socket returned.
    """

    HIGH_WATER = 4 * READ_SIZE  # stop reading from the socket above this much unread

    def __init__(self) -> None:
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made, the first callback
        self._chunks: collections.deque = collections.deque()
        self._unread = 0
        self._eof = False
        self._reading_paused = False
        self._readable: asyncio.Future | None = None
        self._writable: asyncio.Future | None = None
        self._out: list = []
        self._flush_due = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream connection gets a Transport

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._unread += len(data)
        if self._unread > self.HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake_reader()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def _wake_reader(self) -> None:
        if self._readable is not None and not self._readable.done():
            self._readable.set_result(None)

    def take_all(self) -> list:
        """Every chunk received and not read yet."""
        chunks = list(self._chunks)
        self._chunks.clear()
        self._unread = 0
        return chunks

    async def read(self) -> bytes:
        """The next chunk received, or b"" at end of file."""
        while not self._chunks:
            if self._eof:
                return b""
            self._readable = asyncio.get_running_loop().create_future()
            await self._readable
        data = self._chunks.popleft()
        self._unread -= len(data)
        if self._reading_paused and self._unread <= self.HIGH_WATER // 2:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    def write(self, data: bytes) -> None:
        """Queue bytes; ``drain`` (or ``close``) sends them, several lines per syscall."""
        if self.transport.is_closing():
            raise ConnectionResetError("connection closed")
        self._out.append(data)

    def flush(self) -> None:
        self._flush_due = False
        if self._out and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def flush_soon(self, delay: float = 0.0) -> None:
        """Send the queued bytes once this turn of the event loop is over (or after
        ``delay`` seconds, unless something sends them earlier).

        Lines written in one turn (several tasks starting or ending at once) then
        leave in one segment instead of one system call each.
        """
        if delay:
            asyncio.get_running_loop().call_later(delay, self._flush_if_due)
        elif not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self.flush)

    def _flush_if_due(self) -> None:
        if self._out and not self._flush_due:
            self.flush()

    async def drain(self) -> None:
        self.flush()
        if self.transport.is_closing():
            raise ConnectionResetError("connection closed")
        if self._writable is not None and not self._writable.done():
            await self._writable

    def close(self) -> None:
        self.flush()
        self.transport.close()
