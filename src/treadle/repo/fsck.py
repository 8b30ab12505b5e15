"""fsck: audit every replica, repair from good copies, drain stores, collect garbage (docs/repo.md).

A repository promises R verified copies of every object, or a list of the files that fall short.
This module keeps that promise after the fact: it checks replicas (size, or size and hash with
``full``), marks the bad ones ``BAD`` (moving corrupt bytes to the store's ``quarantine/``),
copies under-replicated objects from a replica whose bytes verify, empties ``draining`` stores,
and deletes what crashed writers left behind once it is old enough not to belong to a running
ingest. Every finding is one line through ``report`` and, when the audit trail has a kind for
it, one ``audit_events`` row.

Replicas are visited oldest ``lastcheck`` first and the check of each is committed as the run
goes, so a run cut short (``max_time``, a crash, Ctrl-C) loses nothing and the next run starts
where this one stopped. Only a rehash sets ``lastcheck``: readers trust a replica checked within
``verify_max_age_days`` without hashing it again, and a size check is no such verification.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path

from sqlalchemy import Connection, and_, bindparam, select

from treadle.errors import RepoDataError, RepoError, StoreUnreachable
from treadle.repo import audit, schema
from treadle.repo.checksums import CHUNK, Hasher
from treadle.repo.context import RepoContext
from treadle.repo.db import utcnow
from treadle.repo.stores import CheckStat, DirStore, Store, StoreRow, Written, fsync_dirs

GRACE = timedelta(hours=24)  # younger temp files, orphans and CREATING rows may be a running ingest's
_FLUSH_EVERY = 500  # successful checks committed together: one commit (an fsync) per 500, not per replica
_ID_CHUNK = 500  # values per IN (...) list, well under every database's bound-parameter limit

# A finding's outcome: repaired (or otherwise settled) by this run; still a problem; or a
# leftover young enough to belong to a running ingest, which is no problem yet.
FIXED, REMAINS, GRACE_PERIOD = "fixed", "remains", "grace"


@dataclass(frozen=True)
class Finding:
    """One thing fsck found, as reported on stderr and (with an audit kind) in ``audit_events``.

    ``kind`` is one of the audit trail's kinds (treadle.repo.audit.KINDS).
    """

    kind: str
    message: str
    outcome: str
    checksum: str | None = None
    storeid: int | None = None
    fileid: int | None = None


@dataclass
class FsckResult:
    """What a run found and did; ``exit_status`` is the command's (docs/repo.md, "fsck: audit, repair, garbage")."""

    findings: list[Finding] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)  # fileids whose object has no OK replica
    checked: int = 0  # replicas visited
    unvisited: int = 0  # replicas left for a later run by max_time
    hashed_bytes: int = 0

    @property
    def exit_status(self) -> int:
        """0 healthy; 1 problems found and all repaired; 2 problems remain (lost included)."""
        if any(f.outcome == REMAINS for f in self.findings):
            return 2
        if any(f.outcome == FIXED for f in self.findings):
            return 1
        return 0

    def summary(self) -> str:
        """One line: what was checked, the findings by kind and outcome, and the exit status."""
        counts: dict[str, int] = {}
        for finding in self.findings:
            label = finding.kind if finding.outcome == REMAINS else f"{finding.kind} ({finding.outcome})"
            counts[label] = counts.get(label, 0) + 1
        found = ", ".join(f"{n:,} {label}" for label, n in sorted(counts.items())) or "no problems"
        left = f", {self.unvisited:,} left for the next run (--max-time)" if self.unvisited else ""
        return (f"fsck: {self.checked:,} replicas checked{left}; {found}; "
                f"{len(self.lost):,} files lost; exit status {self.exit_status}")


@dataclass(frozen=True)
class _Verdict:
    """The outcome of examining one replica in a worker thread (no database access there)."""

    problem: str | None  # None: fine; "missing", "corrupt" or "unreachable"
    detail: str = ""
    stat: CheckStat | None = None
    hashed: int = 0


@dataclass(frozen=True)
class _Replica:
    replicaid: int
    checksum: str
    storeid: int
    state: str
    size: int


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), _ID_CHUNK):
        yield values[start:start + _ID_CHUNK]


def _hash_stream(store: Store, checksum: str) -> tuple[str, int]:
    hasher = Hasher()
    with store.open_read(checksum) as stream:
        while chunk := stream.read(CHUNK):
            hasher.update(chunk)
    return hasher.checksum, hasher.size


def _examine(store: Store, checksum: str, size: int, full: bool) -> _Verdict:
    """Whether ``store`` holds ``checksum`` with the right size (and, with ``full``, bytes)."""
    try:
        found = store.size_of(checksum)
        if found is None:
            return _Verdict("missing", "the object is absent")
        if found != size:
            return _Verdict("corrupt", f"{found:,} bytes instead of {size:,}")
        if not full:
            return _Verdict(None)
        # stat before reading: bytes that change after it no longer match what it recorded
        stat = store.stat_of(checksum) if isinstance(store, DirStore) else None
        actual, hashed = _hash_stream(store, checksum)
    except StoreUnreachable as e:
        return _Verdict("unreachable", str(e))
    except FileNotFoundError:
        return _Verdict("missing", "the object is absent")
    except OSError as e:
        return _Verdict("corrupt", f"unreadable: {e.strerror or e}")
    if actual != checksum:
        return _Verdict("corrupt", f"its bytes hash to {actual}", hashed=hashed)
    return _Verdict(None, stat=stat, hashed=hashed)


class _Run:
    """One fsck run over an open repository context (the phases are its methods, in order)."""

    def __init__(self, ctx: RepoContext, *, full: bool, repair: bool, gc: bool,
                 max_time: float | None, sample: float | None, store: str | None,
                 report: Callable[[str], None], jobs: int | None) -> None:
        self.ctx = ctx
        self.full, self.repair, self.gc = full, repair, gc
        self.deadline = None if max_time is None else time.monotonic() + max_time
        self.sample = sample
        self.report = report
        self.jobs = jobs or os.cpu_count() or 1
        self.result = FsckResult()
        self.rows = {row.storeid: row for row in ctx.stores()}
        self.only: StoreRow | None = None
        if store is not None:
            named = [row for row in self.rows.values() if row.name == store]
            if not named:
                names = ", ".join(row.name for row in self.rows.values())
                raise RepoError(f"no store {store!r} (stores: {names})")
            self.only = named[0]
        self.opened: dict[int, Store] = {}
        self.unreachable: set[int] = set()

    # -- findings ---------------------------------------------------------------------------

    def _find(self, finding: Finding, conn: Connection | None = None) -> None:
        """Report ``finding`` and record it (in ``conn``'s transaction when given)."""
        self.result.findings.append(finding)
        self.report(finding.message)
        if conn is not None:
            self._record(conn, finding)
            return
        with self.ctx.engine.begin() as own:
            self._record(own, finding)

    @staticmethod
    def _record(conn: Connection, finding: Finding) -> None:
        audit.record(conn, finding.kind, fileid=finding.fileid, checksum=finding.checksum,
                     storeid=finding.storeid, detail=finding.message)

    def _name(self, storeid: int) -> str:
        return self.rows[storeid].name

    def _first_fileids(self, checksums: Iterable[str]) -> dict[str, list[int]]:
        """The fileids (not DELETED) of each object, ascending, to name objects by in findings."""
        wanted = sorted(set(checksums))
        found: dict[str, list[int]] = {}
        files = schema.files
        with self.ctx.engine.connect() as conn:
            for chunk in _chunks(wanted):
                query = (select(files.c.checksum, files.c.fileid)
                         .where(files.c.checksum.in_(chunk), files.c.state != "DELETED")
                         .order_by(files.c.fileid))
                for checksum, fileid in conn.execute(query):
                    found.setdefault(checksum, []).append(fileid)
        return found

    @staticmethod
    def _label(checksum: str, fileids: dict[str, list[int]]) -> tuple[str, int | None]:
        """How a finding names an object (by its first fileid), and that fileid."""
        ids = fileids.get(checksum, [])
        if not ids:
            return f"object {checksum} (no file)", None
        more = f" and {len(ids) - 1:,} more" if len(ids) > 1 else ""
        return f"fileid {ids[0]}{more} ({checksum})", ids[0]

    # -- stores -------------------------------------------------------------------------------

    def _in_scope(self, storeid: int) -> bool:
        return self.only is None or self.only.storeid == storeid

    def _store(self, storeid: int) -> Store | None:
        """The open store, or None when it is down or unreachable (reported once)."""
        if storeid in self.unreachable or self.rows[storeid].state == "down":
            return None
        if storeid not in self.opened:
            opened = self.ctx.open_store(self.rows[storeid])
            try:
                opened.check()
            except StoreUnreachable as e:
                self._unreachable(storeid, str(e))
                return None
            self.opened[storeid] = opened
        return self.opened[storeid]

    def _unreachable(self, storeid: int, why: str) -> None:
        if storeid in self.unreachable:
            return
        self.unreachable.add(storeid)
        name = self._name(storeid)
        said = why if why.startswith(f"store {name}") else f"store {name} is unreachable: {why}"
        self._find(Finding("unreachable", f"{said}; its replicas were left as they are", REMAINS,
                           storeid=storeid))

    def check_stores(self) -> None:
        """Open every store in scope once, so an unreachable one is reported before any replica."""
        for storeid in sorted(self.rows):
            if self._in_scope(storeid):
                self._store(storeid)

    # -- replicas -----------------------------------------------------------------------------

    def _replicas_to_check(self) -> list[_Replica]:
        replicas, objects = schema.replicas, schema.objects
        query = (select(replicas.c.replicaid, replicas.c.checksum, replicas.c.storeid,
                        replicas.c.state, objects.c.size)
                 .join(objects, objects.c.checksum == replicas.c.checksum)
                 .where(replicas.c.state.in_(("OK", "SUSPECT")))
                 .order_by(replicas.c.lastcheck.asc().nulls_first(), replicas.c.replicaid))
        if self.only is not None:
            query = query.where(replicas.c.storeid == self.only.storeid)
        with self.ctx.engine.connect() as conn:
            rows = [_Replica(*row) for row in conn.execute(query)]
        if self.sample is not None:
            rng = random.Random()
            # a SUSPECT replica is always rechecked: a reader is waiting for its verdict
            rows = [r for r in rows if r.state == "SUSPECT" or rng.random() * 100 < self.sample]
        return rows

    def check_replicas(self) -> None:
        """Examine replicas in threads (hashing releases the GIL), oldest check first.

        At most a few replicas per thread are in flight, so ``max_time`` stops the run soon
        after it passes, and results are applied in visiting order.
        """
        todo = self._replicas_to_check()
        window: deque[tuple[_Replica, Future[_Verdict]]] = deque()
        verified: list[dict[str, object]] = []
        position = 0
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="fsck") as pool:
            while True:
                # the first replica is visited whatever max_time says, so every run progresses
                while (len(window) < 4 * self.jobs and position < len(todo)
                       and (position == 0 or not self._late())):
                    replica = todo[position]
                    position += 1
                    store = self._store(replica.storeid)
                    if store is None:
                        continue
                    full = self.full or replica.state == "SUSPECT"
                    window.append((replica, pool.submit(_examine, store, replica.checksum,
                                                        replica.size, full)))
                if not window:
                    break
                replica, future = window.popleft()
                self._apply(replica, future.result(), verified)
                if len(verified) >= _FLUSH_EVERY:
                    self._flush(verified)
        self._flush(verified)
        self.result.unvisited = len(todo) - position

    def _late(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _apply(self, replica: _Replica, verdict: _Verdict, verified: list[dict[str, object]]) -> None:
        """Act on one replica's verdict: note a good check, mark a bad replica BAD."""
        if replica.storeid in self.unreachable:
            return  # the store went away while this replica's check was in flight
        if verdict.problem == "unreachable":
            self._unreachable(replica.storeid, verdict.detail)
            return
        self.result.checked += 1
        self.result.hashed_bytes += verdict.hashed
        store = self.opened[replica.storeid]
        where = f"replica of {replica.checksum} on store {self._name(replica.storeid)}"
        if verdict.problem is None:
            if self.full or replica.state == "SUSPECT":
                verified.append({"rid": replica.replicaid, "was": replica.state, "now": utcnow(),
                                 "stat": verdict.stat.to_json() if verdict.stat else None})
            if replica.state == "SUSPECT":
                self._find(Finding("suspect", f"{where} was SUSPECT: rehashed, its bytes are right, "
                                              f"OK again", FIXED, replica.checksum, replica.storeid))
            return
        # A store that vanished mid-run makes every object look missing: ask the store first,
        # since an unreachable store's replicas must never become BAD.
        try:
            store.check()
        except StoreUnreachable as e:
            self._unreachable(replica.storeid, str(e))
            return
        moved = ""
        if verdict.problem == "corrupt" and isinstance(store, DirStore):
            try:
                moved = f"; moved to {store.quarantine(replica.checksum)}"
            except FileNotFoundError:
                moved = "; gone before it could be quarantined"
        with self.ctx.engine.begin() as conn:
            conn.execute(schema.replicas.update()
                         .where(schema.replicas.c.replicaid == replica.replicaid)
                         .values(state="BAD", lastcheck=utcnow(), check_stat=None))
            # settled here: the object's shortfall of copies is a finding of its own
            self._find(Finding(verdict.problem, f"{where}: {verdict.detail}: marked BAD{moved}",
                               FIXED, replica.checksum, replica.storeid), conn)

    def _flush(self, verified: list[dict[str, object]]) -> None:
        """Commit the good checks so far (a replica that changed state meanwhile is left alone)."""
        if not verified:
            return
        replicas = schema.replicas
        statement = (replicas.update()
                     .where(and_(replicas.c.replicaid == bindparam("rid"),
                                 replicas.c.state == bindparam("was")))
                     .values(state="OK", lastcheck=bindparam("now"), check_stat=bindparam("stat")))
        with self.ctx.engine.begin() as conn:
            conn.execute(statement, verified)
        verified.clear()

    # -- copies -------------------------------------------------------------------------------

    def holdings(self) -> dict[str, tuple[int, dict[int, str]]]:
        """checksum -> (size, {storeid: replica state}) for every object in scope."""
        replicas, objects = schema.replicas, schema.objects
        query = (select(objects.c.checksum, objects.c.size, replicas.c.storeid, replicas.c.state)
                 .outerjoin(replicas, replicas.c.checksum == objects.c.checksum))
        holdings: dict[str, tuple[int, dict[int, str]]] = {}
        with self.ctx.engine.connect() as conn:
            for checksum, size, storeid, state in conn.execute(query):
                entry = holdings.setdefault(checksum, (size, {}))
                if storeid is not None:
                    entry[1][storeid] = state
        if self.only is not None:
            holdings = {c: h for c, h in holdings.items() if self.only.storeid in h[1]}
        return holdings

    def _copy_to(self, checksum: str, size: int, states: dict[int, str], target_id: int) -> str:
        """Copy the object into store ``target_id`` from the first source whose bytes verify.

        The target checks what it receives against the checksum (a dir store hashes while
        writing; an http store refuses a mismatch), so a source with bad bytes only costs a
        try. Returns "" on success, else why not; the new replica row is committed here.
        """
        target = self.opened[target_id]
        sources = sorted((sid for sid, state in states.items()
                          if state == "OK" and self._store(sid) is not None),
                         key=lambda sid: (self.rows[sid].priority, sid))
        failures = []
        for source_id in sources:
            try:
                written = self._transfer(self.opened[source_id], target, checksum, size)
            except (RepoDataError, OSError) as e:
                failures.append(f"from {self._name(source_id)}: {e}")
                continue
            if isinstance(target, DirStore):
                fsync_dirs(target.dirs_touched)
                target.dirs_touched.clear()
            self._add_replica(checksum, target_id, states.get(target_id), written)
            states[target_id] = "OK"
            return ""
        return "; ".join(failures) or "no reachable replica to copy from"

    def _transfer(self, source: Store, target: Store, checksum: str, size: int) -> Written:
        if isinstance(source, DirStore):
            written = target.put_file(source.object_path(checksum), checksum, size)
        else:
            with tempfile.TemporaryDirectory(dir=self.ctx.dir, prefix=".fsck-") as scratch:
                local = Path(scratch) / "object"
                hasher = Hasher()
                with source.open_read(checksum) as stream, open(local, "wb") as out:
                    while chunk := stream.read(CHUNK):
                        hasher.update(chunk)
                        out.write(chunk)
                if hasher.checksum != checksum:
                    raise RepoDataError(f"the bytes received hash to {hasher.checksum}")
                written = target.put_file(local, checksum, size)
        if not written.created:
            # the target already had the bytes (an orphan of a crashed ingest): check them too
            verdict = _examine(target, checksum, size, full=True)
            if verdict.problem is not None:
                raise RepoDataError(f"store {target.name} already holds {checksum}, but "
                                    f"{verdict.detail}")
        return written

    def _add_replica(self, checksum: str, storeid: int, old_state: str | None, written: Written) -> None:
        replicas = schema.replicas
        values = {"state": "OK", "lastcheck": utcnow(),
                  "check_stat": written.stat.to_json() if written.stat else None}
        with self.ctx.engine.begin() as conn:
            if old_state is None:
                conn.execute(replicas.insert().values(checksum=checksum, storeid=storeid, **values))
            else:
                conn.execute(replicas.update().where(and_(replicas.c.checksum == checksum,
                                                          replicas.c.storeid == storeid))
                             .values(**values))

    def _targets(self, checksum: str, states: dict[int, str]) -> list[int]:
        """Stores that may receive a new copy: up, reachable, and not holding this object.

        A BAD replica's store qualifies once its bad bytes are gone (quarantined or missing);
        bytes still there (a remote store cannot quarantine) are not overwritten.
        """
        chosen = []
        for storeid in sorted(self.rows, key=lambda sid: (self.rows[sid].priority, sid)):
            state = states.get(storeid)
            if self.rows[storeid].state != "up" or state not in (None, "BAD"):
                continue
            store = self._store(storeid)
            if store is None:
                continue
            if state == "BAD":
                try:
                    if store.size_of(checksum) is not None:
                        continue
                except StoreUnreachable as e:
                    self._unreachable(storeid, str(e))
                    continue
            chosen.append(storeid)
        return chosen

    def _top_up(self, checksum: str, size: int, states: dict[int, str], *, counted: Callable[[int], bool],
                wanted: int) -> tuple[int, list[str], list[str]]:
        """Copy until ``wanted`` OK replicas on stores that ``counted`` accepts exist.

        Returns (copies now, names of the stores copied to, reasons copies failed).
        """
        have = [sid for sid, state in states.items() if state == "OK" and counted(sid)]
        made: list[str] = []
        failed: list[str] = []
        for target_id in self._targets(checksum, states):
            if len(have) >= wanted:
                break
            if not counted(target_id):
                continue
            why = self._copy_to(checksum, size, states, target_id)
            if why:
                failed.append(f"to {self._name(target_id)}: {why}")
                continue
            have.append(target_id)
            made.append(self._name(target_id))
        return len(have), made, failed

    # -- draining and interrupted deletions ---------------------------------------------------

    def drain(self, holdings: dict[str, tuple[int, dict[int, str]]]) -> None:
        """Move replicas off ``draining`` stores and finish deletions a crash interrupted.

        Without ``repair`` each draining store is one finding. With it, an OK replica leaves only
        once R OK copies exist on other stores (copied here when needed); then its row becomes
        DELETING, the object is deleted and the row removed, in that order, so a crash at any
        point leaves a row that the next run finishes, never a row without bytes.
        """
        leaving = [(checksum, storeid) for checksum, (_, states) in holdings.items()
                   for storeid, state in states.items()
                   if self._in_scope(storeid) and state != "CREATING"
                   and (self.rows[storeid].state == "draining" or state == "DELETING")]
        if not self.repair:
            pending: dict[int, int] = {}
            for _, storeid in leaving:
                pending[storeid] = pending.get(storeid, 0) + 1
            for storeid, count in sorted(pending.items()):
                self._find(Finding("draining", f"store {self._name(storeid)}: {count:,} replicas to "
                                               f"move off or delete (fsck --repair does it)",
                                   REMAINS, storeid=storeid))
            return
        fileids = self._first_fileids(checksum for checksum, _ in leaving)
        for checksum, storeid in leaving:
            size, states = holdings[checksum]
            self._leave(checksum, size, states, storeid, self._label(checksum, fileids))

    def _leave(self, checksum: str, size: int, states: dict[int, str], storeid: int,
               label: tuple[str, int | None]) -> None:
        """Remove one replica from its store, after copying it elsewhere if it is a good one."""
        what, fileid = label
        name = self._name(storeid)
        store = self._store(storeid)
        if store is None:
            self._find(Finding("draining", f"{what}: its replica on store {name} cannot be removed "
                                           f"while the store is unreachable or down", REMAINS,
                               checksum, storeid, fileid))
            return
        copied = ""
        if states[storeid] in ("OK", "SUSPECT"):
            wanted = self.ctx.config.replicas

            def elsewhere(sid: int) -> bool:
                return sid != storeid and self.rows[sid].state != "draining"

            have, made, failed = self._top_up(checksum, size, states, counted=elsewhere, wanted=wanted)
            if have < wanted:
                self._find(Finding("underreplicated",
                                   f"{what}: kept on store {name}: only {have} of {wanted} OK "
                                   f"copies elsewhere{_failures(failed)}",
                                   REMAINS, checksum, storeid, fileid))
                return
            copied = f"copied to {', '.join(made)}, then " if made else ""
        replicas = schema.replicas
        row = and_(replicas.c.checksum == checksum, replicas.c.storeid == storeid)
        with self.ctx.engine.begin() as conn:
            conn.execute(replicas.update().where(row).values(state="DELETING"))
        try:
            store.delete(checksum)
        except (RepoError, RepoDataError, OSError) as e:
            # e.g. a store served over HTTP, which deletes nothing: the replica stays as it was
            with self.ctx.engine.begin() as conn:
                conn.execute(replicas.update().where(row).values(state=states[storeid]))
            self._find(Finding("draining", f"{what}: {copied}not removed from store {name}: {e}",
                               REMAINS, checksum, storeid, fileid))
            return
        with self.ctx.engine.begin() as conn:
            conn.execute(replicas.delete().where(row))
            self._find(Finding("repaired", f"{what}: {copied}removed from store {name} "
                                           f"({self.rows[storeid].state})", FIXED,
                               checksum, storeid, fileid), conn)
        del states[storeid]

    # -- replication --------------------------------------------------------------------------

    def replication(self, holdings: dict[str, tuple[int, dict[int, str]]]) -> None:
        """Find objects short of R OK replicas (copying with ``repair``) and lost ones."""
        wanted = self.ctx.config.replicas
        short = {checksum: entry for checksum, entry in holdings.items()
                 if sum(state == "OK" for state in entry[1].values()) < wanted}
        fileids = self._first_fileids(short)
        for checksum, (size, states) in sorted(short.items()):
            what, fileid = self._label(checksum, fileids)
            have = sum(state == "OK" for state in states.values())
            if have == 0:
                self.result.lost.extend(fileids.get(checksum, []))
                self._find(Finding("lost", f"{what}: lost: no OK replica left "
                                           f"({_listing(states, self._name)})",
                                   REMAINS, checksum, None, fileid))
                continue
            if not self.repair:
                self._find(Finding("underreplicated", f"{what}: {have} of {wanted} OK replicas "
                                                      f"(fsck --repair copies it)",
                                   REMAINS, checksum, None, fileid))
                continue
            now, made, failed = self._top_up(checksum, size, states, counted=lambda sid: True,
                                             wanted=wanted)
            copies = f": copied to {', '.join(made)}" if made else ""
            if now >= wanted:
                self._find(Finding("repaired", f"{what}: had {have} of {wanted} OK replicas"
                                               f"{copies}", FIXED, checksum, None, fileid))
            else:
                self._find(Finding("underreplicated",
                                   f"{what}: {now} of {wanted} OK replicas{copies}; no further "
                                   f"store could take a copy{_failures(failed)}",
                                   REMAINS, checksum, None, fileid))
        self.result.lost.sort()

    # -- garbage ------------------------------------------------------------------------------

    def creating(self) -> None:
        """Replica rows left ``CREATING`` by an unfinished write; ``gc`` removes old ones.

        Their age is their ``lastcheck`` (the time the row was made); a row without one is
        taken as old. The object a removed row named becomes an orphan, collected below.
        """
        replicas = schema.replicas
        query = (select(replicas.c.replicaid, replicas.c.checksum, replicas.c.storeid,
                        replicas.c.lastcheck).where(replicas.c.state == "CREATING"))
        now = utcnow()
        with self.ctx.engine.connect() as conn:
            rows = [row for row in conn.execute(query) if self._in_scope(row.storeid)]
        for replicaid, checksum, storeid, made in rows:
            where = f"replica of {checksum} on store {self._name(storeid)} is CREATING"
            if made is not None and now - made < GRACE:
                self._find(Finding("orphan", f"{where} since {made:%Y-%m-%d %H:%M} UTC: "
                                             f"left alone (may be a running ingest's)",
                                   GRACE_PERIOD, checksum, storeid))
            elif not self.gc:
                self._find(Finding("orphan", f"{where} for more than 24 h (fsck --gc removes the row)",
                                   REMAINS, checksum, storeid))
            else:
                with self.ctx.engine.begin() as conn:
                    conn.execute(replicas.delete().where(and_(replicas.c.replicaid == replicaid,
                                                              replicas.c.state == "CREATING")))
                    self._find(Finding("orphan", f"{where} for more than 24 h: row removed",
                                       FIXED, checksum, storeid), conn)

    def _without_ok_replica(self) -> set[str]:
        replicas, objects = schema.replicas, schema.objects
        good = (select(replicas.c.replicaid)
                .where(replicas.c.checksum == objects.c.checksum, replicas.c.state == "OK"))
        with self.ctx.engine.connect() as conn:
            return set(conn.execute(select(objects.c.checksum).where(~good.exists())).scalars())

    def orphans(self) -> None:
        """Object files no replica row names, and temp files, in every reachable dir store.

        Younger than 24 h they may belong to a running ingest and are left alone. ``gc``
        deletes older ones, except the bytes of an object that has no OK replica: those are
        kept, so that the file can still be restored from them. ``quarantine/`` is never touched.
        """
        lost = self._without_ok_replica() if self.gc else set()
        replicas = schema.replicas
        now = time.time()
        for storeid in sorted(self.rows):
            store = self._store(storeid) if self._in_scope(storeid) else None
            if not isinstance(store, DirStore):
                continue
            with self.ctx.engine.connect() as conn:
                known = set(conn.execute(select(replicas.c.checksum)
                                         .where(replicas.c.storeid == storeid)).scalars())
            for checksum, path in store.iter_objects():
                if checksum in known:
                    continue
                self._leftover(store, storeid, path, checksum, now,
                               keep=checksum in lost, delete=partial(store.delete, checksum))
            for path in store.iter_temp():
                self._leftover(store, storeid, path, None, now, keep=False,
                               delete=partial(path.unlink, missing_ok=True))

    def _leftover(self, store: DirStore, storeid: int, path: Path, checksum: str | None, now: float,
                  *, keep: bool, delete: Callable[[], None]) -> None:
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            return  # a running ingest renamed or removed it meanwhile
        what = f"store {store.name}: {'object' if checksum else 'temp file'} {path}"
        if checksum is not None:
            what += " that no replica row names"
        if age < GRACE.total_seconds():
            self._find(Finding("orphan", f"{what}, {age / 3600:.1f} h old: left alone "
                                         f"(may be a running ingest's)", GRACE_PERIOD,
                               checksum, storeid))
        elif not self.gc:
            self._find(Finding("orphan", f"{what}, older than 24 h (fsck --gc deletes it)",
                               REMAINS, checksum, storeid))
        elif keep:
            self._find(Finding("orphan", f"{what}: kept: the only bytes of an object with no OK "
                                         f"replica", REMAINS, checksum, storeid))
        else:
            delete()
            self._find(Finding("orphan", f"{what}, older than 24 h: deleted", FIXED,
                               checksum, storeid))

    # -- invariants ---------------------------------------------------------------------------

    def invariants(self) -> None:
        """Rows naming what does not exist: a file without its object row, a user row or link
        naming a missing fileid. Foreign keys forbid them, so one means the database was
        written around treadle (or with foreign keys off); fsck reports, never guesses a fix."""
        files, objects = schema.files, schema.objects
        with self.ctx.engine.connect() as conn:
            query = (select(files.c.fileid, files.c.checksum)
                     .outerjoin(objects, objects.c.checksum == files.c.checksum)
                     .where(objects.c.checksum.is_(None)).order_by(files.c.fileid))
            broken = [(f"fileid {fileid} names object {checksum}, which the objects table lacks",
                       fileid, checksum) for fileid, checksum in conn.execute(query)]
            for name in schema.user_tables(conn):
                table = schema.reflect_user_table(conn, name)
                if "fileid" not in table.c:
                    continue  # not made by treadle: nothing here names a file
                for column in table.c:
                    if column.name != "fileid" and schema.column_kind(column) != "fileid":
                        continue
                    query = (select(table.c.fileid, column)
                             .outerjoin(files, files.c.fileid == column)
                             .where(column.is_not(None), files.c.fileid.is_(None))
                             .order_by(table.c.fileid))
                    broken.extend((f"table {name}: row fileid {row_id} names fileid {missing} in "
                                   f"column {column.name}, which the files table lacks",
                                   missing, None) for row_id, missing in conn.execute(query))
        for message, fileid, checksum in broken:
            self._find(Finding("invariant", message, REMAINS, checksum, None, fileid))


def _failures(failed: list[str]) -> str:
    return f" ({'; '.join(failed)})" if failed else ""


def _listing(states: dict[int, str], name: Callable[[int], str]) -> str:
    if not states:
        return "no replica rows"
    return ", ".join(f"{name(storeid)} {state}" for storeid, state in sorted(states.items()))


def fsck(ctx: RepoContext, *, full: bool = False, repair: bool = False, gc: bool = False,
         max_time: float | None = None, sample: float | None = None, store: str | None = None,
         report: Callable[[str], None] = lambda line: None, jobs: int | None = None) -> FsckResult:
    """Check (and with ``repair``/``gc`` mend) the repository of ``ctx``; see the module doc.

    ``max_time`` (seconds) bounds the replica checks, the part that grows with the data; the
    database-wide counts that follow always run, so the exit status stays honest. Since only
    a rehash sets ``lastcheck``, it is runs with ``full`` that take turns over the replicas. ``sample``
    checks a random percentage of the OK replicas; ``store`` limits the run to one store;
    ``jobs`` is the number of hashing threads (default: the core count). ``repair`` and ``gc``
    write objects and delete them, so they need the writer lock (``open_context(write=True)``).
    """
    if (repair or gc) and ctx.lock is None:
        raise RepoError("fsck --repair and --gc need the writer lock: open the repository for writing")
    if sample is not None and not 0 < sample <= 100:
        raise RepoError(f"--sample must be a percentage above 0 and at most 100, not {sample:g}")
    if max_time is not None and max_time < 0:
        raise RepoError(f"--max-time must not be negative, not {max_time:g}")
    run = _Run(ctx, full=full, repair=repair, gc=gc, max_time=max_time, sample=sample, store=store,
               report=report, jobs=jobs)
    run.check_stores()
    run.check_replicas()
    holdings = run.holdings()
    run.drain(holdings)
    run.replication(holdings)
    run.creating()
    run.orphans()
    if store is None:
        run.invariants()
    if run.result.lost:
        report(f"lost ({len(run.result.lost):,} files, no OK replica anywhere): fileids "
               + ", ".join(str(fileid) for fileid in run.result.lost))
    return run.result
