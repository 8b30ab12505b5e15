"""The tree under each mount point, answered once for both modes (docs/vfs.md).

Fuse mode and trace mode call only this module, so a program sees the same names, attributes,
extended attributes, bytes and errnos in either. Under each mount M::

    M/fileid/<N>  and  M/fileid/<N>.<ext>    the file (a listing pages through all fileids)
    M/sha256/<hex>                           the object by content (look-up only)
    M/table/<T>/<N>.<ext>                    the files user table T names
    M/replica/<replicaid>                    one replica, for diagnosis (local repositories)

Inode numbers are handed out on first sight and stay for the run. ``ROOT_INO`` is the root
of the mount table: the mount points and their synthetic parents hang below it.

Errors are ``OSError(errno, message)`` with the errno a program must see (docs/vfs.md,
"Failures"): ENOENT only when the source said the thing is absent; EIO when it could not be
asked (after ``timeout`` seconds of retries; later questions to a source that stays down fail
at once while a background probe retries it every 5 s) or when no replica had the right
bytes; EACCES when a service refused the token.
"""

from __future__ import annotations

import bisect
import errno
import functools
import posixpath
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

from treadle.errors import (
    FileAbsent,
    RepoDataError,
    RepoError,
    StoreUnreachable,
    TreadleError,
    VfsError,
)
from treadle.repo.checksums import CHUNK, Hasher, parse_checksum
from treadle.vfs.cache import Cache, CacheFull
from treadle.vfs.sources import FileMeta, Source

T = TypeVar("T")


class _WouldAsk(Exception):
    """Raised by :meth:`Namespace._ask` in a cached-only answer: this needs the source."""

ROOT_INO = 1
DIR_MODE = 0o40555
FILE_MODE = 0o100444
PAGE = 10_000  # fileids asked of a source at once (docs/vfs.md)
ABSENT_TTL = 1.0  # an absent answer is believed this long, so new ingests appear
ABSENT_KEPT = 10_000  # absent answers remembered before the expired ones are dropped
PROBE_EVERY = 5.0  # a source that is down is tried again this often, in the background
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
FETCH_ATTEMPTS = 3  # fills retried after wrong bytes (a replica marked SUSPECT drops out)
ST_RDONLY, ST_NOSUID, ST_NODEV = 1, 2, 4
NAME_MAX = 255
XATTR_REPOSITORY = "user.treadle.repository"
XATTR_FILEID = "user.treadle.fileid"
XATTR_SHA256 = "user.treadle.sha256"
_NUMBER = re.compile(r"[1-9][0-9]{0,18}")
_HEX = re.compile(r"[0-9a-f]{64}")
_TOP = ("fileid", "sha256", "table", "replica")


@dataclass(frozen=True)
class Attr:
    """What stat shows of one node; ``kind`` is "dir" or "file"."""

    ino: int
    kind: str
    mode: int
    size: int
    mtime: float
    nlink: int


@dataclass(frozen=True)
class _Node:
    """A node's identity: the same node always gets the same inode number.

    ``kind`` is one of syn (a synthetic parent; ``name`` its path), root, fileid, sha256, table,
    replica (M's directories), tabledir (``name`` the table), file (``number`` the fileid),
    blob (``name`` the hex digest) or replfile (``number`` the replicaid).
    """

    kind: str
    mount: int = -1
    name: str = ""
    number: int = 0

    @property
    def is_dir(self) -> bool:
        return self.kind not in ("file", "blob", "replfile")


class _Guard:
    """One source's health: up, or down with a background probe until it answers again."""

    def __init__(self, source: Source, stop: threading.Event):
        self.source = source
        self.down = False
        self.refusal_reported = False
        self._stop = stop
        self._lock = threading.Lock()

    def mark_down(self) -> None:
        with self._lock:
            if self.down:
                return
            self.down = True
        threading.Thread(target=self._probe, name=f"probe {self.source.label}",
                         daemon=True).start()

    def _probe(self) -> None:
        while not self._stop.wait(PROBE_EVERY):
            try:
                self.source.fileids(0, 1)
            except (TreadleError, OSError):
                continue
            self.down = False
            return


@dataclass
class _Page:
    """Part of a listing: the entries after ``after`` and where the next page starts.

    ``ids`` are the rows' fileids, in order: the kernel reads a listing a few dozen entries
    at a time, and each read finds its place in the page by bisection, not by a scan;
    ``entries`` are made for all rows at the first read.
    """

    after: int
    rows: list[tuple[int, str]]
    next: int | None
    expires: float
    ids: list[int] = field(init=False)
    entries: list[tuple[str, Attr, int]] | None = None  # the rows as listdir gives them

    def __post_init__(self) -> None:
        self.ids = [fileid for fileid, _ in self.rows]

    def covers(self, after: int) -> bool:
        if after < self.after:
            return False
        return self.next is None or (bool(self.rows) and after < self.rows[-1][0])


@dataclass
class _State:
    """What the namespace remembers: inode numbers for the run, answers for a while."""

    inodes: dict[_Node, int] = field(default_factory=dict)
    nodes: dict[int, _Node] = field(default_factory=dict)
    parents: dict[int, int] = field(default_factory=dict)
    absent: dict[tuple[int, str], float] = field(default_factory=dict)
    metas: dict[_Node, FileMeta] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)
    tables: set[tuple[int, str]] = field(default_factory=set)
    members: set[tuple[int, str, int]] = field(default_factory=set)
    pages: dict[tuple[int, str], list[_Page]] = field(default_factory=dict)
    listed: dict[tuple[int, int], tuple[str, Attr, int]] = field(default_factory=dict)
    verified: set[Path] = field(default_factory=set)


def _normalise(mount: str) -> str:
    if not mount.startswith("/"):
        raise VfsError(f"a mount point must be an absolute path, not {mount!r}")
    normal = posixpath.normpath(mount)
    if normal == "/" or normal.startswith("//"):
        raise VfsError(f"cannot mount over {mount!r}")
    return normal


def _print_stderr(line: str) -> None:
    import sys

    print(f"treadle vfs: {line}", file=sys.stderr, flush=True)


class Namespace:
    """The tree of docs/vfs.md over one or more mounts, each with its own source."""

    def __init__(self, mounts: Sequence[tuple[str, Source]], cache: Cache, *,
                 verify: str = "auto", timeout: float = 60.0,
                 report: Callable[[str], None] = _print_stderr):
        if verify not in ("auto", "always"):
            raise VfsError(f"--verify is auto or always, not {verify!r}")
        self.mounts = [_normalise(m) for m, _ in mounts]
        for i, a in enumerate(self.mounts):
            for b in self.mounts[i + 1:]:
                if a == b or b.startswith(a + "/") or a.startswith(b + "/"):
                    raise VfsError(f"mount points may not lie inside one another: {a} and {b}")
        self._sources = [source for _, source in mounts]
        self._stop = threading.Event()
        self._guards = [_Guard(source, self._stop) for source in self._sources]
        self.cache = cache
        self.verify = verify
        self.timeout = timeout
        self.report = report
        self.stats: dict[str, int] = dict.fromkeys(
            ("lookups", "opens", "fetches", "fetch_bytes", "cache_hits", "bytes_hashed", "eio"),
            0)
        self._started = time.time()
        self._lock = threading.Lock()
        self._thread = threading.local()  # cached_only: answer from memory or raise _WouldAsk
        self._state = _State()
        self._ino(_Node("syn", name="/"))

    def close(self) -> None:
        """Stop the background probes of sources that are down; close the sources."""
        self._stop.set()
        for source in self._sources:
            source.close()

    # -- inode numbers ------------------------------------------------------------------

    def _ino(self, node: _Node, parent: int = 0) -> int:
        with self._lock:
            ino = self._state.inodes.get(node)
            if ino is None:
                ino = len(self._state.inodes) + ROOT_INO
                self._state.inodes[node] = ino
                self._state.nodes[ino] = node
            if parent and node.is_dir:
                self._state.parents.setdefault(ino, parent)
            return ino

    def _node(self, ino: int) -> _Node:
        node = self._state.nodes.get(ino)
        if node is None:
            raise OSError(errno.ENOENT, f"no inode {ino} in this run")
        return node

    # -- asking a source ----------------------------------------------------------------

    def _ask(self, mount: int, what: str, question: Callable[[], T]) -> T:
        """``question()`` of mount ``mount``'s source, its failures as the errno of docs/vfs.md."""
        if getattr(self._thread, "cached_only", False):
            raise _WouldAsk
        guard = self._guards[mount]
        label = guard.source.label
        if guard.down:
            raise self._eio(f"{label}: {what}", "unreachable (tried again every 5 s)")
        deadline = time.monotonic() + self.timeout
        delay = BACKOFF_FIRST
        while True:
            try:
                return question()
            except FileAbsent as e:
                raise OSError(errno.ENOENT, str(e)) from None
            except StoreUnreachable as e:
                left = deadline - time.monotonic()
                if left <= 0:
                    guard.mark_down()
                    raise self._eio(f"{label}: {what}", e) from None
                time.sleep(min(delay, left))
                delay = min(delay * 2, BACKOFF_MAX)
            except RepoDataError as e:
                raise self._eio(f"{label}: {what}", e) from None
            except OSError as e:  # the cache's own disk (the sources wrap their errors)
                raise self._eio(f"{label}: {what}", e) from None
            except RepoError as e:
                if not guard.refusal_reported:
                    guard.refusal_reported = True
                    self.report(str(e))
                raise OSError(errno.EACCES, str(e)) from None

    def _eio(self, what: str, why: object) -> OSError:
        """EIO, said on stderr once per object (``what``) however often it is asked for."""
        self._count("eio")
        line = f"{what}: {why}"
        with self._lock:
            first = what not in self._state.reported
            self._state.reported.add(what)
        if first:
            self.report(line)
        return OSError(errno.EIO, line)

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.stats[name] += amount

    def _unasked(self, question: Callable[[], T]) -> T | None:
        """``question()`` if it can be answered without asking a source, else None.

        The FUSE daemon answers such requests in its event loop, without the hop to a thread
        and back that costs more than the answer (docs/vfs.md, "Fuse mode")."""
        self._thread.cached_only = True
        try:
            return question()
        except _WouldAsk:
            return None
        finally:
            self._thread.cached_only = False

    def cached_getattr(self, ino: int) -> Attr | None:
        """:meth:`getattr` when known without asking a source, else None."""
        return self._unasked(lambda: self.getattr(ino))

    def cached_lookup(self, parent: int, name: str) -> Attr | None:
        """:meth:`lookup` when known without asking a source (an absent name remembered
        included: ENOENT), else None, and then not counted: the caller asks :meth:`lookup`."""
        try:
            attr = self._unasked(lambda: self._lookup(parent, name))
        except OSError:
            self._count("lookups")
            raise
        if attr is not None:
            self._count("lookups")
        return attr

    def cached_listdir(self, ino: int, offset: int,
                       limit: int) -> list[tuple[str, Attr, int]] | None:
        """:meth:`listdir` when its pages are known (not expired), else None."""
        return self._unasked(lambda: self.listdir(ino, offset, limit))

    # -- attributes ---------------------------------------------------------------------

    def _dir_attr(self, ino: int) -> Attr:
        return Attr(ino, "dir", DIR_MODE, 0, self._started, 2)

    def _file_attr(self, ino: int, meta: FileMeta) -> Attr:
        return Attr(ino, "file", FILE_MODE, meta.size, meta.mtime, 1)

    def _meta(self, node: _Node) -> FileMeta:
        """A file's, object's or replica's metadata, asked once and kept for the run (objects
        never change), so that what was seen still answers while its source is down."""
        known = self._state.metas.get(node)
        if known is not None:
            return known
        source = self._sources[node.mount]
        if node.kind == "file":
            meta = self._ask(node.mount, f"fileid {node.number}",
                             lambda: source.file(node.number))
        elif node.kind == "blob":
            meta = self._ask(node.mount, f"sha256 {node.name}", lambda: source.blob(node.name))
        else:
            meta = self._ask(node.mount, f"replica {node.number}",
                             lambda: source.replica(node.number)).meta
        self._state.metas[node] = meta
        return meta

    def getattr(self, ino: int) -> Attr:
        """The attributes of inode ``ino`` (a file's from its source, kept for the run)."""
        node = self._node(ino)
        if node.is_dir:
            return self._dir_attr(ino)
        return self._file_attr(ino, self._meta(node))

    def mount_root(self, mount: str) -> Attr:
        """The directory at mount point ``mount`` (one of :attr:`mounts`)."""
        index = self.mounts.index(_normalise(mount))
        return self._dir_attr(self._ino(_Node("root", index)))

    def statfs(self) -> dict[str, int]:
        """What both modes report to statfs: nothing free, read-only (an os.statvfs's fields)."""
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 0, "f_bfree": 0, "f_bavail": 0,
                "f_files": 0, "f_ffree": 0, "f_favail": 0,
                "f_flag": ST_RDONLY | ST_NOSUID | ST_NODEV, "f_namemax": NAME_MAX}

    # -- look-up ------------------------------------------------------------------------

    def lookup(self, parent: int, name: str) -> Attr:
        """The entry ``name`` of directory ``parent``; ENOENT, ENOTDIR, EIO or EACCES."""
        self._count("lookups")
        return self._lookup(parent, name)

    def _lookup(self, parent: int, name: str) -> Attr:
        node = self._node(parent)
        if not node.is_dir:
            raise OSError(errno.ENOTDIR, f"not a directory: inode {parent}")
        key = (parent, name)
        expires = self._state.absent.get(key)
        if expires is not None:
            if time.monotonic() < expires:
                raise OSError(errno.ENOENT, f"no {name!r} (asked less than 1 s ago)")
            self._state.absent.pop(key, None)
        try:
            child = self._child(node, name)
        except OSError as e:
            if e.errno == errno.ENOENT:
                self._remember_absent(key)
            raise
        ino = self._ino(child, parent)
        return self._dir_attr(ino) if child.is_dir else self.getattr(ino)

    def _remember_absent(self, key: tuple[int, str]) -> None:
        now = time.monotonic()
        with self._lock:
            absent = self._state.absent
            if len(absent) >= ABSENT_KEPT:  # a program probing many names: drop the expired
                self._state.absent = absent = {k: t for k, t in absent.items() if t > now}
            absent[key] = now + ABSENT_TTL

    def _child(self, node: _Node, name: str) -> _Node:
        absent = OSError(errno.ENOENT, f"no {name!r} here")
        if node.kind == "syn":
            path = posixpath.join(node.name, name)
            if path in self.mounts:
                return _Node("root", self.mounts.index(path))
            if any(m.startswith(path + "/") for m in self.mounts) and name not in (".", ".."):
                return _Node("syn", name=path)
            raise absent
        m = node.mount
        source = self._sources[m]
        if node.kind == "root":
            if name in _TOP and (name != "replica" or source.has_replicas):
                return _Node(name, m)
            raise absent
        if node.kind == "fileid":
            number, ext = self._split(name)
            file = _Node("file", m, number=number)
            if ext is not None and ext != self._meta(file).extension:
                raise absent
            self._meta(file)
            return file
        if node.kind == "sha256":
            if not _HEX.fullmatch(name):
                raise absent
            blob = _Node("blob", m, name=name)
            self._meta(blob)
            return blob
        if node.kind == "table":
            self._check_table(m, name)
            return _Node("tabledir", m, name=name)
        if node.kind == "tabledir":
            number, ext = self._split(name)
            file = _Node("file", m, number=number)
            if ext != (self._meta(file).extension or None) \
                    or not self._in_table(m, node.name, number):
                raise absent
            return file
        if node.kind == "replica":
            if not _NUMBER.fullmatch(name):
                raise absent
            replica = _Node("replfile", m, number=int(name))
            self._meta(replica)
            return replica
        raise absent

    @staticmethod
    def _split(name: str) -> tuple[int, str | None]:
        """``<N>`` or ``<N>.<ext>`` as (N, ext or None); ENOENT for any other name."""
        number, dot, ext = name.partition(".")
        if not _NUMBER.fullmatch(number) or (dot and not ext):
            raise OSError(errno.ENOENT, f"no {name!r} here")
        return int(number), (ext if dot else None)

    def _check_table(self, m: int, table: str) -> None:
        if (m, table) in self._state.tables:
            return
        source = self._sources[m]
        self._ask(m, f"table {table}", lambda: source.table_files(table, 0, 1))
        self._state.tables.add((m, table))

    def _in_table(self, m: int, table: str, fileid: int) -> bool:
        if (m, table, fileid) in self._state.members:
            return True
        source = self._sources[m]
        rows, _ = self._ask(m, f"table {table}",
                            lambda: source.table_files(table, fileid - 1, 1))
        if rows and rows[0][0] == fileid:
            self._state.members.add((m, table, fileid))
            return True
        return False

    def resolve(self, path: str) -> Attr:
        """The node at absolute ``path`` (trace mode), walked name by name like the kernel:
        ``.`` and ``..`` included, ENOTDIR through a file."""
        if not path.startswith("/"):
            raise OSError(errno.EINVAL, f"not an absolute path: {path!r}")
        attr = self._dir_attr(ROOT_INO)
        for name in path.split("/"):
            if name in ("", "."):
                if attr.kind != "dir":
                    raise OSError(errno.ENOTDIR, f"not a directory: {path}")
                continue
            if name == "..":
                if attr.kind != "dir":
                    raise OSError(errno.ENOTDIR, f"not a directory: {path}")
                attr = self._dir_attr(self._state.parents.get(attr.ino, ROOT_INO))
                continue
            attr = self.lookup(attr.ino, name)
        return attr

    # -- listings -----------------------------------------------------------------------

    def listdir(self, ino: int, offset: int, limit: int) -> list[tuple[str, Attr, int]]:
        """Up to ``limit`` entries of directory ``ino`` after cookie ``offset`` (0 = the start):
        (name, attributes, the cookie of the next entry). ``.`` and ``..`` come first, as a
        real directory lists them."""
        node = self._node(ino)
        if not node.is_dir:
            raise OSError(errno.ENOTDIR, f"not a directory: inode {ino}")
        entries: list[tuple[str, Attr, int]] = []
        if offset < 1:
            entries.append((".", self._dir_attr(ino), 1))
        if offset < 2:
            entries.append(("..", self._dir_attr(self._state.parents.get(ino, ino)), 2))
        want = limit - len(entries)
        if want <= 0:
            return entries[:limit]
        if node.kind in ("fileid", "tabledir"):
            entries.extend(self._list_files(ino, node, max(offset - 2, 0), want))
        else:
            names = self._names(node)
            for index, name in enumerate(names[max(offset - 2, 0):], start=max(offset - 2, 0)):
                if len(entries) >= limit:
                    break
                try:
                    entries.append((name, self._lookup(ino, name), index + 3))
                except OSError as e:
                    if e.errno != errno.ENOENT:
                        raise
        return entries

    def _names(self, node: _Node) -> list[str]:
        if node.kind == "syn":
            prefix = node.name.rstrip("/") + "/"
            return sorted({m[len(prefix):].split("/")[0] for m in self.mounts
                           if m.startswith(prefix)})
        if node.kind == "root":
            source = self._sources[node.mount]
            return [n for n in _TOP if n != "replica" or source.has_replicas]
        if node.kind == "table":
            source = self._sources[node.mount]
            return self._ask(node.mount, "tables", source.tables)
        return []  # sha256 and replica: look-up only

    def _list_files(self, ino: int, node: _Node, after: int,
                    limit: int) -> list[tuple[str, Attr, int]]:
        """Files by fileid above ``after``, from pages of PAGE kept for ABSENT_TTL seconds.

        Cookies are fileid + 2, so a listing resumes where it stopped however the pages fall.
        """
        entries: list[tuple[str, Attr, int]] = []
        while len(entries) < limit:
            page = self._page(node, after)
            if page.entries is None:
                page.entries = [self._listed(ino, node, fileid, ext) for fileid, ext in page.rows]
            start = bisect.bisect_right(page.ids, after)
            entries.extend(page.entries[start:start + limit - len(entries)])
            if entries:
                after = entries[-1][2] - 2
            if len(entries) >= limit or page.next is None:
                break
            after = max(after, page.next)
        return entries

    def _listed(self, ino: int, node: _Node, fileid: int, ext: str) -> tuple[str, Attr, int]:
        """One entry of directory ``ino`` (M/fileid or a table's), made once for the run: its
        name, inode number and attributes never change, and the kernel lists a directory a
        few dozen entries per request, over and over."""
        key = (ino, fileid)
        made = self._state.listed.get(key)
        if made is None:
            name = str(fileid) if node.kind == "fileid" or not ext else f"{fileid}.{ext}"
            child = self._ino(_Node("file", node.mount, number=fileid), ino)
            if node.kind == "tabledir":
                self._state.members.add((node.mount, node.name, fileid))
            made = self._state.listed[key] = (name, self.getattr(child), fileid + 2)
        return made

    def _page(self, node: _Node, after: int) -> _Page:
        key = (node.mount, node.name)
        now = time.monotonic()
        with self._lock:
            pages = [p for p in self._state.pages.get(key, []) if p.expires > now]
            self._state.pages[key] = pages
            for page in pages:
                if page.covers(after):
                    return page
        source = self._sources[node.mount]
        if node.kind == "fileid":
            rows, following = self._ask(node.mount, "the fileid listing",
                                        lambda: source.fileids(after, PAGE))
        else:
            rows, following = self._ask(node.mount, f"table {node.name}",
                                        lambda: source.table_files(node.name, after, PAGE))
        page = _Page(after, rows, following, now + ABSENT_TTL)
        with self._lock:
            self._state.pages.setdefault(key, []).append(page)
        return page

    # -- extended attributes ------------------------------------------------------------

    def listxattr(self, ino: int) -> list[str]:
        """The xattr names of ``ino``: the repository's uuid on M, fileid and hash on files."""
        node = self._node(ino)
        if node.kind == "root":
            return [XATTR_REPOSITORY]
        if node.kind == "file":
            return [XATTR_FILEID, XATTR_SHA256]
        if node.kind in ("blob", "replfile"):
            return [XATTR_SHA256]
        return []

    def getxattr(self, ino: int, name: str) -> bytes:
        """The value of xattr ``name`` on ``ino``; ENODATA when it has none of that name."""
        node = self._node(ino)
        if name not in self.listxattr(ino):
            raise OSError(errno.ENODATA, f"no attribute {name}")
        if name == XATTR_REPOSITORY:
            source = self._sources[node.mount]
            return self._ask(node.mount, "its uuid", lambda: source.uuid).encode()
        meta = self._meta(node)
        if name == XATTR_FILEID:
            return str(meta.fileid).encode()
        return parse_checksum(meta.checksum).encode()

    # -- bytes --------------------------------------------------------------------------

    def open_file(self, ino: int) -> Path:
        """A local file holding exactly the object's bytes, for the modes to read or pass on.

        In order: a copy already in the cache (trusted while its stat matches its fill); a
        local replica in place, trusted unhashed when fsck or ingest checked it recently
        (docs/repo.md), else hashed at its first open in this run; a fill of the cache from the
        source, verified before it gets its name. With ``verify="always"`` every copy is hashed
        at its first open in the run. EIO when no copy with the right bytes can be had: wrong
        bytes are never returned.
        """
        self._count("opens")
        node = self._node(ino)
        if node.is_dir:
            raise OSError(errno.EISDIR, f"a directory: inode {ino}")
        meta = self._meta(node)
        if node.kind == "replfile":
            source = self._sources[node.mount]
            replica = self._ask(node.mount, f"replica {node.number}",
                                lambda: source.replica(node.number))
            problem = None if replica.path in self._state.verified else \
                self._check(replica.path, meta)
            if problem is not None:  # shown for diagnosis, but never with wrong bytes
                raise self._eio(f"{source.label}: replica {node.number}", problem)
            return replica.path
        return self._from_cache(meta) or self._local(node.mount, meta) \
            or self._fill(node.mount, meta)

    def _local(self, m: int, meta: FileMeta) -> Path | None:
        source = self._sources[m]
        skip: list[Path] = []
        while True:
            found = self._ask(m, meta.checksum,
                              functools.partial(source.local_object, meta, tuple(skip)))
            if found is None:
                return None
            path, trusted = found
            if (trusted and self.verify == "auto") or path in self._state.verified:
                return path
            problem = self._check(path, meta)
            if problem is None:
                return path
            skip.append(path)
            if problem.startswith("cannot read"):
                self.report(f"{source.label}: {meta.checksum}: {problem}")
            else:
                self.report(self._ask(m, meta.checksum, functools.partial(
                    source.replica_failed, meta, path, problem)))

    def _check(self, path: Path, meta: FileMeta) -> str | None:
        """None when ``path`` holds exactly the object (then remembered for the run), else why
        not."""
        hasher = Hasher()
        try:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    hasher.update(chunk)
                    if hasher.size > meta.size:
                        break
        except OSError as e:
            return f"cannot read {path}: {e.strerror}"
        finally:
            self._count("bytes_hashed", hasher.size)
        if hasher.size != meta.size or hasher.checksum != meta.checksum:
            return f"{path} is not the object ({hasher.size} bytes hashing to {hasher.checksum})"
        with self._lock:
            self._state.verified.add(path)
        return None

    def _from_cache(self, meta: FileMeta) -> Path | None:
        try:
            found = self.cache.lookup(meta.checksum)
        except RepoDataError as e:  # its database: a cache that cannot be read is no copy
            raise self._eio(f"cache {self.cache.root}", e) from None
        if found is None:
            return None
        if self.verify == "always" and found not in self._state.verified \
                and self._check(found, meta) is not None:
            found.unlink(missing_ok=True)  # changed with its stat kept: fill it again
            return None
        self._count("cache_hits")
        return found

    def _fill(self, m: int, meta: FileMeta) -> Path:
        source = self._sources[m]
        fetched = [0]

        def writer(out: BinaryIO) -> None:
            fetched[0] += 1
            source.fetch(meta, out)

        def fill() -> Path:
            # wrong bytes are worth another try: the replica that gave them is now SUSPECT
            attempt = 1
            while True:
                try:
                    return self.cache.fill(meta.checksum, meta.size, writer)
                except (CacheFull, FileAbsent, StoreUnreachable):
                    raise
                except RepoDataError as e:
                    if attempt == FETCH_ATTEMPTS:
                        raise
                    attempt += 1
                    self.report(f"{source.label}: {meta.checksum}: {e}; trying again")

        path = self._ask(m, meta.checksum, fill)
        if fetched[0]:
            self._count("fetches", fetched[0])
            self._count("fetch_bytes", meta.size * fetched[0])
            self._count("bytes_hashed", meta.size * fetched[0])
            with self._lock:
                self._state.verified.add(path)
        else:
            self._count("cache_hits")
        return path
