"""The single writer's lock (docs/repo.md, "One writer at a time").

An exclusive ``flock`` on ``REPO/lock`` keeps writers on one host apart; with PostgreSQL, an
advisory lock keyed by the repository's uuid also keeps apart hosts that share only the
database. Whoever holds it writes "HOST PID" into the lock file (and, with PostgreSQL, into
its connection's application_name) so that a refused writer can say who is writing.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
import uuid as uuidlib
from pathlib import Path
from types import TracebackType

from sqlalchemy import Connection, Engine, text

from treadle.errors import RepoError
from treadle.repo.db import is_sqlite

LOCK_NAME = "lock"
POLL_SECONDS = 0.05
_APP_PREFIX = "treadle-writer "


def advisory_key(repo_uuid: str) -> int:
    """A signed 64-bit key for pg_advisory_lock, from the repository's uuid."""
    value = uuidlib.UUID(repo_uuid).int >> 64
    return value - (1 << 64) if value >= 1 << 63 else value


class WriterLock:
    """Held by ``with``: waits up to ``wait`` seconds, then RepoError naming the holder."""

    def __init__(self, repo_dir: Path, engine: Engine, repo_uuid: str, wait: float = 0.0) -> None:
        self.path = Path(repo_dir) / LOCK_NAME
        self.engine = engine
        self.repo_uuid = repo_uuid
        self.wait = wait
        self._fd: int | None = None
        self._pg: Connection | None = None

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise self._refusal(self._holder_from_file(fd)) from None
                    time.sleep(POLL_SECONDS)
            if not is_sqlite(self.engine):
                self._pg = self._take_advisory(deadline)
        except BaseException:
            os.close(fd)
            raise
        me = f"{socket.gethostname()} {os.getpid()}\n".encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, me, 0)
        self._fd = fd

    def _take_advisory(self, deadline: float) -> Connection:
        # a connection of its own, held for the lock's life: the lock dies with its session
        conn = self.engine.connect()
        key = advisory_key(self.repo_uuid)
        try:
            while True:
                got = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
                conn.commit()
                if got:
                    me = f"{_APP_PREFIX}{socket.gethostname()} {os.getpid()}"
                    conn.execute(text("SELECT set_config('application_name', :name, false)"), {"name": me})
                    conn.commit()
                    return conn
                if time.monotonic() >= deadline:
                    raise self._refusal(self._holder_from_database(conn, key))
                time.sleep(POLL_SECONDS)
        except BaseException:
            conn.close()
            raise

    @staticmethod
    def _holder_from_file(fd: int) -> str:
        return os.pread(fd, 1024, 0).decode(errors="replace").strip()

    @staticmethod
    def _holder_from_database(conn: Connection, key: int) -> str:
        unsigned = key & 0xFFFFFFFFFFFFFFFF
        name = conn.execute(text(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :hi AND l.objid = :lo"),
            {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF}).scalar()
        conn.commit()
        text_ = str(name or "")
        return text_[len(_APP_PREFIX):] if text_.startswith(_APP_PREFIX) else ""

    def _refusal(self, holder: str) -> RepoError:
        host, _, pid = holder.partition(" ")
        who = f"{host} pid {pid}" if pid else "another process"
        return RepoError(f"the repository is being written by {who}; wait for it to finish "
                         f"or pass --wait SECONDS")

    def release(self) -> None:
        if self._pg is not None:
            try:
                self._pg.execute(text("SELECT pg_advisory_unlock(:key)"),
                                 {"key": advisory_key(self.repo_uuid)})
                self._pg.commit()
            finally:
                self._pg.close()
                self._pg = None
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
