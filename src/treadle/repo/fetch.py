"""Verified reads: which replica to read, what to do when it fails, and never a wrong byte.

The rules of docs/repo.md ("treadle repo get and verified reads") live here once, for
``treadle repo get``, the HTTP service and the vfs:

* candidates are ``OK`` replicas on stores in state ``up`` or ``readonly``, in Parrot's order
  made reproducible (this host's stores, then stores of no host, then the rest; by priority;
  ties by a hash of host name and checksum, so hosts spread over equal stores while each host
  always tries them in the same order). ``SUSPECT`` replicas are not candidates: a reader
  found them wrong once, and only fsck's full check may make them ``OK`` again;
* an attempt waits at most 10 s (or ``timeout``, if shorter) for each answer of a store; a
  refusal, a stall, a short read or a mismatch moves on to the next candidate, and a
  mismatch marks the replica ``SUSPECT`` with an audit event (only fsck marks replicas
  ``BAD``);
* when every candidate failed and some failure may pass (a store unreachable or slow), the
  list is reloaded and tried again, waiting 1 s, then twice as long each time up to 30 s,
  until ``timeout`` seconds have passed since the read began;
* what the caller is told keeps three things apart: the database says there is no such file
  (:class:`FileAbsent`), no store could be reached (:class:`StoreUnreachable`), and every
  replica held wrong bytes (:class:`RepoDataError`).
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import sqlalchemy
from sqlalchemy import select, update

from treadle.errors import FileAbsent, RepoDataError, RepoError, StoreUnreachable
from treadle.repo import audit
from treadle.repo.checksums import CHUNK, Hasher
from treadle.repo.db import utcnow
from treadle.repo.schema import files, objects, replicas
from treadle.repo.stores import CheckStat, DirStore, Store, StoreRow, fsync_dirs, load_stores

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from treadle.repo.context import RepoContext

ATTEMPT_TIMEOUT = 10.0  # longest wait for one store's next answer before trying another
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
READABLE_STORE_STATES = ("up", "readonly")
LARGEST_FILEID = 2**63 - 1  # fileids are 64-bit; a larger number names no file

Report = Callable[[str], None]


@dataclass(frozen=True)
class FileInfo:
    """A file's row: what a reader needs before it reads (and what ``stat`` shows)."""

    fileid: int
    checksum: str
    size: int
    extension: str
    media_type: str | None
    created_at: datetime
    state: str


@dataclass
class Candidate:
    """One replica a reader may try: its store, and whether its bytes may be used unhashed.

    ``path`` is the object's file when the store is a local directory (the service sends it
    with ``sendfile``, the vfs passes it through). ``trusted`` follows the rule of docs/repo.md,
    "Which copies are trusted without rehashing": fsck or ingest verified the replica within ``verify_max_age_days`` and the file's size,
    mtime and inode are still those seen then. ``get`` hashes what it writes regardless.
    """

    row: StoreRow
    store: Store
    replica_state: str
    trusted: bool
    path: Path | None


def file_info(ctx: RepoContext, fileid: int) -> FileInfo:
    """The row of ``fileid``; FileAbsent when there is none or it was deleted."""
    if not 1 <= fileid <= LARGEST_FILEID:
        raise FileAbsent(f"no such file: fileid {fileid}")
    with ctx.reading() as conn:
        row = conn.execute(
            select(files.c.fileid, files.c.checksum, files.c.size, files.c.extension,
                   files.c.media_type, files.c.created_at, files.c.state)
            .where(files.c.fileid == fileid)).first()
    if row is None or row.state == "DELETED":
        raise FileAbsent(f"no such file: fileid {fileid}")
    return FileInfo(row.fileid, row.checksum, row.size, row.extension or "", row.media_type,
                    row.created_at, row.state)


def object_size(ctx: RepoContext, checksum: str) -> int:
    """The size the database records for an object; FileAbsent when it knows no such object."""
    with ctx.reading() as conn:
        size = conn.execute(select(objects.c.size).where(objects.c.checksum == checksum)).scalar()
    if size is None:
        raise FileAbsent(f"no such object: {checksum}")
    return int(size)


def vpath(mount: str, fileid: int) -> str:
    """``<mount>/fileid/<fileid>``: where the vfs shows a file, and a name ``get`` accepts."""
    return f"{mount.rstrip('/')}/fileid/{fileid}"


def _tie_key(host: str, checksum: str, store_name: str) -> bytes:
    """Orders stores of equal rank: the same on one host for one object, different across both."""
    return hashlib.sha256(f"{host}\0{checksum}\0{store_name}".encode()).digest()


def _rank(row: StoreRow, host: str, checksum: str) -> tuple[int, int, bytes]:
    group = 0 if row.host == host else 1 if row.host == "" else 2
    return group, row.priority, _tie_key(host, checksum, row.name)


def _is_trusted(ctx: RepoContext, store: DirStore, checksum: str,
                lastcheck: datetime | None, check_stat: str | None) -> bool:
    recorded = CheckStat.from_json(check_stat)
    if lastcheck is None or recorded is None:
        return False
    if utcnow() - lastcheck > timedelta(days=ctx.config.verify_max_age_days):
        return False
    try:
        return store.stat_of(checksum) == recorded
    except OSError:
        return False


def candidates(ctx: RepoContext, checksum: str, *, host: str | None = None) -> list[Candidate]:
    """The replicas of ``checksum`` a reader on ``host`` (default: this one) tries, in order."""
    here = socket.gethostname() if host is None else host
    with ctx.reading() as conn:
        stores_by_id = {row.storeid: row for row in load_stores(conn)}
        found = conn.execute(
            select(replicas.c.storeid, replicas.c.state, replicas.c.lastcheck, replicas.c.check_stat)
            .where(replicas.c.checksum == checksum, replicas.c.state == "OK")).all()
    usable = [(stores_by_id[r.storeid], r) for r in found
              if stores_by_id[r.storeid].state in READABLE_STORE_STATES]
    usable.sort(key=lambda pair: _rank(pair[0], here, checksum))
    result = []
    for row, replica in usable:
        store = ctx.open_store(row)
        if isinstance(store, DirStore):
            trusted = _is_trusted(ctx, store, checksum, replica.lastcheck, replica.check_stat)
            path: Path | None = store.object_path(checksum)
        else:
            trusted, path = False, None
        result.append(Candidate(row, store, replica.state, trusted, path))
    return result


def mark_suspect(ctx: RepoContext, checksum: str, storeid: int, detail: str) -> None:
    """Take an ``OK`` replica out of reading (state ``SUSPECT``) and say why in the audit log.

    Readers do not take the writer lock: this is one small transaction, and fsck's full check
    later makes the replica ``OK`` or ``BAD``. A database that refuses the write (opened
    read-only) raises StoreUnreachable; the reader goes on to the next replica regardless.
    """
    try:
        with ctx.engine.begin() as conn:
            changed = conn.execute(
                update(replicas)
                .where(replicas.c.checksum == checksum, replicas.c.storeid == storeid,
                       replicas.c.state == "OK")
                .values(state="SUSPECT")).rowcount
            if changed:
                audit.record(conn, "suspect", checksum=checksum, storeid=storeid, detail=detail)
    except sqlalchemy.exc.DBAPIError as e:
        raise StoreUnreachable(f"cannot mark the replica SUSPECT: {e.orig}") from None


class _Failed(Exception):
    """One attempt at one replica failed; ``kind`` says what the caller is told if all fail.

    ``unreachable`` may pass (worth retrying); ``missing``, ``refused`` and ``corrupt`` will not.
    """

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class _Clock:
    """The waits of one read: how long one answer may take, and until when to start rounds.

    Each attempt waits at most ``attempt_wait`` (10 s, or ``timeout`` if shorter) for each
    answer, so a file that keeps arriving is never cut off however large; every candidate is
    tried once, and further rounds start only until ``timeout`` seconds have passed.
    """

    def __init__(self, timeout: float):
        self.attempt_wait = min(ATTEMPT_TIMEOUT, timeout)
        self.deadline = time.monotonic() + timeout

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


class _Pump:
    """Reads one replica in a thread of its own, so a store that hangs costs a bounded wait.

    A read from a socket or a hung network filesystem cannot be interrupted; on a stall the
    reader gives up waiting and the thread is left to end when its read returns (it then
    closes the stream and stops). At most a few chunks wait in the queue.
    """

    def __init__(self, store: Store, checksum: str):
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=4)
        self._stop = threading.Event()
        threading.Thread(target=self._run, args=(store, checksum), daemon=True,
                         name=f"fetch {store.name}").start()

    def _run(self, store: Store, checksum: str) -> None:
        try:
            with store.open_read(checksum) as stream:
                while not self._stop.is_set():
                    chunk = stream.read(CHUNK)
                    self._put(chunk)
                    if not chunk:
                        return
        except Exception as e:  # noqa: BLE001 - handed to the reader, which sorts it
            self._put(e)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next_chunk(self, wait: float) -> bytes:
        """The next chunk (b"" at the end); _Failed when the store fails or is silent ``wait`` s."""
        try:
            item = self._queue.get(timeout=wait)
        except queue.Empty:
            raise _Failed("unreachable", f"no answer within {wait:g} s") from None
        if isinstance(item, bytes):
            return item
        raise _classify(item)

    def close(self) -> None:
        self._stop.set()


def _classify(error: BaseException) -> BaseException:
    """A store's exception as a _Failed; anything unexpected is a bug and is returned as is."""
    if isinstance(error, (FileNotFoundError, FileAbsent)):
        return _Failed("missing", "the object file is missing")
    if isinstance(error, StoreUnreachable):
        return _Failed("unreachable", str(error))
    if isinstance(error, RepoDataError):
        return _Failed("unreachable", str(error))
    if isinstance(error, RepoError):
        return _Failed("refused", str(error))
    if isinstance(error, TimeoutError):
        return _Failed("unreachable", "timed out")
    if isinstance(error, OSError):
        return _Failed("unreachable", error.strerror or str(error))
    if isinstance(error, http.client.HTTPException):
        return _Failed("unreachable", str(error) or type(error).__name__)
    return error


def _final_error(checksum: str, failures: list[tuple[str, _Failed]]) -> RepoDataError:
    """What the caller is told when no replica gave the right bytes."""
    if not failures:
        return RepoDataError(f"{checksum} has no OK replica on a readable store "
                             f"(see treadle repo fsck)")
    reasons = "; ".join(f"{name}: {failure.reason}" for name, failure in failures)
    if all(failure.kind == "corrupt" for _, failure in failures):
        return RepoDataError(f"corrupt in every replica ({reasons})")
    if any(failure.kind == "unreachable" for _, failure in failures):
        return StoreUnreachable(f"no replica could be read ({reasons})")
    return RepoDataError(f"no replica could be read ({reasons})")


def _check_chunk(hasher: Hasher, chunk: bytes, size: int) -> None:
    hasher.update(chunk)
    if hasher.size > size:
        raise _Failed("corrupt", f"more than the {size} bytes recorded")


def _check_end(hasher: Hasher, checksum: str, size: int, local: bool) -> None:
    """At the end of a replica's bytes: _Failed unless they are exactly the object.

    A short local file is corrupt; a short body from a server may be the network, or the
    server stopping a reply it found wrong (docs/repo.md), so it is worth another try.
    """
    if hasher.size < size:
        raise _Failed("corrupt" if local else "unreachable",
                      f"only {hasher.size} of {size} bytes")
    if hasher.checksum != checksum:
        raise _Failed("corrupt", f"bytes hash to {hasher.checksum}")


def _failover(ctx: RepoContext, checksum: str, timeout: float, report: Report | None,
              attempt: Callable[[Candidate, float], None]) -> Candidate:
    """Run ``attempt`` on candidate after candidate until one succeeds; return that one.

    ``attempt`` raises _Failed; a ``corrupt`` one marks the replica SUSPECT. Raises the
    caller-facing error of :func:`_final_error` when there is nothing left worth trying.
    """
    clock = _Clock(timeout)
    delay = BACKOFF_FIRST
    earlier: list[tuple[str, _Failed]] = []
    while True:
        failures: list[tuple[str, _Failed]] = []
        for candidate in candidates(ctx, checksum):
            try:
                attempt(candidate, clock.attempt_wait)
                return candidate
            except _Failed as failure:
                failures.append((candidate.row.name, failure))
                _note(ctx, checksum, candidate, failure, report)
        retry = any(failure.kind == "unreachable" for _, failure in failures)
        if not retry or clock.left() <= 0:
            # a reload that found nothing left says less than the round before it
            raise _final_error(checksum, failures or earlier)
        earlier = failures
        time.sleep(min(delay, clock.left()))
        delay = min(delay * 2, BACKOFF_MAX)


def _note(ctx: RepoContext, checksum: str, candidate: Candidate, failure: _Failed,
          report: Report | None) -> None:
    line = f"store {candidate.row.name}: {checksum}: {failure.reason}"
    if failure.kind == "corrupt":
        try:
            mark_suspect(ctx, checksum, candidate.row.storeid, failure.reason)
            line += "; replica marked SUSPECT"
        except StoreUnreachable as e:
            line += f"; {e}"
    if report is not None:
        report(line)


class _Landing:
    """A temp file beside ``dest`` that becomes ``dest`` only once its bytes are verified."""

    def __init__(self, dest: Path):
        self.dest = dest
        self.temp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
        self.file = open(self.temp, "xb")  # noqa: SIM115 - closed by commit or discard

    def restart(self) -> None:
        self.file.seek(0)
        self.file.truncate()

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.temp, self.dest)
        fsync_dirs([self.dest.parent])

    def discard(self) -> None:
        self.file.close()
        self.temp.unlink(missing_ok=True)


def fetch_to(ctx: RepoContext, checksum: str, dest: Path, *, timeout: float = 60.0,
             report: Report | None = None) -> None:
    """Write object ``checksum`` to ``dest``, verified, from the first replica that gives it right.

    The bytes go to a temp file in ``dest``'s directory and are hashed as they arrive; only
    right bytes are fsynced and renamed to ``dest``, so nothing unverified ever has the final
    name. ``report`` receives one line per replica that failed.
    """
    size = object_size(ctx, checksum)
    landing = _Landing(dest)

    def attempt(candidate: Candidate, wait: float) -> None:
        landing.restart()
        hasher = Hasher()
        pump = _Pump(candidate.store, checksum)
        try:
            while chunk := pump.next_chunk(wait):
                _check_chunk(hasher, chunk, size)
                landing.file.write(chunk)
        finally:
            pump.close()
        _check_end(hasher, checksum, size, candidate.path is not None)

    try:
        _failover(ctx, checksum, timeout, report, attempt)
        landing.commit()
    except BaseException:
        landing.discard()
        raise


def output_name(fileid: int, extension: str) -> str:
    """``<fileid>.<ext>``, or ``<fileid>`` when the file has no extension: what ``get`` writes.

    RepoDataError for an extension that would leave the directory (one from a service could).
    """
    if "/" in extension or "\0" in extension:
        raise RepoDataError(f"fileid {fileid}: refusing the extension {extension!r}")
    return f"{fileid}.{extension}" if extension else str(fileid)


def save_file(ctx: RepoContext, fileid: int, directory: Path, *, timeout: float = 60.0,
              report: Report | None = None) -> Path:
    """Write file ``fileid`` verified as ``directory/<fileid>.<ext>`` (fetch_to); its path."""
    info = file_info(ctx, fileid)
    dest = directory / output_name(fileid, info.extension)
    fetch_to(ctx, info.checksum, dest, timeout=timeout, report=report)
    return dest


def save_stream(stream: BinaryIO, checksum: str, size: int, dest: Path) -> None:
    """Write ``stream`` to ``dest`` through a temp file, only if it is exactly object ``checksum``.

    For bytes from elsewhere (a service): RepoDataError when they are not, and ``dest`` is
    then left as it was.
    """
    landing = _Landing(dest)
    try:
        hasher = Hasher()
        while chunk := stream.read(CHUNK):
            _check_chunk(hasher, chunk, size)
            landing.file.write(chunk)
        _check_end(hasher, checksum, size, local=False)
        landing.commit()
    except _Failed as failure:
        landing.discard()
        raise RepoDataError(f"{checksum}: {failure.reason}") from None
    except BaseException:
        landing.discard()
        raise


class _VerifiedReader(io.RawIOBase):
    """The bytes of one replica, hashed as they are read; a mismatch raises at the end.

    A caller sees the bytes before they are known to be right: this is for streams whose
    consumer can still discard them (the service closes the connection before the last byte,
    so its client sees a short body). Anything that must be right when it lands uses fetch_to.
    """

    def __init__(self, ctx: RepoContext, checksum: str, size: int, timeout: float,
                 report: Report | None):
        self._ctx = ctx
        self._checksum = checksum
        self._size = size
        self._report = report
        self._hasher = Hasher()
        self._pending = memoryview(b"")
        self._at_end = False
        self._wait = min(ATTEMPT_TIMEOUT, timeout)
        self._pump: _Pump | None = None

        def attempt(candidate: Candidate, wait: float) -> None:
            pump = _Pump(candidate.store, checksum)
            try:
                first = pump.next_chunk(wait)
                _check_chunk(self._hasher, first, size)
                if not first:
                    _check_end(self._hasher, checksum, size, candidate.path is not None)
            except _Failed:
                pump.close()
                self._hasher = Hasher()
                raise
            self._pump, self._pending = pump, memoryview(first)
            self._at_end = not first

        self.candidate = _failover(ctx, checksum, timeout, report, attempt)

    def readable(self) -> bool:
        return True

    def _next(self) -> None:
        assert self._pump is not None
        try:
            chunk = self._pump.next_chunk(self._wait)
            _check_chunk(self._hasher, chunk, self._size)
            if not chunk:
                self._at_end = True
                _check_end(self._hasher, self._checksum, self._size,
                           self.candidate.path is not None)
        except _Failed as failure:
            self._at_end = True
            _note(self._ctx, self._checksum, self.candidate, failure, self._report)
            if failure.kind == "corrupt":
                raise RepoDataError(f"store {self.candidate.row.name}: {self._checksum}: "
                                    f"{failure.reason}") from None
            raise StoreUnreachable(f"store {self.candidate.row.name}: {failure.reason}") from None
        self._pending = memoryview(chunk)

    def readinto(self, buffer: WriteableBuffer) -> int:
        if not self._pending and not self._at_end:
            self._next()
        target = memoryview(buffer).cast("B")
        count = min(len(target), len(self._pending))
        target[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def close(self) -> None:
        if self._pump is not None:
            self._pump.close()
        super().close()


def open_verified(ctx: RepoContext, checksum: str, *, timeout: float = 60.0,
                  report: Report | None = None) -> BinaryIO:
    """Object ``checksum`` as a binary file, read from the first replica that answers.

    Failover happens before the first byte; after that, a failing replica raises
    StoreUnreachable, and bytes that do not match raise RepoDataError at the end of the file
    (and mark the replica SUSPECT), so a reader that reads to EOF never accepts wrong bytes.
    """
    size = object_size(ctx, checksum)
    return io.BufferedReader(_VerifiedReader(ctx, checksum, size, timeout, report), CHUNK)
