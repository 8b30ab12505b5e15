"""One manager-side connection to a worker: the protocol state machine plus batched, ordered writes.

The manager's thread owns it; nothing here knows about tasks.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import time
from collections.abc import Callable

from treadle.queue import protocol as wp

log = logging.getLogger("treadle.queue.manager")

SMALL_FILE = 1 << 16  # files below this are copied into the write batch instead of sendfile
# `name` queries answered before a greeting: a worker asks once, a catalog probe a few times
_MAX_NAME_QUERIES = 8


class Link:
    """One TCP connection: the protocol state machine plus batched, ordered writes.

    Everything sent in one turn of the event loop goes out in one ``write``;
    file payloads above ``SMALL_FILE`` go by ``sendfile`` in their place in
    the stream. Payload bytes are accounted to the protocol when queued, so
    later events may be queued behind them at once.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, loop: asyncio.AbstractEventLoop) -> None:
        self.conn = wp.ManagerConnection()
        self.reader = reader
        self.writer = writer
        self.loop = loop
        self._out: collections.deque[bytes | tuple[str, int, int]] = collections.deque()
        self._scheduled = False
        self._busy = False
        self._closed = False
        self.bytes_sent = 0  # handed to the kernel
        self.bytes_queued = 0  # handed to this link (a task's share is known at once)
        self.close_reason: str | None = None
        self.on_sent: Callable[[int], None] | None = None
        self.on_dirty: Callable[[Link], object] = lambda link: loop.call_soon(link._flush)
        self.on_hold_end: Callable[[], None] = lambda: None
        self.hold_until = 0.0
        self._hold_gen = 0
        # Acknowledge each read at once (TCP_QUICKACK). Only a peer that writes its
        # replies in pieces without TCP_NODELAY needs it (the reference worker); the
        # manager turns it off for a treadle worker, saving a system call per read.
        self.quickack = True

    # ---------------------------------------------------------------- sending
    def send(self, *events: wp.Event) -> None:
        """Queue the bytes of ``events`` (nothing once the connection is dropped)."""
        if self._closed:
            return
        for ev in events:
            self._queue(self.conn.send(ev))

    def send_payload(self, data: bytes) -> None:
        if not self._closed:
            self._queue(self.conn.send(wp.Data(data)))

    def send_file(self, path: str, offset: int, count: int) -> None:
        """Queue ``count`` bytes of ``path`` from ``offset`` as the payload just announced."""
        if self._closed:
            return
        self.conn.payload_streamed(count)
        if count == 0:
            return
        if count < SMALL_FILE:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(count)
            if len(data) != count:
                raise OSError(5, f"{path} changed while being sent", path)
            self._queue(data)
        else:
            self.bytes_queued += count
            self._out.append((path, offset, count))
            self._kick()

    def _queue(self, data: bytes) -> None:
        if data:
            self.bytes_queued += len(data)
            self._out.append(data)
            self._kick()

    def _kick(self) -> None:
        if not self._scheduled and not self._busy and not self._closed:
            self._scheduled = True
            self.on_dirty(self)

    def hold(self, seconds: float) -> None:
        """Send nothing more for ``seconds`` (see ``WorkerView.kill``)."""
        self.hold_until = time.monotonic() + seconds
        self._hold_gen += 1
        self.loop.call_later(seconds, self._release_hold, self._hold_gen)

    def _release_hold(self, gen: int) -> None:
        if gen != self._hold_gen:
            return  # a later hold is in force; its own timer ends it
        self.hold_until = 0.0
        if self._scheduled:
            self._flush()
        self.on_hold_end()

    def _flush(self) -> None:
        if not self._scheduled:
            return
        if self.hold_until:
            return  # the hold's timer flushes
        self._scheduled = False
        if self._closed:
            self._out.clear()
            return
        batch: list[bytes] = []
        out = self._out
        while out and isinstance(out[0], bytes):
            batch.append(out.popleft())  # type: ignore[arg-type]  # out[0] was just seen to be bytes
        if batch:
            data = b"".join(batch)
            self.writer.write(data)
            self._count(len(data))
        if out:
            self._busy = True
            self.loop.create_task(self._send_files())

    async def _send_files(self) -> None:
        try:
            while self._out and not isinstance(self._out[0], bytes) and not self._closed:
                path, offset, count = self._out.popleft()
                await self.writer.drain()
                with open(path, "rb") as f:
                    sent = await self.loop.sendfile(self.writer.transport, f, offset, count)
                if sent != count:
                    raise OSError(5, f"{path} changed while being sent", path)
                self._count(count)
        except (OSError, ConnectionError) as e:
            log.info("sending a file failed: %s", e)
            self.abort()
        finally:
            self._busy = False
        self._kick()

    def _count(self, n: int) -> None:
        self.bytes_sent += n
        if self.on_sent is not None:
            self.on_sent(n)

    async def drained(self) -> None:
        """Wait until everything queued has been handed to the kernel."""
        while (self._out or self._busy or self._scheduled) and not self._closed:
            if self.hold_until:
                await asyncio.sleep(max(0.0, self.hold_until - time.monotonic()))
                self.hold_until = 0.0
                self._hold_gen += 1
            if self._scheduled:
                self._flush()
            await asyncio.sleep(0.001 if self._busy else 0)
        if not self._closed:
            await self.writer.drain()

    # -------------------------------------------------------------- receiving
    async def next_event(self) -> wp.Event:
        """The next event, reading as needed (ConnectionClosed at EOF)."""
        while True:
            ev = self.conn.next_event()
            if isinstance(ev, wp.Event):  # else NEED_DATA
                return ev
            data = await self.reader.read(1 << 18)
            self.conn.receive_data(data)

    async def serve(self, handle: Callable[[wp.Event], None], on_bytes: Callable[[int], None]) -> None:
        """Feed every event to ``handle`` until the peer closes (ProtocolError propagates)."""
        conn = self.conn
        sock = self.writer.get_extra_info("socket")
        quickack = getattr(socket, "TCP_QUICKACK", None) if sock is not None else None
        while True:
            for ev in conn.events():
                if isinstance(ev, wp.ConnectionClosed):
                    return
                handle(ev)
            data = await self.reader.read(1 << 18)
            if quickack is not None and self.quickack:
                # Acknowledge at once: a peer that writes a reply in pieces without
                # TCP_NODELAY (the reference worker) otherwise waits for our delayed ACK.
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
                except OSError:
                    quickack = None
            on_bytes(len(data))
            conn.receive_data(data)
            if self._closed:
                return

    # ---------------------------------------------------------------- greeting
    async def greet(
        self,
        addrport: str,
        *,
        password: bytes | None,
        project: str,
        answer: Callable[[wp.StatusRequest | wp.HttpRequest], wp.Event],
    ) -> wp.Greeting | None:
        """Password step, project-name queries and status requests, up to a worker's greeting.

        Returns the greeting, or None when the peer was answered (a status client) or
        refused; ``answer`` makes the reply to a status request.
        """
        if password is not None:
            hs = wp.PasswordHandshake(password, wp.MANAGER)
            self.send(*hs.start())
            while hs.succeeded is None:
                ev = await self.next_event()
                self.send(*hs.receive(ev))
            if not hs.succeeded:
                log.warning("%s failed the password step: %s; dropped", addrport, hs.failure)
                return None
        queries = 0
        while True:
            ev = await self.next_event()
            if isinstance(ev, wp.Greeting):
                if ev.protocol != wp.PROTOCOL_VERSION:
                    # close this one connection, block nothing (the reference blocks the host)
                    log.warning("%s speaks protocol %d, not 9; dropped", addrport, ev.protocol)
                    return None
                return ev
            if isinstance(ev, wp.NameQuery):
                queries += 1
                if queries > _MAX_NAME_QUERIES:
                    # a peer that asks again and again without reading would pile up replies
                    log.warning("%s asked the project name %d times; dropped", addrport, queries)
                    return None
                self.send(wp.ProjectName(project))
            elif isinstance(ev, (wp.StatusRequest, wp.HttpRequest)):
                self.send(answer(ev))
                return None
            elif isinstance(ev, wp.Auth):
                log.warning("%s wants a password but this manager has none; dropped", addrport)
                return None
            else:
                log.warning("%s sent %r before its greeting; dropped", addrport, ev)
                return None

    # ---------------------------------------------------------------- closing
    def abort(self) -> None:
        """Drop the connection now (the serve loop then ends)."""
        if not self._closed:
            self._closed = True
            self._out.clear()
            self.writer.transport.abort()

    async def close(self, flush: bool = False) -> None:
        if flush and not self._closed:
            try:
                await asyncio.wait_for(self.drained(), 5)
            except (TimeoutError, OSError, ConnectionError):
                pass
        self._closed = True
        self._out.clear()
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except (TimeoutError, OSError, ConnectionError):
            pass
