"""Content-addressed cache names for what the manager puts in worker caches.

A worker's cache is keyed by the name the manager chooses. treadle derives
that name from the *content* (SHA-256), not from the path as the reference
does, so a file that changes locally gets a new name and is sent again
(the reference keeps the stale copy), and a file used by thousands of tasks, under any path or sandbox
name, is sent once per worker. Checksums are memoized by (device, inode,
size, mtime_ns): one ``stat`` per use, one read per change.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
import threading
from dataclasses import dataclass

from treadle.queue.task import FileKind, TaskFile

NAME_MAX = 200  # bytes of a cache name; one path component on every filesystem
_CHUNK = 1 << 20


def encode_component(name: str) -> str:
    """``name`` made of bytes 0x21-0x7E only, ``%XX`` for the rest (and for ``%/\\<>'"``)."""
    out = []
    for b in name.encode("utf-8", "surrogateescape"):
        if b <= 0x20 or b > 0x7A or b in b"%/\\<>'\"":
            out.append(f"%{b:02X}")
        else:
            out.append(chr(b))
    return "".join(out)


def _name(prefix: str, counter: int, digest: str, base: str = "") -> str:
    head = f"{prefix}-{counter}-{digest}"
    if not base:
        return head
    tail = encode_component(base)[: max(0, NAME_MAX - len(head) - 1)]
    while tail.endswith("%") or (len(tail) >= 2 and tail[-2] == "%"):
        tail = tail[:-1]  # never cut an escape in half
    return f"{head}-{tail}" if tail else head


@dataclass(frozen=True, slots=True)
class CacheItem:
    """One input resolved for sending: its content key, its cache name and its size.

    ``key`` identifies the content (None for items that must never be shared,
    such as uncached inputs); equal keys may reuse one cache entry.
    """

    key: str | None
    name: str
    size: int
    spec: TaskFile


class Namer:
    """Turns task files into cache items; remembers checksums by file identity."""

    def __init__(self) -> None:
        self._memo: dict[str, tuple[tuple[int, int, int, int], str]] = {}
        self._lock = threading.Lock()  # prehash() may run in a helper thread
        self._counter = itertools.count(1)

    # ---------------------------------------------------------------- hashing
    def file_digest(self, path: str, st: os.stat_result | None = None) -> str:
        """Hex SHA-256 of a file's content, memoized by its identity and mtime."""
        st = st or os.stat(path)
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._memo.get(path)
        if hit is not None and hit[0] == ident:
            return hit[1]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        digest = h.hexdigest()
        with self._lock:
            self._memo[path] = (ident, digest)
        return digest

    def dir_digest(self, path: str) -> tuple[str, int]:
        """Hex digest of a tree (sorted relative paths, types, modes, contents or link targets) and its size."""
        h = hashlib.sha256()
        total = 0
        for root, dirs, files in os.walk(path):
            dirs.sort()
            rel_root = os.path.relpath(root, path)
            for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(root, d))]):
                full = os.path.join(root, name)
                rel = os.path.normpath(os.path.join(rel_root, name))
                st = os.lstat(full)
                if stat.S_ISLNK(st.st_mode):
                    h.update(f"L\0{rel}\0{os.readlink(full)}\0".encode("utf-8", "surrogateescape"))
                else:
                    digest = self.file_digest(full, st)
                    total += st.st_size
                    h.update(f"F\0{rel}\0{st.st_mode & 0o777:o}\0{digest}\0".encode("utf-8", "surrogateescape"))
            for d in dirs:
                full = os.path.join(root, d)
                if not os.path.islink(full):
                    rel = os.path.normpath(os.path.join(rel_root, d))
                    h.update(f"D\0{rel}\0{os.stat(full).st_mode & 0o777:o}\0".encode("utf-8", "surrogateescape"))
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        return h.hexdigest(), total

    def prehash(self, spec: TaskFile) -> None:
        """Compute a file's checksum ahead of dispatch (errors surface at dispatch)."""
        if spec.kind is FileKind.FILE and spec.local is not None:
            try:
                self.file_digest(spec.local)
            except OSError:
                pass

    # ----------------------------------------------------------------- naming
    def unique(self) -> int:
        """A counter value no other item of this manager uses."""
        return next(self._counter)

    def resolve(self, spec: TaskFile) -> CacheItem:
        """The cache item for an input; raises OSError when a local input is missing."""
        kind = spec.kind
        k = 0 if spec.cache else self.unique()
        if kind is FileKind.FILE:
            assert spec.local is not None
            st = os.stat(spec.local)  # follows a top-level symlink: its target is sent
            digest = self.file_digest(spec.local, st)[:32]
            name = _name("file", k, digest, os.path.basename(spec.local))
            return CacheItem(f"f:{digest}" if spec.cache else None, name, st.st_size, spec)
        if kind is FileKind.DIR:
            assert spec.local is not None
            if not os.path.isdir(spec.local):
                raise FileNotFoundError(2, "not a directory", spec.local)
            digest, size = self.dir_digest(spec.local)
            name = _name("dir", k, digest[:32], os.path.basename(spec.local.rstrip("/")))
            return CacheItem(f"d:{digest[:32]}" if spec.cache else None, name, size, spec)
        if kind is FileKind.BUFFER:
            data = spec.data or b""
            digest = hashlib.sha256(data).hexdigest()[:32]
            return CacheItem(f"b:{digest}" if spec.cache else None, _name("buffer", k, digest), len(data), spec)
        if kind is FileKind.PIECE:
            assert spec.local is not None
            with open(spec.local, "rb") as f:
                f.seek(spec.start)
                data = f.read(spec.end - spec.start + 1)
            digest = hashlib.sha256(data).hexdigest()[:32]
            name = _name("piece", k, digest, f"{os.path.basename(spec.local)}-{spec.start}-{spec.end}")
            return CacheItem(f"p:{digest}" if spec.cache else None, name, len(data), spec)
        if kind is FileKind.COMMAND:
            digest = hashlib.sha256((spec.source or "").encode()).hexdigest()[:32]
            return CacheItem(f"c:{digest}" if spec.cache else None, _name("cmd", k, digest), 0, spec)
        if kind is FileKind.URL:
            digest = hashlib.sha256((spec.source or "").encode()).hexdigest()[:32]
            return CacheItem(f"u:{digest}" if spec.cache else None, _name("url", k, digest), 0, spec)
        if kind is FileKind.EMPTY_DIR:
            return CacheItem(None, spec.remote, 0, spec)
        raise ValueError(f"unknown input kind {kind}")

    def output_name(self, spec: TaskFile) -> str:
        """A fresh cache name for an output (never shared before it exists)."""
        digest = hashlib.sha256((spec.local or spec.remote).encode("utf-8", "surrogateescape")).hexdigest()[:32]
        return _name("file", self.unique(), digest, os.path.basename(spec.remote))

    def content_key_of_local(self, path: str) -> str | None:
        """The content key of a retrieved output, so later tasks reuse the worker's copy."""
        try:
            if os.path.isdir(path):
                return f"d:{self.dir_digest(path)[0][:32]}"
            return f"f:{self.file_digest(path)[:32]}"
        except OSError:
            return None
