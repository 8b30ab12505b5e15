"""Trace mode's materialised view: real files standing for the tree under M (docs/vfs.md).

Rewriting path prefixes alone breaks relative names after ``chdir`` into M and names relative
to a directory fd under M. So each run has a view root ``<cache>/views/<run>/`` in which M's
tree appears as real directories and files, made on demand by the tracer before the call that
needs them proceeds; the kernel then resolves relative names by itself.

* The stat calls make nothing: the tracer answers them from the namespace (:meth:`View.stat`)
  with fuse mode's identity, and ``getxattr``, ``listxattr`` and their ``*at`` forms too.
* A call the kernel must still resolve by itself (``access``, ``readlink``, an inotify
  watch, ``chdir``, an exec that must fail) gets a **placeholder**: a sparse file of the
  right size, mode 0444 and the file's mtime, or the directory.
* An open or an exec gets the **object**: the verified local file that the namespace gives,
  hard-linked into place (copied into the cache first when it sits on another filesystem).
* A directory holds only the names looked up in it: the tracer writes every listing of it
  (``getdents``) from the namespace, so a listing makes nothing.

Every answer comes from :class:`treadle.vfs.namespace.Namespace`, the same one fuse mode
uses. The view itself is writable by its owner; the tracer refuses write intent into it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from treadle.vfs.cache import Cache
from treadle.vfs.namespace import Attr, Namespace

_SHA256_XATTR = "user.treadle.sha256"

# How far a view path has been made: a file's stand-in (size, mode, mtime: what stat
# needs), a directory (with its xattrs: they are few), then the file's object.
_BARE = 1
_MADE = 2
_FULL = 3


class View:
    """The per-run view root for the mounts of ``namespace``; ``root`` must exist and be empty."""

    def __init__(self, namespace: Namespace, cache: Cache, root: Path) -> None:
        self.namespace = namespace
        self.cache = cache
        self.root = os.path.realpath(root)  # as /proc shows cwds and fds, symlinks resolved
        self._prefix = self.root + "/"
        self._mounts = sorted(namespace.mounts, key=len, reverse=True)
        self._made: dict[str, int] = {}
        self._attrs: dict[str, Attr] = {}  # what each path asked about is
        self._privileged = os.geteuid() == 0
        self._xattrs_work = True

    # -- names -----------------------------------------------------------------------------

    def mount_of(self, path: str) -> str | None:
        """The mount point that normalised absolute ``path`` lies under (or is), else None."""
        for mount in self._mounts:
            if path == mount or path.startswith(mount) and path[len(mount)] == "/":
                return mount
        return None

    def to_view(self, path: str) -> str:
        """The view's real path for ``path`` under M."""
        return self.root + path

    def contains(self, real: str) -> bool:
        """Whether a real path (from ``/proc``: a cwd, an fd's target) lies in the view."""
        return real == self.root or real.startswith(self._prefix)

    def to_mount(self, real: str) -> str:
        """A real path translated back from the view to M; other paths unchanged."""
        if real == self.root:
            return "/"
        return real[len(self.root):] if real.startswith(self._prefix) else real

    # -- materialisation -------------------------------------------------------------------

    def stat(self, path: str) -> Attr:
        """What ``path`` under M is (OSError with the namespace's errno), making nothing.

        Present metadata holds for the whole run (objects never change), so each name is
        asked once, and a name in a directory already known is one look-up in it.
        """
        attr = self._attrs.get(path)
        if attr is not None:
            return attr
        parent, _, name = path.rpartition("/")
        known = self._attrs.get(parent)
        if known is not None and known.kind == "dir" and name not in ("", ".", ".."):
            attr = self.namespace.lookup(known.ino, name)  # one step, not a walk from M
        else:
            attr = self.namespace.resolve(path)
        self._attrs[path] = attr
        return attr

    def placeholder(self, path: str) -> Attr:
        """Make ``path`` exist in the view: a directory, or a file's metadata stand-in (xattr
        reads are answered by the tracer from the namespace)."""
        attr = self.stat(path)
        if self._made.get(path, 0) < _BARE:
            self._make(path, attr)
        return attr

    def materialise(self, path: str) -> Attr:
        """Make ``path`` fully usable: a file's verified object (a directory needs only itself:
        the tracer writes its listings from the namespace)."""
        attr = self.placeholder(path)
        if attr.kind != "dir" and self._made[path] < _FULL:
            self._link_object(path, attr)
            self._made[path] = _FULL
        return attr

    def _make(self, path: str, attr: Attr) -> None:
        """Create the view entry of ``path`` (its parents first) with ``attr``'s metadata."""
        mount = self.mount_of(path)
        parent = os.path.dirname(path)
        if mount is not None and path != mount:
            if self._made.get(parent, 0) < _MADE:
                self._make(parent, self.stat(parent))
        else:
            os.makedirs(self.root + parent, exist_ok=True)
        real = self.root + path
        with self._writable(self.root + parent):
            if attr.kind == "dir":
                self._new_dir(real, attr)
                self._made[path] = _MADE
            else:
                self._new_placeholder(real, attr)
                self._made[path] = _BARE
        self._attrs[path] = attr
        if mount is not None and path != mount:
            self._restore_mtime(parent)

    def _new_dir(self, real: str, attr: Attr) -> None:
        with contextlib.suppress(FileExistsError):
            os.mkdir(real, 0o755)
        self._decorate(real, attr)
        os.chmod(real, attr.mode & 0o7777)

    def _new_placeholder(self, real: str, attr: Attr) -> None:
        try:
            fd = os.open(real, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            return  # made already (the object, or by a listing)
        try:
            os.ftruncate(fd, attr.size)
            ns = int(attr.mtime * 1e9)
            os.utime(fd, ns=(ns, ns))
            os.fchmod(fd, attr.mode & 0o7777)
        finally:
            os.close(fd)

    def _decorate(self, target: str | int, attr: Attr) -> None:
        """Give a view entry the xattrs and the mtime that the namespace reports for it."""
        self._xattrs(target, attr)
        ns = int(attr.mtime * 1e9)
        os.utime(target, ns=(ns, ns))

    def _xattrs(self, target: str | int, attr: Attr) -> None:
        if self._xattrs_work:
            for name in self.namespace.listxattr(attr.ino):
                try:
                    os.setxattr(target, name, self.namespace.getxattr(attr.ino, name))
                except OSError as e:
                    if e.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP):
                        raise
                    self._xattrs_work = False  # this filesystem keeps no user xattrs
                    break

    def _restore_mtime(self, path: str) -> None:
        """Creating an entry touched its directory's mtime: give it back the namespace's."""
        attr = self.stat(path)
        ns = int(attr.mtime * 1e9)
        os.utime(self.root + path, ns=(ns, ns))

    def _link_object(self, path: str, attr: Attr) -> None:
        """Put the verified object in place of the placeholder, keeping the view's name."""
        source = self.namespace.open_file(attr.ino)
        real = self.root + path
        temp = f"{real}.{os.getpid()}.link"
        parent = os.path.dirname(real)
        with self._writable(parent):
            try:
                os.link(source, temp)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.EPERM):
                    raise
                os.link(self._cached_copy(source, attr), temp)
            os.rename(temp, real)
        self._restore_mtime(os.path.dirname(path))

    def _cached_copy(self, source: Path, attr: Attr) -> Path:
        """A copy of a local replica in the cache, which shares the view's filesystem."""
        checksum = "sha256:" + self.namespace.getxattr(attr.ino, _SHA256_XATTR).decode()
        found = self.cache.lookup(checksum)
        if found is not None:
            return found
        with open(source, "rb") as src:
            return self.cache.fill(checksum, attr.size, lambda out: shutil.copyfileobj(src, out))

    @contextlib.contextmanager
    def _writable(self, path: str) -> Iterator[None]:
        """Let this process change a view entry that shows mode 0555 or 0444 (add entries to a
        directory, xattrs to a file).

        root ignores the mode; anyone else opens it up for the moment of the change.
        """
        if self._privileged:
            yield
            return
        mode = os.stat(path).st_mode & 0o7777
        os.chmod(path, mode | 0o200)
        try:
            yield
        finally:
            os.chmod(path, mode)

    def remove(self) -> None:
        """Remove the view root and everything made in it (the run is over)."""
        if not self._privileged:
            for top, dirs, _files in os.walk(self.root):
                for name in dirs:
                    with contextlib.suppress(OSError):
                        os.chmod(os.path.join(top, name), 0o755)
        shutil.rmtree(self.root, ignore_errors=True)
