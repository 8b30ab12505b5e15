"""Adding files and their metadata to a repository, batch by batch (docs/repo.md, "Ingest").

Each batch (500 rows or 256 MiB of files) is checked; each source is read once by a pool of
threads, hashed, and written into ``tmp/`` of every target store; the stores' files are made
durable, named, and the names made durable; only then is the batch recorded in ONE transaction
(see ``_IngestRun._make_durable`` for the order that keeps this safe). So a row is visible only when
its bytes are durable in ``min_replicas`` stores, a crash leaves at worst unreferenced objects and
temp files, and readers see whole batches. Rerunning the same ingest skips the rows already there.
"""

from __future__ import annotations

import functools
import mimetypes
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Dialect, Index, Table, and_, bindparam, func, select

from treadle.errors import RepoDataError, RepoError, StoreUnreachable
from treadle.repo import schema
from treadle.repo.checksums import hash_file
from treadle.repo.context import RepoContext
from treadle.repo.db import utcnow
from treadle.repo.disk import sync_filesystem
from treadle.repo.manifest import (
    BadRow,
    Manifest,
    ManifestRow,
    Typed,
    columns_of,
    convert,
    files_manifest,
    infer_types,
    open_manifest,
    row_converter,
)
from treadle.repo.stores import (
    DirStore,
    Staged,
    Store,
    StoreRow,
    Written,
    fsync_dirs,
    fsync_files,
    stage,
)

BATCH_ROWS = 500
BATCH_BYTES = 256 << 20
# stores that take new replicas; readonly, draining and down ones do not (docs/repo.md, "Stores")
WRITABLE_STATE = "up"

# the order of the values _insert_files takes for each ``files`` row
FILE_COLUMNS = ("checksum", "size", "extension", "media_type", "state", "created_at", "ingest_id", "source")

# the statements every batch runs, built once (building one costs more than running it)
_LAST_FILEID = select(func.coalesce(func.max(schema.files.c.fileid), 0))
_FILEIDS_AFTER = select(func.count(), func.min(schema.files.c.fileid), func.max(schema.files.c.fileid)) \
    .where(schema.files.c.fileid > bindparam("before"))
_EACH_FILEID_AFTER = select(schema.files.c.fileid).where(schema.files.c.fileid > bindparam("before")) \
    .order_by(schema.files.c.fileid)
_COUNT_INGESTED = schema.ingests.update().where(schema.ingests.c.ingest_id == bindparam("i_id")).values(
    rows=schema.ingests.c.rows + bindparam("i_rows"), bytes=schema.ingests.c.bytes + bindparam("i_bytes"))

Progress = Callable[[str], None]
StatKey = tuple[int, int, int, int, int]  # device, inode, size, mtime_ns, ctime_ns


@dataclass
class IngestResult:
    """What an ingest did; ``to_json()`` is the object ``--json`` prints."""

    ingest_id: int
    table: str
    added: int = 0
    skipped: int = 0
    bytes: int = 0
    fileids: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False

    def to_json(self) -> dict[str, object]:
        return {"ingest_id": self.ingest_id, "table": self.table, "added": self.added,
                "skipped": self.skipped, "bytes": self.bytes, "fileids": self.fileids,
                "warnings": self.warnings, "interrupted": self.interrupted}


@dataclass(frozen=True)
class Link:
    """``--link T2.col=FIELD[:COL]``: set ``T2.col`` to the new fileid where ``T2.COL`` = FIELD."""

    table: str
    column: str
    field: str
    match: str = "fileid"

    def __str__(self) -> str:
        return f"{self.table}.{self.column}={self.field}:{self.match}"


def default_jobs() -> int:
    """Copy threads when --jobs is not given: four per core, at least eight.

    A copy waits for its source's reads and for page-cache writes as much as it hashes, so
    more threads than cores keep the cores busy.
    """
    return max(8, 4 * (os.cpu_count() or 1))


def parse_link(text: str) -> Link:
    """A Link from its option text; RepoError for anything not of the form ``T2.col=FIELD[:COL]``."""
    target, eq, source = text.partition("=")
    table, dot, column = target.partition(".")
    field_name, _, match = source.partition(":")
    if not eq or not dot or not field_name:
        raise RepoError(f"--link {text!r}: write TABLE.COLUMN=FIELD or TABLE.COLUMN=FIELD:MATCH_COLUMN")
    link = Link(schema.check_name(table, "table"), schema.check_name(column, "column"),
                schema.check_name(field_name, "field"), schema.check_name(match, "column") if match else "fileid")
    return link


@dataclass(slots=True)
class _Item:
    """One manifest row on its way into the repository."""

    row: ManifestRow
    stat: os.stat_result | None = None
    stat_error: str | None = None
    values: dict[str, Typed] = field(default_factory=dict)
    key: Typed = None
    present: tuple[int, str] | None = None  # (fileid, checksum) of the row with this key
    problem: str | None = None
    copy: _Copy | None = None
    links: dict[Link, Typed] = field(default_factory=dict)  # link -> the T2 value to match

    @property
    def size(self) -> int:
        return self.stat.st_size if self.stat is not None else 0

    @property
    def copied(self) -> _Copy:
        """The copy of a row that got past step 2 (every row that reaches the transaction)."""
        assert self.copy is not None
        return self.copy

    @property
    def stat_key(self) -> StatKey:
        st = self.stat
        assert st is not None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass
class _Copy:
    """One source file written into the stores: its object and where it is now durable."""

    checksum: str
    size: int
    written: dict[int, Written]  # storeid -> outcome
    failures: dict[str, str]  # store name -> why it did not take the object
    staged: dict[int, Staged] = field(default_factory=dict)  # storeid -> bytes in its tmp/, to place
    recorded: bool = False  # in objects and replicas by a batch of this run that committed


class _SourceError(Exception):
    """The source file could not be read: a bad row, not a store failure."""


def ingest(ctx: RepoContext, source: str | Path | None, *, table: str, key: str | None = None,
           links: Iterable[str | Link] = (), types: Mapping[str, str] | None = None,
           jobs: int | None = None, files: Sequence[str] | None = None, name_regex: str | None = None,
           replace: bool = False, skip_existing: bool = False, skip_bad: bool = False,
           index: Iterable[str] = (), stop: threading.Event | None = None,
           progress: Progress | None = None, command: str = "") -> IngestResult:
    """Ingest the rows of a manifest (``source``) or of ``files`` into user table ``table``.

    ``ctx`` must hold the writer lock (``open_context(..., write=True)``). ``stop``, when set,
    lets the current batch commit and then returns with ``interrupted=True``. ``progress``
    receives human-readable lines (resuming, each batch, warnings). ``command`` is recorded in
    ``ingests`` as how the ingest was asked for. Bad input raises RepoError naming the manifest
    and line (unless ``skip_bad``); too few usable stores raise StoreUnreachable.
    """
    if ctx.lock is None:
        raise RepoError("ingest needs the writer lock: open the repository with write=True")
    schema.check_name(table, "table")
    if files is not None:
        manifest = files_manifest(files, name_regex)
    elif source is not None:
        if name_regex is not None:
            raise RepoError("--name-regex applies to --files, not to a manifest")
        manifest = open_manifest(source)
    else:
        raise RepoError("give a manifest or --files")
    if skip_existing and key is None:
        raise RepoError("--skip-existing needs --key (without a key, a row is known by its bytes)")
    run = _IngestRun(ctx, manifest, table=table, key=key,
                     links=[link if isinstance(link, Link) else parse_link(link) for link in links],
                     types=dict(types or {}), jobs=jobs or default_jobs(), replace=replace,
                     skip_existing=skip_existing, skip_bad=skip_bad, index=list(index),
                     stop=stop or threading.Event(), progress=progress or (lambda line: None),
                     command=command)
    return run.run()


class _IngestRun:
    """The state of one ingest: options, the user table as known so far, counters, threads."""

    def __init__(self, ctx: RepoContext, manifest: Manifest, *, table: str, key: str | None,
                 links: list[Link], types: dict[str, str], jobs: int, replace: bool,
                 skip_existing: bool, skip_bad: bool, index: list[str], stop: threading.Event,
                 progress: Progress, command: str) -> None:
        self.ctx = ctx
        self.manifest = manifest
        self.table_name = table
        self.key = key
        self.links = links
        self.given_types = types
        self.jobs = jobs
        self.replace = replace
        self.skip_existing = skip_existing
        self.skip_bad = skip_bad
        self.index = index
        self.stop = stop
        self.progress = progress
        self.command = command
        self.table: Table | None = None
        self.types: dict[str, str] = {}
        self.convert_row = row_converter({})  # set with the types, once they are known
        self.new_table = False
        self.keys_seen: set[Typed] = set()
        self.copied: dict[StatKey, _Copy] = {}
        self.stores: dict[tuple[int, str], Store] = {}
        self.unreachable_said: set[str] = set()
        self.failures_said: set[str] = set()
        self.link_tables: dict[str, Table] = {}
        self.result = IngestResult(ingest_id=0, table=table)
        self.total = 0

    # --- the whole run -------------------------------------------------------------------------

    def run(self) -> IngestResult:
        self._mark_dead_ingests()
        self._load_table()
        self._say_resuming()
        self.result.ingest_id = self._start_ingest_row()
        executor = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="ingest")
        try:
            for number, batch in enumerate(self._batches(), start=1):
                if self.stop.is_set():
                    break  # asked to stop before this batch began: the ones before it are in
                self._ingest_batch(number, batch, executor)
        except BaseException as e:
            # copies still queued are dropped; the batch's transaction was rolled back or never opened
            executor.shutdown(wait=False, cancel_futures=True)
            self._finish_ingest_row("interrupted" if isinstance(e, KeyboardInterrupt) else "failed")
            raise
        executor.shutdown()
        self.result.interrupted = self.stop.is_set()
        self._finish_ingest_row("interrupted" if self.result.interrupted else "done")
        return self.result

    def _mark_dead_ingests(self) -> None:
        """``running`` ingests are dead: this process holds the writer lock, so none can run."""
        with self.ctx.engine.begin() as conn:
            conn.execute(schema.ingests.update().where(schema.ingests.c.state == "running")
                         .values(state="interrupted", finished_at=utcnow()))

    def _start_ingest_row(self) -> int:
        with self.ctx.engine.begin() as conn:
            inserted = conn.execute(schema.ingests.insert().values(
                table_name=self.table_name, source=self.manifest.name, command=self.command,
                host=socket.gethostname(), pid=os.getpid(), started_at=utcnow(), state="running",
                rows=0, bytes=0).returning(schema.ingests.c.ingest_id))
            return int(inserted.scalar_one())

    def _finish_ingest_row(self, state: str) -> None:
        with self.ctx.engine.begin() as conn:
            conn.execute(schema.ingests.update()
                         .where(schema.ingests.c.ingest_id == self.result.ingest_id)
                         .values(state=state, finished_at=utcnow()))

    def _load_table(self) -> None:
        """Reflect the user table if it exists; its columns' types then rule the manifest's."""
        with self.ctx.engine.connect() as conn:
            if self.table_name not in schema.user_tables(conn):
                return
            table = schema.reflect_user_table(conn, self.table_name)
        types = {c.name: schema.column_kind(c) for c in table.columns if c.name != "fileid"}
        for name, kind in self.given_types.items():
            if name not in types:
                raise RepoError(f"--types {name}={kind}: table {self.table_name} has no column {name} "
                                f"(columns: {', '.join(types)})")
            if types[name] != kind:
                raise RepoError(f"--types {name}={kind}: column {name} of table {self.table_name} "
                                f"is {types[name]}")
        if self.key is not None and self.key not in types:
            raise RepoError(f"--key {self.key}: table {self.table_name} has no such column "
                            f"(columns: {', '.join(types)})")
        self.table = table
        self.types = types
        self.convert_row = row_converter(types)

    def _say_resuming(self) -> None:
        """How far an earlier run came: rows present by key, or by source without a key.

        Only a table that exists can hold rows of an earlier run, so only then is the manifest
        read an extra time for this.
        """
        if self.table is None:
            return
        table = self.table
        wanted: list[Typed] = []
        kind = self.types[self.key] if self.key is not None else "text"
        for row in self.manifest.rows():
            self.total += 1
            try:
                wanted.append(row.source if self.key is None else convert(row.values.get(self.key), kind))
            except ValueError:
                continue
        if self.key is not None:
            column = table.c[self.key]
            query = select(func.count()).select_from(table)
        else:
            column = schema.files.c.source
            query = select(func.count(func.distinct(schema.files.c.source))).select_from(
                table.join(schema.files, table.c.fileid == schema.files.c.fileid))
        distinct = list(dict.fromkeys(v for v in wanted if v is not None and v != ""))
        present = 0
        with self.ctx.engine.connect() as conn:
            for start in range(0, len(distinct), BATCH_ROWS):
                chunk = distinct[start:start + BATCH_ROWS]
                present += int(conn.execute(query.where(column.in_(chunk))).scalar_one())
        if present:
            self.progress(f"resuming: {present:,} of {self.total:,} rows already present")

    # --- batches -------------------------------------------------------------------------------

    def _batches(self) -> Iterator[list[_Item]]:
        """Rows in batches of BATCH_ROWS rows or BATCH_BYTES bytes of files, stat-ed on the way."""
        batch: list[_Item] = []
        size = 0
        # a file named by many rows of a batch is stat-ed once (it is copied once too)
        stats: dict[str, tuple[os.stat_result | None, str | None]] = {}
        for row in self.manifest.rows():
            item = _Item(row, problem=row.problem)
            if item.problem is None:
                known = stats.get(row.path)
                if known is None:
                    known = stats[row.path] = _stat_source(row)
                item.stat, item.stat_error = known
            batch.append(item)
            size += item.size
            if len(batch) >= BATCH_ROWS or size >= BATCH_BYTES:
                yield batch
                batch, size, stats = [], 0, {}
        if batch:
            yield batch

    def _ingest_batch(self, number: int, items: list[_Item], executor: ThreadPoolExecutor) -> None:
        self._check(items)
        work = [item for item in items if item.problem is None and not self._skipped_unread(item)]
        self._refuse_or_skip_bad(items)
        work = [item for item in work if item.problem is None]
        targets = self._copy(work, executor)
        self._make_durable(work, targets, executor)
        self._check_replica_counts(work)
        self._refuse_or_skip_bad(work)
        work = [item for item in work if item.problem is None]
        with self.ctx.engine.begin() as conn:
            added = self._commit(conn, work)
        for item in work:
            if item.copy is not None:
                item.copy.recorded = True
        self.result.skipped += len(items) - len(added)
        self.result.added += len(added)
        self.result.fileids.extend(added)
        done = self.result.added + self.result.skipped
        of = f" of {self.total:,}" if self.total else ""
        self.progress(f"batch {number}: {len(added):,} rows added ({done:,}{of} rows done, "
                      f"{self.result.bytes:,} bytes so far)")

    def _skipped_unread(self, item: _Item) -> bool:
        return self.skip_existing and item.present is not None

    # --- step 1: check -------------------------------------------------------------------------

    def _check(self, items: list[_Item]) -> None:
        """Types, key repeats, presence by key, link targets: each problem is set on its item."""
        if self.table is None:
            self._decide_types(items)  # until a batch adds rows and so creates the table
        for item in items:
            if item.problem is not None:
                continue
            try:
                item.values = self.convert_row(item.row)
            except BadRow as e:
                item.problem = e.reason
                continue
            if self.key is not None:
                item.key = item.values.get(self.key)
                if item.key is None:
                    item.problem = f"column {self.key!r}: the key is empty"
                elif item.key in self.keys_seen:
                    item.problem = f"column {self.key!r}: the key {item.key!r} appears earlier in the manifest"
                else:
                    self.keys_seen.add(item.key)
        if self.key is not None and self.table is not None and not self.new_table:
            self._find_present(items)  # a table this run made holds only keys it has seen
        for item in items:
            if item.problem is None and item.stat_error is not None and not self._skipped_unread(item):
                item.problem = item.stat_error
        if self.links:
            # a present row keeps its links, unless --replace is to point them at a changed file
            self._check_links([i for i in items if i.problem is None and (i.present is None or self.replace)
                               and not self._skipped_unread(i)])

    def _decide_types(self, items: list[_Item]) -> None:
        """A new table's columns and types, from its first batch and ``--types``."""
        rows = [item.row for item in items]
        columns = columns_of(rows)
        types = infer_types(rows, columns, self.given_types)
        for name in types:
            schema.check_name(name, "column")
            if name == "fileid":
                raise RepoError(f"{self.manifest.name}: column 'fileid' is the one treadle gives "
                                f"every row; rename it")
        if self.key is not None and self.key not in types:
            raise RepoError(f"--key {self.key}: the manifest has no such column "
                            f"(columns: {', '.join(types) or 'none'})")
        for name in self.index:
            if name not in types:
                raise RepoError(f"--index {name}: the manifest has no such column "
                                f"(columns: {', '.join(types) or 'none'})")
        self.types = types
        self.convert_row = row_converter(types)

    def _find_present(self, items: list[_Item]) -> None:
        """Mark the items whose key is in the table already, with that row's fileid and checksum."""
        assert self.table is not None and self.key is not None
        keyed = [i for i in items if i.problem is None]
        if not keyed:
            return
        column = self.table.c[self.key]
        query = (select(column, schema.files.c.fileid, schema.files.c.checksum)
                 .select_from(self.table.join(schema.files, self.table.c.fileid == schema.files.c.fileid))
                 .where(column.in_([i.key for i in keyed])))
        with self.ctx.engine.connect() as conn:
            present = {k: (fileid, checksum) for k, fileid, checksum in conn.execute(query)}
        for item in keyed:
            item.present = present.get(item.key)

    def _link_table(self, conn: Connection, name: str) -> Table:
        if name not in self.link_tables:
            self.link_tables[name] = schema.reflect_user_table(conn, name)
        return self.link_tables[name]

    def _check_links(self, items: list[_Item]) -> None:
        """Each link's target row must exist once and be unlinked (unless --replace)."""
        with self.ctx.engine.connect() as conn:
            for link in self.links:
                target = self._link_table(conn, link.table)
                if link.match not in target.c:
                    raise RepoError(f"--link {link}: table {link.table} has no column {link.match} "
                                    f"(columns: {', '.join(target.c.keys())})")
                if link.column in target.c and schema.column_kind(target.c[link.column]) != "fileid":
                    raise RepoError(f"--link {link}: column {link.table}.{link.column} is not a link "
                                    f"to files (it is {schema.column_kind(target.c[link.column])})")
                match_kind = schema.column_kind(target.c[link.match])
                wanted: list[Typed] = []
                for item in items:
                    try:
                        value = convert(item.row.values.get(link.field), match_kind)
                    except ValueError as e:
                        item.problem = f"--link {link}: field {link.field!r}: {e}"
                        continue
                    if value is None:
                        item.problem = f"--link {link}: field {link.field!r} is empty"
                        continue
                    item.links[link] = value
                    wanted.append(value)
                current = target.c[link.column] if link.column in target.c else None
                found: dict[Typed, list[Typed]] = {}
                if wanted:
                    query = select(target.c[link.match], current if current is not None else target.c.fileid) \
                        .where(target.c[link.match].in_(list(set(wanted))))
                    for value, linked in conn.execute(query):
                        found.setdefault(value, []).append(linked if current is not None else None)
                for item in items:
                    if item.problem is not None or link not in item.links:
                        continue
                    value = item.links[link]
                    matches = found.get(value, [])
                    if not matches:
                        item.problem = f"--link {link}: no row of {link.table} has {link.match} = {value!r}"
                    elif len(matches) > 1:
                        item.problem = (f"--link {link}: {len(matches)} rows of {link.table} have "
                                        f"{link.match} = {value!r}")
                    elif matches[0] is not None and not self.replace:
                        item.problem = (f"--link {link}: the row of {link.table} with {link.match} = "
                                        f"{value!r} is already linked to fileid {matches[0]} "
                                        f"(--replace links it to the new file)")

    def _refuse_or_skip_bad(self, items: list[_Item]) -> None:
        """Bad rows fail the batch before anything of it is committed, or are skipped with --skip-bad."""
        bad = [item for item in items if item.problem is not None]
        if not bad:
            return
        messages = [f"{item.row.where}: {item.problem}" for item in bad]
        if not self.skip_bad:
            more = f" (and {len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
            raise RepoError(f"{messages[0]}{more}; nothing of this batch was added "
                            f"(--skip-bad goes on without such rows)")
        for message in messages:
            self._warn(f"skipped {message}")

    def _warn(self, message: str) -> None:
        self.result.warnings.append(message)
        self.progress(f"warning: {message}")

    # --- steps 2-4: copy, replicate, make durable ------------------------------------------------

    def _usable_stores(self) -> list[tuple[StoreRow, Store]]:
        """The first R stores that take new replicas and answer; StoreUnreachable below min_replicas."""
        config = self.ctx.config
        usable: list[tuple[StoreRow, Store]] = []
        unreachable: list[str] = []
        rows = sorted((r for r in self.ctx.stores() if r.state == WRITABLE_STATE),
                      key=lambda r: (r.priority, r.storeid))
        for row in rows:
            store = self.stores.get((row.storeid, row.url))
            if store is None:
                store = self.stores[(row.storeid, row.url)] = self.ctx.open_store(row)
            try:
                store.check()
            except StoreUnreachable as e:
                unreachable.append(f"{row.name} is unreachable")
                if row.name not in self.unreachable_said:
                    self.unreachable_said.add(row.name)
                    self._warn(f"{e}; skipped (treadle repo fsck --repair adds its copies later)")
                continue
            usable.append((row, store))
        if len(usable) < config.min_replicas:
            why = "; ".join(unreachable) or f"{len(rows)} stores take new replicas"
            raise StoreUnreachable(f"only {len(usable)} of min_replicas={config.min_replicas} stores "
                                   f"is usable: {why}")
        return usable[:config.replicas]

    def _copy(self, items: list[_Item], executor: ThreadPoolExecutor) -> list[tuple[StoreRow, Store]]:
        """Copy each distinct source once (threads), sharing the outcome among rows that name it.

        The stores written to are returned; they are looked at only when there is something to
        write, so a batch of files copied by earlier batches costs no store check.
        """
        pending: dict[StatKey, list[_Item]] = {}
        for item in items:
            stat_key = item.stat_key
            cached = self.copied.get(stat_key)
            if cached is not None:
                item.copy = cached
            else:
                pending.setdefault(stat_key, []).append(item)
        if not pending:
            return []
        targets = self._usable_stores()
        failed_stores: dict[str, str] = {}  # store name -> why, shared by the batch's copies
        futures: dict[StatKey, Future[_Copy]] = {
            stat_key: executor.submit(_copy_source, group[0].row.path, group[0].row.source, targets,
                                       failed_stores)
            for stat_key, group in pending.items()}
        try:
            for stat_key, future in futures.items():
                try:
                    copy = future.result()
                except _SourceError as e:
                    for item in pending[stat_key]:
                        item.problem = str(e)
                    continue
                self.copied[stat_key] = copy
                for item in pending[stat_key]:
                    item.copy = copy
        except BaseException:
            for future in futures.values():
                future.cancel()
            raise
        return targets

    def _check_replica_counts(self, items: list[_Item]) -> None:
        """Every object must be durable in min_replicas stores; fewer fail the batch."""
        needed = self.ctx.config.min_replicas
        for item in items:
            copy = item.copy
            if copy is None:
                continue
            for name, reason in copy.failures.items():
                if name not in self.failures_said:
                    self.failures_said.add(name)
                    self._warn(f"store {name} did not take {item.row.source}: {reason}; it is skipped "
                               f"for the rest of the batch (treadle repo fsck --repair adds its copies later)")
            if len(copy.written) < needed:
                failures = "; ".join(f"{n}: {r}" for n, r in copy.failures.items())
                raise StoreUnreachable(f"only {len(copy.written)} of min_replicas={needed} stores "
                                       f"is usable for {item.row.source}: {failures}")

    def _make_durable(self, items: list[_Item], targets: list[tuple[StoreRow, Store]],
                      executor: ThreadPoolExecutor) -> None:
        """Make the batch's staged objects durable, name them, and make the names durable.

        Per dir store: one syncfs (so every temp file's bytes are on disk before any of them
        gets its object name), the renames, then one more syncfs (so the names are on disk
        before the transaction makes rows refer to them). Where syncfs is missing, the same two
        steps fsync each temp file and then each directory that received a rename. Both
        guarantees hold either way: bytes are durable before their name exists, and a row is
        visible only after its bytes and their name are durable (docs/repo.md, "Ingest").
        Each store's renames run in one thread of their own: on one directory tree, more
        threads only contend for its locks (4,000 renames: 0.18 s in one thread, 0.28 s in 8).
        """
        copies = list({id(item.copy): item.copy for item in items if item.copy is not None}.values())
        placing: list[Future[None]] = []
        stores: list[DirStore] = []
        for row, store in targets:
            if not isinstance(store, DirStore):
                continue
            staged = [(copy, copy.staged.pop(row.storeid)) for copy in copies if row.storeid in copy.staged]
            if not staged:
                continue  # a batch of files copied by earlier batches: they are durable already
            try:
                if not sync_filesystem(store.root):
                    self._in_parallel(executor, fsync_files, [one.temp for _, one in staged])
            except OSError as e:
                for copy, one in staged:
                    one.temp.unlink(missing_ok=True)
                    self._store_failed(copy, row.name, str(e))
                continue
            placing.append(executor.submit(self._place, row, store, staged))
            stores.append(store)
        for future in placing:
            future.result()
        for store in stores:
            if not sync_filesystem(store.root):
                self._in_parallel(executor, fsync_dirs, sorted(store.dirs_touched))
            store.dirs_touched.clear()

    def _place(self, row: StoreRow, store: DirStore, staged: list[tuple[_Copy, Staged]]) -> None:
        """Name one store's staged objects (a pool thread); a failure is recorded, not raised."""
        for copy, one in staged:
            try:
                copy.written[row.storeid] = store.place(one)
            except OSError as e:
                self._store_failed(copy, row.name, str(e))

    @staticmethod
    def _store_failed(copy: _Copy, name: str, reason: str) -> None:
        copy.failures.setdefault(name, reason)

    def _in_parallel(self, executor: ThreadPoolExecutor, work: Callable[[list[Any]], None],
                     things: Sequence[Any]) -> None:
        """``work`` on ``self.jobs`` slices of ``things`` in the pool (each call may wait for a disk)."""
        slices = [list(things[i::self.jobs]) for i in range(self.jobs)]
        for future in [executor.submit(work, part) for part in slices if part]:
            future.result()

    # --- step 5: one transaction ----------------------------------------------------------------

    def _commit(self, conn: Connection, items: list[_Item]) -> list[int]:
        """Record the batch: objects, replicas, files, user rows, links, counters; the new fileids."""
        new = self._drop_present(conn, items)
        # present rows' objects too: a lost one is restored. A copy an earlier batch recorded is
        # there still (this process holds the writer lock), however many rows name its file.
        copies = {item.copy.checksum: item.copy for item in items
                  if item.copy is not None and not item.copy.recorded}
        self._record_objects(conn, copies)
        if not new and self.table is None:
            return []  # a batch with nothing to add does not decide the new table's columns
        table = self._ensure_table(conn)
        if not new:
            return []
        now = utcnow()
        ingest_id = self.result.ingest_id
        rows = [((copy := item.copied).checksum, copy.size, (extension := _extension(item.row.source)),
                 _media_type(extension), "OK", now, ingest_id, item.row.source) for item in new]
        fileids = self._insert_files(conn, rows)
        columns = [c for c in table.c.keys() if c != "fileid"]
        fresh: list[tuple[object, ...]] = []  # user rows to insert, fileid first
        replaced: list[tuple[_Item, int]] = []
        for item, fileid in zip(new, fileids, strict=True):
            if item.present is None:
                fresh.append((fileid, *map(item.values.get, columns)))
            else:
                replaced.append((item, fileid))
        if fresh:
            _insert_many(conn, table, ["fileid", *columns], fresh)
        for item, fileid in replaced:
            assert self.key is not None
            conn.execute(table.update().where(table.c[self.key] == item.key)
                         .values(fileid=fileid, **{c: item.values.get(c) for c in columns}))
        if self.links:
            self._set_links(conn, list(zip(new, fileids, strict=True)))
        size = sum(row[1] for row in rows)  # FILE_COLUMNS[1]: size
        conn.execute(_COUNT_INGESTED, {"i_id": self.result.ingest_id, "i_rows": len(new), "i_bytes": size})
        self.result.bytes += size
        return fileids

    def _insert_files(self, conn: Connection, rows: Sequence[Sequence[object]]) -> list[int]:
        """Insert ``files`` rows (tuples in the order of FILE_COLUMNS); their new fileids, in order.

        One executemany and a SELECT of the new range rather than RETURNING, which SQLite can only
        honour row by row when the order matters. The order is sure because this process holds the writer lock:
        fileids only grow, and nobody else inserts between the two statements.
        """
        before = conn.execute(_LAST_FILEID).scalar_one()
        _insert_many(conn, schema.files, FILE_COLUMNS, rows)
        count, first, last = conn.execute(_FILEIDS_AFTER, {"before": before}).one()
        if count and count == last - first + 1:
            fileids = list(range(first, last + 1))  # without gaps: no need to fetch them one by one
        else:
            fileids = list(conn.execute(_EACH_FILEID_AFTER, {"before": before}).scalars())
        if len(fileids) != len(rows):
            raise RuntimeError(f"inserted {len(rows)} files but found {len(fileids)} new fileids: "
                               f"another process wrote the database without the writer lock")
        return fileids

    def _ensure_table(self, conn: Connection) -> Table:
        """The user table: created by the first batch, with its --index columns indexed."""
        if self.table is None:
            table = schema.user_table(self.table_name, self.types, key=self.key, index=self.index)
            table.create(conn)
            self.table = table
            self.new_table = True
        elif self.index:
            indexed = {tuple(c.name for c in ix.columns) for ix in self.table.indexes}
            for name in self.index:
                if name not in self.table.c:
                    raise RepoError(f"--index {name}: table {self.table_name} has no such column")
                if (name,) not in indexed:
                    Index(schema.index_name(self.table_name, name), self.table.c[name]).create(conn)
            self.index = []
        return self.table

    def _drop_present(self, conn: Connection, items: list[_Item]) -> list[_Item]:
        """The items to add: without those already present (same key and bytes, or same source and bytes)."""
        new: list[_Item] = []
        if self.key is None and self.table is not None and not self.new_table:
            sources = list({item.row.source for item in items})
            known = set()
            if sources:
                query = (select(schema.files.c.source, schema.files.c.checksum)
                         .select_from(self.table.join(schema.files, self.table.c.fileid == schema.files.c.fileid))
                         .where(schema.files.c.source.in_(sources),
                                schema.files.c.ingest_id != self.result.ingest_id))
                known = {(s, c) for s, c in conn.execute(query)}
            return [i for i in items if (i.row.source, i.copied.checksum) not in known]
        for item in items:
            if item.present is None:
                new.append(item)
                continue
            if item.copied.checksum == item.present[1]:
                continue
            if not self.replace:
                raise RepoError(f"{item.row.where}: {item.row.source} has changed since fileid "
                                f"{item.present[0]} was ingested with key {item.key!r} "
                                f"({item.present[1]}, now {item.copied.checksum}); --replace adds the "
                                f"new file and points the row at it")
            new.append(item)
        return new

    def _record_objects(self, conn: Connection, copies: dict[str, _Copy]) -> None:
        """``objects`` rows for new objects; ``replicas`` rows OK for every copy this batch wrote."""
        if not copies:
            return
        checksums = list(copies)
        objects, replicas = schema.objects, schema.replicas
        known = set(conn.execute(select(objects.c.checksum).where(objects.c.checksum.in_(checksums))).scalars())
        missing = [{"checksum": c, "size": copies[c].size} for c in checksums if c not in known]
        if missing:
            conn.execute(objects.insert(), missing)
        existing = {(c, s): state for c, s, state in conn.execute(
            select(replicas.c.checksum, replicas.c.storeid, replicas.c.state)
            .where(replicas.c.checksum.in_(checksums)))}
        now = utcnow()
        insert, update = [], []
        for checksum, copy in copies.items():
            for storeid, written in copy.written.items():
                # bytes written here were hashed as written: verified now. An object found in
                # place (left by a run that died) was only size-checked: fsck verifies it first.
                verified = written.created and written.stat is not None
                values = {"r_checksum": checksum, "r_storeid": storeid, "state": "OK",
                          "lastcheck": now if verified else None,
                          "check_stat": written.stat.to_json() if verified and written.stat else None}
                state = existing.get((checksum, storeid))
                if state is None:
                    insert.append(values)
                elif written.created:
                    update.append(values)
        if insert:
            conn.execute(replicas.insert().values(checksum=bindparam("r_checksum"),
                                                  storeid=bindparam("r_storeid")), insert)
        if update:
            conn.execute(replicas.update().where(and_(replicas.c.checksum == bindparam("r_checksum"),
                                                      replicas.c.storeid == bindparam("r_storeid"))), update)

    def _set_links(self, conn: Connection, added: list[tuple[_Item, int]]) -> None:
        """Point each linked row of T2 at its new fileid, adding the link column the first time."""
        for link in self.links:
            target = self._link_table(conn, link.table)
            if link.column not in target.c:
                schema.add_link_column(conn, link.table, link.column)
                target = self.link_tables[link.table] = schema.reflect_user_table(conn, link.table)
            params = [{"l_value": item.links[link], "l_fileid": fileid}
                      for item, fileid in added if link in item.links]
            if params:
                conn.execute(target.update().where(target.c[link.match] == bindparam("l_value"))
                             .values({link.column: bindparam("l_fileid")}), params)


def _copy_source(path: str, source: str, targets: list[tuple[StoreRow, Store]],
                 failed_stores: dict[str, str]) -> _Copy:
    """Write one source into every target store from one read (hashing as it goes).

    Runs in a pool thread. Dir stores get the bytes staged in their ``tmp/`` (named later, once
    durable: ``_IngestRun._make_durable``); other stores get a verified ``put_file`` from the
    source. A source that cannot be read raises _SourceError (a bad row); a store that fails is
    recorded in the copy and in ``failed_stores`` (so the rest of the batch does not try it
    again), and counts against ``min_replicas``.
    """
    failures = {row.name: failed_stores[row.name] for row, _ in targets if row.name in failed_stores}
    dir_targets = [(row, store) for row, store in targets
                   if isinstance(store, DirStore) and row.name not in failures]
    try:
        with open(path, "rb") as src:
            if dir_targets:
                checksum, size, outcomes = stage(src, [store for _, store in dir_targets])
            else:
                checksum, size = hash_file(Path(path))
                outcomes = []
    except OSError as e:
        raise _SourceError(f"cannot read {source}: {e.strerror or e}") from None
    copy = _Copy(checksum, size, {}, failures)
    for (row, _), outcome in zip(dir_targets, outcomes, strict=True):
        if isinstance(outcome, Staged):
            copy.staged[row.storeid] = outcome
        else:
            failed_stores[row.name] = copy.failures[row.name] = outcome
    for row, store in targets:
        if isinstance(store, DirStore) or row.name in copy.failures:
            continue
        try:
            copy.written[row.storeid] = store.put_file(Path(path), checksum, size)
        except (OSError, RepoDataError) as e:
            failed_stores[row.name] = copy.failures[row.name] = str(e)
    return copy


def _insert_many(conn: Connection, table: Table, columns: Sequence[str],
                 rows: Sequence[Sequence[object]]) -> None:
    """INSERT ``rows`` (tuples in the order of ``columns``) with one DBAPI executemany.

    The statement is compiled and each column's bind processor looked up once (_insert_statement),
    rather than SQLAlchemy building and processing a parameter dict per row: on the metadata
    path (many rows, few bytes) that per-row work was most of an ingest's time. The values are
    still bound parameters, in the paramstyle of whichever database this is.
    """
    sql, order, processors = _insert_statement(table, tuple(columns), conn.dialect)
    values: list[Sequence[object]] = list(rows)
    if processors and rows:
        by_column = list(zip(*rows, strict=True))
        for i, process in processors:
            by_column[i] = _processed(by_column[i], process)
        values = list(zip(*by_column, strict=True))
    params: list[Any]
    if order is None:  # named parameters
        params = [dict(zip(columns, row, strict=True)) for row in values]
    elif order == list(range(len(columns))):
        params = values
    else:
        params = [tuple(row[i] for i in order) for row in values]
    conn.exec_driver_sql(sql, params)


@functools.lru_cache(maxsize=32)
def _insert_statement(table: Table, columns: tuple[str, ...], dialect: Dialect) -> tuple[
        str, list[int] | None, list[tuple[int, Callable[[Any], Any]]]]:
    """The INSERT of ``columns`` into ``table``: its SQL, the columns' order for positional
    parameters (None for named ones), and the bind processors of the columns that have one.

    Each batch inserts into the same tables, so this is worked out once per table, not per batch.
    """
    compiled = table.insert().compile(dialect=dialect, column_keys=list(columns))
    order = [columns.index(name) for name in compiled.positiontup or ()] if compiled.positional else None
    # the dialect's own type, as SQLAlchemy binds it: on SQLite a time becomes its text here,
    # not in sqlite3's deprecated default adapter, and in the form SQLAlchemy reads back
    processors: list[tuple[int, Callable[[Any], Any]]] = [
        (i, process) for i, name in enumerate(columns)
        if (process := table.c[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None]
    return str(compiled), order, processors


def _processed(column: Sequence[object], process: Callable[[Any], Any]) -> tuple[object, ...]:
    """One column's values passed through its bind processor.

    A value that is the very object before it is not processed again: a batch's rows share one
    ``created_at``, and its processing (to UTC, to text) cost more than the row's insert.
    """
    out: list[object] = []
    last: object = out  # an object no column holds
    done: object = None
    for value in column:
        if value is not last:
            last, done = value, process(value)
        out.append(done)
    return tuple(out)


def _stat_source(row: ManifestRow) -> tuple[os.stat_result | None, str | None]:
    """The stat of a row's file, or why it cannot be ingested (missing, not a regular file)."""
    try:
        st = os.stat(row.path)
    except OSError as e:
        return None, f"cannot read {row.source}: {e.strerror or e}"
    if not stat.S_ISREG(st.st_mode):
        return None, f"{row.source} is not a regular file"
    return st, None


def _extension(source: str) -> str:
    """The source name's last suffix, lower case, without its dot ("" for none).

    What ``os.path.splitext`` gives (dots that begin the name start no suffix), found with two
    string searches: this runs for every row, and splitext's generality cost more than the row.
    """
    name = source[source.rfind(os.sep) + 1:].lstrip(".")
    _, dot, suffix = name.rpartition(".")
    return suffix.lower() if dot else ""


@functools.lru_cache(maxsize=1024)
def _media_type(extension: str) -> str | None:
    """The media type of a name with this extension (looked up once per extension: rows are many)."""
    return mimetypes.guess_type(f"name.{extension}", strict=False)[0] if extension else None

