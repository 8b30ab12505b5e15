"""A scripted worker on a real socket, for tests that need exact bytes.

It speaks to the manager under test through the real protocol module
(``WorkerConnection`` parses what the manager sends), and it can also send
arbitrary bytes, which is how the gotcha and fuzz tests misbehave on purpose.
"""

from __future__ import annotations

import socket
import time

from treadle.queue import protocol as wp

GREETING_HEAD = b"workqueue 9 fakehost Linux x86_64 8.0.0\n"


def resources(cores: int = 1, memory: int = 1000, disk: int = 2000, gpus: int = 0) -> bytes:
    return (
        b"resource workers 1 1 1\n"
        + b"resource disk %d %d %d\n" % (disk, disk, disk)
        + b"resource memory %d %d %d\n" % (memory, memory, memory)
        + b"resource gpus %d %d %d\n" % (gpus, gpus, gpus)
        + b"resource cores %d %d %d\n" % (cores, cores, cores)
    )


def greeting(cores: int = 1, gate: bool = True, treadle: bool = False) -> bytes:
    out = GREETING_HEAD + b"info worker-id worker-fake\nalive\n" + resources(cores)
    if treadle:
        out += b"info treadle-version 0.1.0\n"
    if gate:
        out += b"resource tag 0\ninfo end_of_resource_update 0\ninfo tasks_running 0\ninfo worker-end-time 0\n"
    return out


class FakeWorker:
    """One connection to a manager; ``raw`` keeps every byte received."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.conn = wp.WorkerConnection()
        self.raw = bytearray()
        self.pending: list[wp.Event] = []
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read(self, deadline: float) -> bool:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(1 << 16)
        except TimeoutError:
            return False
        except OSError:
            data = b""
        if not data:
            self.closed = True
            self.conn.receive_data(b"")
            return False
        self.raw += data
        self.conn.receive_data(data)
        return True

    def next_event(self, timeout: float = 10.0) -> wp.Event | None:
        """The next event from the manager (Data chunks included), or None on timeout/close."""
        deadline = time.monotonic() + timeout
        while True:
            ev = self.conn.next_event()
            if ev is not wp.NEED_DATA:
                return ev  # type: ignore[return-value]
            if self.closed or time.monotonic() >= deadline or not self._read(deadline):
                if self.closed or time.monotonic() >= deadline:
                    return None

    def expect(self, kind: type, timeout: float = 10.0) -> wp.Event:
        """Skip events until one of ``kind``; fail if none comes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ev = self.next_event(deadline - time.monotonic())
            if ev is None:
                break
            if isinstance(ev, kind):
                return ev
        raise AssertionError(f"no {kind.__name__} from the manager; got bytes {bytes(self.raw[-300:])!r}")

    def wait_closed(self, timeout: float = 10.0) -> bool:
        """Whether the manager closes this connection within ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            try:
                ev = self.next_event(deadline - time.monotonic())
            except wp.ProtocolError:
                return True
            if isinstance(ev, wp.ConnectionClosed):
                return True
        return self.closed

    def result(self, task_id: int, status: int = 0, exit_code: int = 0, output: bytes = b"") -> bytes:
        return b"result %d %d %d 1000 %d\n" % (status, exit_code, len(output), task_id) + output

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
