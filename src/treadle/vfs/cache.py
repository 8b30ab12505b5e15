"""The host's cache of verified objects: one download per object however many runs want it.

Laid out like a store (docs/vfs.md, "Cache and verification"): ``objects/sha256/ab/cd/<hex>``,
``tmp/`` for fills in progress, ``locks/`` (one ``flock`` per object, so concurrent runs on a
host wait for a single download), ``views/`` (trace mode's per-run directories) and
``cache.db`` (stdlib sqlite3: each object's size, its stat at fill time and its last use).

An object gets its final name only after its bytes hashed to the checksum the repository
gave: nothing unverified is ever visible. A cached object is trusted while its size, mtime
and inode still match what its fill recorded.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import queue
import re
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from treadle.errors import RepoDataError, VfsError
from treadle.repo.checksums import Hasher, object_relpath
from treadle.repo.disk import start_writeback

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

DEFAULT_LIMIT = 10 << 30  # 10 GiB, or 10% of the free space when that is smaller
DEFAULT_FREE_SHARE = 0.10
HASH_QUEUE = 8  # chunks written but not yet hashed: bounds a fill's memory to a few MiB
_TEMP = re.compile(r"(\d+)\.[0-9a-f]+\.part")
_RUN = re.compile(r"(\d+)-.*")
_SIZE = re.compile(r"(\d+)([KMGT]?)(i?B)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

_SCHEMA = """CREATE TABLE IF NOT EXISTS objects (
    checksum TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL, last_use REAL NOT NULL)"""


class CacheFull(RepoDataError):
    """The cache's disk is full: no repository's fault, so no replica is blamed for it."""


def default_cache_dir() -> Path:
    """``$TREADLE_CACHE``, else ``$XDG_CACHE_HOME/treadle``, else ``~/.cache/treadle``."""
    if os.environ.get("TREADLE_CACHE"):
        return Path(os.environ["TREADLE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "treadle"


def parse_size(text: str) -> int:
    """Bytes from ``10G``, ``500M``, ``64KiB`` or a plain number (powers of 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise VfsError(f"not a size: {text!r} (expected a number of bytes, or e.g. 500M, 10G)")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _HashingWriter(io.RawIOBase):
    """A file descriptor that hashes what is written to it: the fill is verified as it lands.

    The bytes go to the file at once while a thread of their own hashes them (hashlib lets go
    of the GIL for large buffers), so receiving the next chunk, writing and hashing overlap
    instead of taking turns. :meth:`finish` waits for the hash of everything written.
    """

    def __init__(self, fd: int):
        super().__init__()
        self._fd = fd
        self._hasher = Hasher()
        self._chunks: queue.Queue[bytes | None] = queue.Queue(HASH_QUEUE)
        self._thread = threading.Thread(target=self._hash, name="cache fill hashing",
                                        daemon=True)
        self._thread.start()

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        # bytes cannot change under the hashing thread; any other buffer the caller may reuse
        chunk = data if isinstance(data, bytes) else bytes(memoryview(data).cast("B"))
        view = memoryview(chunk)
        written = 0
        while written < len(view):
            written += os.write(self._fd, view[written:])
        self._chunks.put(chunk)
        return written

    def _hash(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            start = self._hasher.size
            self._hasher.update(chunk)
            # the disk starts on what is written, so that the fsync at the end has little left
            start_writeback(self._fd, start, len(chunk))

    def finish(self) -> Hasher:
        """The hash of every byte written, once the hashing thread has caught up (and ended)."""
        if self._thread.is_alive():
            self._chunks.put(None)
            self._thread.join()
        return self._hasher


class Cache:
    """One cache directory, shared by every run on the host (docs/vfs.md).

    ``size_limit`` None means the default: the smaller of 10 GiB and 10% of the free space now.
    Opening it removes temp files of processes that are gone and views of runs that are gone.
    """

    def __init__(self, root: Path, size_limit: int | None):
        self.root = root
        try:
            for sub in ("objects/sha256", "tmp", "locks", "views"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(root).free
        except OSError as e:
            raise VfsError(f"cannot use the cache {root}: {e.strerror}") from None
        self.size_limit = size_limit if size_limit is not None else \
            min(DEFAULT_LIMIT, int(free * DEFAULT_FREE_SHARE))
        self._db_lock = threading.Lock()
        try:
            self._db = sqlite3.connect(root / "cache.db", timeout=30, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as e:
            raise VfsError(f"cannot use the cache database {root / 'cache.db'}: {e}") from None
        self._remove_stale()

    def _remove_stale(self) -> None:
        for temp in (self.root / "tmp").iterdir():
            match = _TEMP.fullmatch(temp.name)
            if match and not _pid_alive(int(match.group(1))):
                temp.unlink(missing_ok=True)
        for view in (self.root / "views").iterdir():
            match = _RUN.fullmatch(view.name)
            if match and not _pid_alive(int(match.group(1))):
                shutil.rmtree(view, ignore_errors=True)

    def object_path(self, checksum: str) -> Path:
        """Where object ``checksum`` lives in the cache (whether or not it is there)."""
        return self.root / object_relpath(checksum)

    def _sql(self, statement: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._db_lock:
            try:
                return self._db.execute(statement, args).fetchall()
            except sqlite3.Error as e:
                raise RepoDataError(f"the cache database {self.root / 'cache.db'}: {e}") from None

    def lookup(self, checksum: str) -> Path | None:
        """The cached object, if its file still has the stat its fill recorded; marks it used.

        A file whose stat changed is not trusted: it is removed, to be filled again.
        """
        rows = self._sql("SELECT size, mtime_ns, inode FROM objects WHERE checksum = ?",
                         (checksum,))
        if not rows:
            return None
        path = self.object_path(checksum)
        try:
            st = path.stat()
        except FileNotFoundError:
            self._forget(checksum)
            return None
        if (st.st_size, st.st_mtime_ns, st.st_ino) != rows[0]:
            path.unlink(missing_ok=True)
            self._forget(checksum)
            return None
        self.touch(checksum)
        return path

    def _forget(self, checksum: str) -> None:
        self._sql("DELETE FROM objects WHERE checksum = ?", (checksum,))

    def touch(self, checksum: str) -> None:
        """Record a use now, so eviction takes the least recently used objects first."""
        self._sql("UPDATE objects SET last_use = ? WHERE checksum = ?", (time.time(), checksum))

    @contextlib.contextmanager
    def _object_lock(self, checksum: str) -> Iterator[None]:
        fd = os.open(self.root / "locks" / object_relpath(checksum).name,
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def fill(self, checksum: str, size: int, writer: Callable[[BinaryIO], None]) -> Path:
        """Object ``checksum`` in the cache, ``writer`` writing its bytes unless already there.

        Bytes stream into ``tmp/`` while hashed; only an exact match (checksum and size) is
        fsynced and renamed into place, else RepoDataError and nothing is renamed. Another
        process filling the same object is waited for, not repeated. A full disk is
        CacheFull("cache full: DIR"), a RepoDataError.
        """
        try:
            with self._object_lock(checksum):
                found = self.lookup(checksum)
                if found is not None:
                    return found
                path = self._fill_locked(checksum, size, writer)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise CacheFull(f"cache full: {self.root}") from None
            raise
        self.evict(keep=checksum)
        return path

    def _fill_locked(self, checksum: str, size: int, writer: Callable[[BinaryIO], None]) -> Path:
        temp = self.root / "tmp" / f"{os.getpid()}.{secrets.token_hex(6)}.part"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        try:
            raw = _HashingWriter(fd)
            try:
                # unbuffered: the sources write chunks of 1 MiB, passed on without a copy
                writer(cast(BinaryIO, raw))
                hasher = raw.finish()
                if hasher.size != size or hasher.checksum != checksum:
                    raise RepoDataError(f"{checksum}: the bytes fetched are {hasher.size} "
                                        f"bytes hashing to {hasher.checksum}")
                os.fsync(fd)
            finally:
                raw.finish()
                os.close(fd)
            dest = self.object_path(checksum)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, dest)
            st = dest.stat()
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        self._sql("INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?)",
                  (checksum, st.st_size, st.st_mtime_ns, st.st_ino, time.time()))
        return dest

    def evict(self, keep: str = "") -> None:
        """Remove least recently used objects until the cache holds at most its size limit.

        ``keep`` (the object just filled) stays even when it alone is over the limit. An
        object in use survives its unlinking: open files, passthrough and hard links keep the
        inode (docs/vfs.md).
        """
        rows = self._sql("SELECT checksum, size FROM objects ORDER BY checksum = ? DESC, "
                         "last_use DESC", (keep,))
        total = 0
        for checksum, size in rows:
            total += int(str(size))
            if total > self.size_limit and checksum != keep:
                self.object_path(str(checksum)).unlink(missing_ok=True)
                self._forget(str(checksum))

    def view_dir(self, run_id: str) -> Path:
        """``views/<run_id>/`` for trace mode, made if needed.

        ``run_id`` starts with the run's pid and a dash (``<pid>-...``), so that a later
        cache opening removes the view once that process is gone.
        """
        if _RUN.fullmatch(run_id) is None or "/" in run_id:
            raise VfsError(f"a view's run id is <pid>-<anything>, not {run_id!r}")
        path = self.root / "views" / run_id
        path.mkdir(exist_ok=True)
        return path
