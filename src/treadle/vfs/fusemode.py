"""Mode ``fuse``: a FUSE mount at each mount point, in a mount namespace of the run's own.

The kernel routes every path walk under a mount point through the mount, so this mode is
complete by construction (docs/vfs.md, "Fuse mode"). The launcher process enters a private
mount namespace (and a user namespace when not root), mounts one FUSE connection, and serves
it from an asyncio loop in this process while the command runs as a child in the same
namespace. The mount dies with the namespace: a crashed run leaves nothing on the host.

One connection serves every mount point. Its root is the namespace's mount table (nodeid 1,
``Namespace.ROOT_INO``), and each mount point gets a bind of its directory in that tree, so
the kernel's inode numbers are the namespace's. Reads go through kernel passthrough when the
kernel lets us hand it the object's file (root on the host, Linux >= 6.9); otherwise, and for
good after the first refusal, the daemon serves them with ``pread``.

System interfaces are ctypes over libc (``unshare``, ``mount``, ``open_tree``, ...): nothing
compiled, no libfuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import itertools
import os
import select
import signal
import stat
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from treadle.errors import VfsError
from treadle.vfs import fuseproto as fp
from treadle.vfs import process

if TYPE_CHECKING:
    from treadle.vfs.namespace import Attr, Namespace

_T = TypeVar("_T")

# --- Kernel constants (linux/sched.h, linux/mount.h, linux/prctl.h) -------------------------
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
AT_FDCWD = -100
PR_SET_PDEATHSIG = 1
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_FSOPEN = 430
SYS_FSCONFIG = 431
SYS_FSMOUNT = 432
OPEN_TREE_CLONE = 1
AT_RECURSIVE = 0x8000
AT_SYMLINK_NOFOLLOW = 0x100
MOVE_MOUNT_F_EMPTY_PATH = 4
FSOPEN_CLOEXEC = 1
FSMOUNT_CLOEXEC = 1
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MOUNT_ATTR_NOSUID = 2
MOUNT_ATTR_NODEV = 4

# --- Timeouts the kernel may cache answers for (docs/vfs.md) -------------------------------
# Objects never change, so a file's name and attributes hold for 5 minutes; a directory's and
# an absent name's for 1 s, so that new ingests appear.
FILE_TIMEOUT = 300.0
DIR_TIMEOUT = 1.0
ABSENT_TIMEOUT = 1.0

# Requests that wait (database, network, hashing) run in these threads while the loop keeps
# answering the others; more would only queue on the same sources.
SERVE_THREADS = 16
# A READDIR entry takes at least 32 bytes (24-byte header and a padded name), a READDIRPLUS
# entry at least 160 (entry and attributes first): how many entries a reply can hold at most.
DIRENT_MIN = 32
DIRENTPLUS_MIN = 160
# How long a probe for fuse_available / passthrough_available may wait for the kernel's INIT.
PROBE_TIMEOUT = 5.0

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    """``result`` of a libc call, or OSError with errno and ``what`` when it is negative."""
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(_libc.mount(source.encode(), os.fsencode(target), fstype.encode() if fstype else None,
                       ctypes.c_ulong(flags), data.encode() if data else None), f"mount {target}")


def _open_tree(dirfd: int, path: str, flags: int) -> int:
    return _check(_libc.syscall(SYS_OPEN_TREE, ctypes.c_int(dirfd), os.fsencode(path),
                                ctypes.c_uint(flags | os.O_CLOEXEC)), f"open_tree {path}")


def _move_mount(tree: int, to_dirfd: int, to_path: str) -> None:
    _check(_libc.syscall(SYS_MOVE_MOUNT, ctypes.c_int(tree), b"", ctypes.c_int(to_dirfd),
                         os.fsencode(to_path), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)),
           f"move_mount {to_path}")


def _new_tmpfs() -> int:
    """A detached tmpfs (mode 0755) as a mount fd: the synthetic directory's filesystem."""
    fs = _check(_libc.syscall(SYS_FSOPEN, b"tmpfs", ctypes.c_uint(FSOPEN_CLOEXEC)), "fsopen tmpfs")
    try:
        _check(_libc.syscall(SYS_FSCONFIG, ctypes.c_int(fs), ctypes.c_uint(FSCONFIG_SET_STRING),
                             b"mode", b"0755", ctypes.c_int(0)), "fsconfig tmpfs")
        _check(_libc.syscall(SYS_FSCONFIG, ctypes.c_int(fs), ctypes.c_uint(FSCONFIG_CMD_CREATE),
                             None, None, ctypes.c_int(0)), "fsconfig tmpfs")
        return _check(_libc.syscall(SYS_FSMOUNT, ctypes.c_int(fs), ctypes.c_uint(FSMOUNT_CLOEXEC),
                                    ctypes.c_uint(MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)),
                      "fsmount tmpfs")
    finally:
        os.close(fs)


# --- The namespace -------------------------------------------------------------------------


def _enter_private_namespace() -> None:
    """Enter a mount namespace of our own, with a user namespace when not root.

    The user namespace maps our own uid and gid to themselves, so the command sees its usual
    ids; its creator's capabilities are enough to mount FUSE and tmpfs in it. ``/`` becomes
    recursively private so that nothing we mount propagates to the host.
    """
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWNS if uid == 0 else CLONE_NEWNS | CLONE_NEWUSER
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")
    if uid != 0:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None)


def _targets(mounts: Iterable[str]) -> list[str]:
    """Where to bind a directory of the FUSE tree: each mount point, or, when it is missing on
    the host, its first missing ancestor (a synthetic directory of the namespace's tree)."""
    targets: list[str] = []
    for mount in mounts:
        target = mount
        while not os.path.lexists(os.path.dirname(target)):
            target = os.path.dirname(target)
        if os.path.lexists(target) and not os.path.isdir(target):
            raise VfsError(f"mount point {target} exists and is not a directory")
        if target not in targets:
            targets.append(target)
    return targets


class _Synthetic:
    """Missing mount points made to exist inside this namespace only, never on the host.

    A tmpfs goes over the deepest existing ancestor, holding a bind mount of each of that
    ancestor's original entries (symbolic links re-created) plus the empty directories, and is
    then made read-only; when the ancestor is ``/`` the process changes root into the tmpfs,
    because a mount stacked on the root is not followed from it. The working directory is
    entered again by name, as bubblewrap does. ``undo`` puts the host's view back once the
    command is over, so that what the launcher writes afterwards (``--stats``) lands there.
    """

    def __init__(self) -> None:
        self.parents: list[str] = []
        self._old_root: int | None = None
        self._old_cwd: int | None = None

    def make(self, missing: list[str]) -> None:
        if not missing:
            return
        cwd = os.getcwd()
        self._old_cwd = os.open(".", os.O_PATH | os.O_CLOEXEC)
        by_parent: dict[str, list[str]] = {}
        for target in missing:
            by_parent.setdefault(os.path.dirname(target), []).append(os.path.basename(target))
        for parent, names in by_parent.items():
            self._cover(parent, names)
        with contextlib.suppress(OSError):
            os.chdir(cwd)

    def _cover(self, parent: str, names: list[str]) -> None:
        original = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        tmpfs = _new_tmpfs()
        try:
            _move_mount(tmpfs, AT_FDCWD, parent)
            self.parents.append(parent)
            for entry in os.listdir(original):
                _carry(original, tmpfs, entry)
            for name in names:
                os.mkdir(name, 0o555, dir_fd=tmpfs)
            if parent == "/":
                self._old_root = os.open("/", os.O_PATH | os.O_CLOEXEC)
                os.fchdir(tmpfs)
                _check(_libc.chroot(b"."), "chroot")
        finally:
            os.close(original)
            os.close(tmpfs)
        _mount("none", parent, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, None)

    def undo(self) -> None:
        for parent in reversed(self.parents):
            if parent != "/":
                _libc.umount2(os.fsencode(parent), ctypes.c_int(MNT_DETACH))
        if self._old_root is not None:
            os.fchdir(self._old_root)
            _check(_libc.chroot(b"."), "chroot")
            os.close(self._old_root)
            self._old_root = None
        if self._old_cwd is not None:
            os.fchdir(self._old_cwd)
            os.close(self._old_cwd)
            self._old_cwd = None
        self.parents.clear()


def _carry(original: int, tmpfs: int, entry: str) -> None:
    """Show ``entry`` of the hidden directory ``original`` in the tmpfs over it."""
    st = os.stat(entry, dir_fd=original, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(entry, dir_fd=original), entry, dir_fd=tmpfs)
        return
    if stat.S_ISDIR(st.st_mode):
        os.mkdir(entry, 0o755, dir_fd=tmpfs)
    else:
        os.close(os.open(entry, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644, dir_fd=tmpfs))
    tree = _open_tree(original, entry, OPEN_TREE_CLONE | AT_RECURSIVE | AT_SYMLINK_NOFOLLOW)
    try:
        _move_mount(tree, tmpfs, entry)
    finally:
        os.close(tree)


def _mount_fuse(dev: int, where: str) -> None:
    """Mount the FUSE connection ``dev`` at ``where`` (docs/vfs.md).

    ``default_permissions`` lets the kernel check the modes itself (no ACCESS round trips);
    ``allow_other`` because only the run's own processes can reach a mount in its private
    namespace, and a command that changes uid (``runuser``, a job dropping root) must still read.
    """
    options = (f"fd={dev},rootmode=40000,user_id={os.geteuid()},group_id={os.getegid()},"
               "default_permissions,allow_other")
    _mount("treadle", where, "fuse.treadle", MS_RDONLY | MS_NOSUID | MS_NODEV, options)


def _bind_targets(targets: list[str]) -> None:
    """Bind, onto each target, its directory of the FUSE tree mounted at the first target.

    Clones of the subtrees are taken, the mount itself is detached, and the clones are moved
    into place. Paths are walked through the FUSE tree here, so the daemon must already be
    serving: call it from a thread.
    """
    first = targets[0]
    trees = []
    try:
        for target in targets:
            trees.append(_open_tree(AT_FDCWD, first + target, OPEN_TREE_CLONE))
        _check(_libc.umount2(os.fsencode(first), ctypes.c_int(MNT_DETACH)), f"umount {first}")
        for tree, target in zip(trees, targets, strict=True):
            _move_mount(tree, AT_FDCWD, target)
    finally:
        for tree in trees:
            os.close(tree)


# --- The daemon ----------------------------------------------------------------------------


@dataclass
class _OpenFile:
    """An open object: the file the daemon reads (None once the kernel holds it) and its
    backing id (0 without passthrough)."""

    fd: int | None
    backing_id: int


class _Daemon:
    """Answers the kernel's requests on ``dev`` from ``namespace`` (docs/vfs.md).

    Quick requests are answered in the loop; those that may wait call the namespace in a
    thread, as their own task, and INTERRUPT cancels that task (answered EINTR). Anything that
    goes wrong with the connection itself sets ``failed``.
    """

    def __init__(self, namespace: Namespace, dev: int, passthrough: bool | None,
                 report: Callable[[str], None], loop: asyncio.AbstractEventLoop) -> None:
        self.namespace = namespace
        self.dev = dev
        self.want_passthrough = passthrough is not False
        self.need_passthrough = passthrough is True
        self.report = report
        self.loop = loop
        self.conn = fp.Connection()
        self.passthrough = False
        self.failed: asyncio.Future[str | None] = loop.create_future()
        self.pool = ThreadPoolExecutor(SERVE_THREADS, thread_name_prefix="treadle-vfs")
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._files: dict[int, _OpenFile] = {}
        self._objects: dict[int, Path] = {}  # inode -> its object's verified file, for the run
        self._handles = itertools.count(1)
        self._uid, self._gid = os.geteuid(), os.getegid()
        self._reading = False
        self._closed = False
        for key in ("passthrough_opens", "daemon_reads"):
            namespace.stats.setdefault(key, 0)

    # -- I/O ------------------------------------------------------------------------------
    def start(self) -> None:
        self.loop.add_reader(self.dev, self._readable)
        self._reading = True

    def stop(self) -> None:
        """Stop serving and close /dev/fuse, which aborts the connection: calls still in flight
        get ENOTCONN, so no thread or process stays blocked on the mount. Idempotent."""
        if self._closed:
            return
        if self._reading:
            self.loop.remove_reader(self.dev)
            self._reading = False
        for task in self._tasks.values():
            task.cancel()
        for unique in list(self._files):
            self._close(unique)
        os.close(self.dev)
        self._closed = True  # cancelled tasks still answering must not write to a reused fd
        self.pool.shutdown(wait=False, cancel_futures=True)

    def fail(self, why: str) -> None:
        if not self.failed.done():
            self.failed.set_result(why)

    def _readable(self) -> None:
        while self._reading:
            try:
                data = os.read(self.dev, fp.READ_BUFFER_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno == errno.ENOENT:
                    continue  # a request interrupted before we read it
                if e.errno == errno.ENODEV:
                    self.loop.remove_reader(self.dev)  # unmounted: nothing more will come
                    self._reading = False
                    return
                self.fail(f"reading /dev/fuse: {e.strerror}")
                return
            try:
                self._dispatch(self.conn.receive(data))
            except fp.ProtocolError as e:
                self.fail(f"the kernel broke the FUSE protocol: {e}")
                return

    def _write(self, reply: bytes) -> None:
        if self._closed:
            return
        try:
            os.write(self.dev, reply)
        except OSError as e:
            if e.errno != errno.ENOENT:  # ENOENT: the request was interrupted meanwhile
                self.fail(f"writing to /dev/fuse: {e.strerror}")

    # -- dispatch -------------------------------------------------------------------------
    def _dispatch(self, request: fp.Request) -> None:
        match request:
            case fp.Init():
                self._init(request)
            case fp.Forget() | fp.BatchForget():
                pass  # inode numbers hold for the whole run: nothing to forget
            case fp.Interrupt(target=target):
                task = self._tasks.get(target)
                if task is not None:
                    task.cancel()
            case fp.Destroy(unique=unique):
                self._write(self.conn.reply_ok(unique))
            case fp.Mutating(unique=unique):
                self._write(self.conn.reply_error(unique, errno.EROFS))
            case fp.Unknown(unique=unique):
                self._write(self.conn.reply_error(unique, errno.ENOSYS))
            case fp.Read():
                self._read(request)
            case fp.Release(unique=unique, fh=fh):
                self._close(fh)
                self._write(self.conn.reply_ok(unique))
            case fp.Flush(unique=unique) | fp.ReleaseDir(unique=unique):
                self._write(self.conn.reply_ok(unique))
            case fp.Lookup():
                self._spawn(request.unique, self._lookup(request))
            case fp.GetAttr(unique=unique, nodeid=nodeid):
                self._spawn(unique, self._getattr(unique, nodeid))
            case fp.Statx(unique=unique, nodeid=nodeid):
                self._spawn(unique, self._statx(unique, nodeid))
            case fp.Open():
                self._open_known(request)
            case fp.OpenDir(unique=unique, nodeid=nodeid):
                self._spawn(unique, self._opendir(unique, nodeid))
            case fp.ReadDir() | fp.ReadDirPlus():
                self._spawn(request.unique, self._readdir(request))
            case fp.StatFs(unique=unique):
                self._spawn(unique, self._statfs(unique))
            case fp.GetXattr():
                self._spawn(request.unique, self._getxattr(request))
            case fp.ListXattr():
                self._spawn(request.unique, self._listxattr(request))
            case fp.Access():
                self._spawn(request.unique, self._access(request))

    def _spawn(self, unique: int, answer: Awaitable[bytes]) -> None:
        """Answer request ``unique`` with what ``answer`` gives, as a task of its own."""
        task = self.loop.create_task(self._serve(unique, answer))
        self._tasks[unique] = task

    async def _serve(self, unique: int, answer: Awaitable[bytes]) -> None:
        try:
            reply = await answer
        except asyncio.CancelledError:
            reply = self.conn.reply_error(unique, errno.EINTR)
        except OSError as e:
            reply = self.conn.reply_error(unique, e.errno or errno.EIO)
        except Exception as e:  # noqa: BLE001 - our bug: the daemon fails closed, never silently
            self.fail(f"internal error answering request {unique}: {type(e).__name__}: {e}")
            reply = self.conn.reply_error(unique, errno.EIO)  # the caller waits, unkillable
        finally:
            self._tasks.pop(unique, None)
        self._write(reply)

    async def _call(self, fn: Callable[..., _T], *args: object) -> _T:
        return await self.loop.run_in_executor(self.pool, fn, *args)

    # -- requests -------------------------------------------------------------------------
    def _init(self, request: fp.Init) -> None:
        self._write(self.conn.reply_init(request.unique, passthrough=self.want_passthrough))
        self.passthrough = self.conn.passthrough
        if self.need_passthrough and not self.passthrough:
            self.fail(f"the kernel (FUSE 7.{request.minor}) did not accept passthrough")

    def _timeout(self, attr: Attr) -> float:
        return FILE_TIMEOUT if attr.kind == "file" else DIR_TIMEOUT

    async def _lookup(self, request: fp.Lookup) -> bytes:
        try:
            attr = await self._call(self.namespace.lookup, request.nodeid, os.fsdecode(request.name))
        except FileNotFoundError:
            return self.conn.reply_negative_entry(request.unique, timeout=ABSENT_TIMEOUT)
        timeout = self._timeout(attr)
        return self.conn.reply_entry(request.unique, attr, entry_timeout=timeout,
                                     attr_timeout=timeout, uid=self._uid, gid=self._gid)

    async def _getattr(self, unique: int, nodeid: int) -> bytes:
        attr = await self._call(self.namespace.getattr, nodeid)
        return self.conn.reply_attr(unique, attr, attr_timeout=self._timeout(attr),
                                    uid=self._uid, gid=self._gid)

    async def _statx(self, unique: int, nodeid: int) -> bytes:
        attr = await self._call(self.namespace.getattr, nodeid)
        return self.conn.reply_statx(unique, attr, attr_timeout=self._timeout(attr),
                                     uid=self._uid, gid=self._gid)

    def _open_known(self, request: fp.Open) -> None:
        """Answer OPEN at once when this run already has the object's verified file, else ask
        the namespace in a task. Objects never change, so the file found at the first open
        serves every later one (V6 in docs/vfs.md), unless it has gone meanwhile (an evicted
        cache copy): then the namespace is asked again."""
        path = self._objects.get(request.nodeid)
        if path is not None:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                del self._objects[request.nodeid]
            else:
                self._write(self._opened(request.unique, fd))
                return
        self._spawn(request.unique, self._open(request))

    async def _open(self, request: fp.Open) -> bytes:
        path = await self._call(self.namespace.open_file, request.nodeid)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._objects[request.nodeid] = path
        return self._opened(request.unique, fd)

    def _opened(self, unique: int, fd: int) -> bytes:
        """The OPEN reply for the object's file ``fd``: passthrough, or the daemon reads it."""
        backing_id = self._backing_open(fd) if self.passthrough else 0
        fh = next(self._handles)
        if backing_id:
            os.close(fd)  # the kernel holds the file now
            self._files[fh] = _OpenFile(None, backing_id)
            self.namespace.stats["passthrough_opens"] += 1
            flags = fp.FOPEN_PASSTHROUGH  # the backing file's page cache serves every open
        else:
            self._files[fh] = _OpenFile(fd, 0)
            flags = fp.FOPEN_KEEP_CACHE
        return self.conn.reply_open(unique, fh, flags, backing_id)

    def _backing_open(self, fd: int) -> int:
        """The kernel's backing id for ``fd``, or 0 after switching to daemon reads for good."""
        try:
            return fcntl.ioctl(self.dev, fp.FUSE_DEV_IOC_BACKING_OPEN,
                               bytearray(fp.pack_backing_map(fd)), True)
        except OSError as e:
            self.passthrough = False
            self.report(f"passthrough refused ({e.strerror}); the daemon serves reads from now on")
            return 0

    def _read(self, request: fp.Read) -> None:
        opened = self._files.get(request.fh)
        if opened is None or opened.fd is None:
            self._write(self.conn.reply_error(request.unique, errno.EBADF))
            return
        try:
            data = os.pread(opened.fd, request.size, request.offset)
        except OSError as e:
            self._write(self.conn.reply_error(request.unique, e.errno or errno.EIO))
            return
        self.namespace.stats["daemon_reads"] += 1
        self._write(self.conn.reply_data(request.unique, data))

    def _close(self, fh: int) -> None:
        opened = self._files.pop(fh, None)
        if opened is None:
            return
        if opened.backing_id:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self.dev, fp.FUSE_DEV_IOC_BACKING_CLOSE,
                            fp.pack_backing_id(opened.backing_id))
        if opened.fd is not None:
            os.close(opened.fd)

    async def _opendir(self, unique: int, nodeid: int) -> bytes:
        attr = await self._call(self.namespace.getattr, nodeid)
        if attr.kind != "dir":
            raise OSError(errno.ENOTDIR, "not a directory")
        return self.conn.reply_open(unique, 0, 0)

    async def _readdir(self, request: fp.ReadDir | fp.ReadDirPlus) -> bytes:
        plus = isinstance(request, fp.ReadDirPlus)
        limit = max(1, request.size // (DIRENTPLUS_MIN if plus else DIRENT_MIN))
        listing = await self._call(self.namespace.listdir, request.nodeid, request.offset, limit)
        entries = [fp.DirEntry(name, attr, after, self._timeout(attr), self._timeout(attr))
                   for name, attr, after in listing]
        if plus:
            return self.conn.reply_direntplus(request.unique, request.size, entries,
                                              uid=self._uid, gid=self._gid)
        return self.conn.reply_dirents(request.unique, request.size, entries)

    async def _statfs(self, unique: int) -> bytes:
        f = await self._call(self.namespace.statfs)
        return self.conn.reply_statfs(unique, blocks=f["f_blocks"], bfree=f["f_bfree"],
                                      bavail=f["f_bavail"], files=f["f_files"],
                                      ffree=f["f_ffree"], bsize=f["f_bsize"],
                                      namelen=f["f_namemax"], frsize=f["f_frsize"])

    async def _getxattr(self, request: fp.GetXattr) -> bytes:
        value = await self._call(self.namespace.getxattr, request.nodeid, os.fsdecode(request.name))
        return self.conn.reply_xattr(request.unique, value, request.size)

    async def _listxattr(self, request: fp.ListXattr) -> bytes:
        names = await self._call(self.namespace.listxattr, request.nodeid)
        return self.conn.reply_listxattr(request.unique, names, request.size)

    async def _access(self, request: fp.Access) -> bytes:
        attr = await self._call(self.namespace.getattr, request.nodeid)
        if request.mask & os.W_OK:
            raise OSError(errno.EROFS, "read-only")
        if request.mask & os.X_OK and attr.kind == "file":
            raise OSError(errno.EACCES, "not executable")
        return self.conn.reply_ok(request.unique)


# --- The run -------------------------------------------------------------------------------


def _start_command(argv: list[str], env: dict[str, str]) -> int:
    """Fork the command; it dies with SIGKILL if this thread does (``PR_SET_PDEATHSIG``)."""
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the launcher died before the death signal was armed
            os._exit(128 + signal.SIGKILL)
        process.exec_child(argv, env)
    return pid


async def _wait_exit(pid: int, loop: asyncio.AbstractEventLoop) -> None:
    """Return once process ``pid`` has ended (it stays unreaped for ``waitpid``)."""
    ended: asyncio.Future[None] = loop.create_future()
    pidfd = os.pidfd_open(pid)

    def readable() -> None:
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await ended
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


async def _first(work: Awaitable[None], failed: asyncio.Future[str | None]) -> str | None:
    """Wait for ``work`` unless the daemon fails first: the failure's reason, or None."""

    async def finish() -> str | None:
        await work
        return None

    job = asyncio.ensure_future(finish())
    done, _ = await asyncio.wait([job, failed], return_when=asyncio.FIRST_COMPLETED)
    if job in done:
        return job.result()  # an exception of the work itself goes up
    job.cancel()
    return failed.result()


async def _run(namespace: Namespace, dev: int, argv: list[str], env: dict[str, str],
               passthrough: bool | None, report: Callable[[str], None]) -> int:
    loop = asyncio.get_running_loop()
    daemon = _Daemon(namespace, dev, passthrough, report, loop)
    synthetic = _Synthetic()
    try:
        targets = _targets(namespace.mounts)
        synthetic.make([t for t in targets if not os.path.lexists(t)])
        _mount_fuse(dev, targets[0])
    except (OSError, VfsError) as e:
        synthetic.undo()
        daemon.stop()
        if isinstance(e, VfsError):
            raise
        raise VfsError(f"cannot mount {', '.join(namespace.mounts)}: {e.strerror}") from None
    daemon.start()  # /dev/fuse can be read only once it is mounted
    try:
        try:
            failure = await _first(loop.run_in_executor(None, _bind_targets, targets),
                                   daemon.failed)
        except OSError as e:
            raise VfsError(f"cannot mount {', '.join(targets)}: {e.strerror}") from None
        if failure is not None:
            raise VfsError(f"the fuse daemon failed while mounting: {failure}")
        pid = _start_command(argv, env)
        with process.SignalForwarder(pid):
            failure = await _first(_wait_exit(pid, loop), daemon.failed)
        if failure is not None:
            # abort first: a process killed while its request is with the daemon waits for an
            # answer that would never come
            daemon.stop()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        await loop.run_in_executor(None, process.kill_leftovers)
        if failure is not None:
            raise VfsError(f"the fuse daemon failed: {failure}")
        return process.exit_status(status)
    finally:
        for target in reversed(targets):
            _libc.umount2(os.fsencode(target), ctypes.c_int(MNT_DETACH))
        synthetic.undo()
        daemon.stop()


def run_fuse(namespace: Namespace, argv: list[str], env: dict[str, str], *,
             passthrough: bool | None = None, report: Callable[[str], None]) -> int:
    """Run ``argv`` with ``namespace``'s mount points served by FUSE; its exit status.

    ``passthrough`` None uses kernel passthrough when the kernel allows it; False never (the
    daemon serves every read); True requires the kernel to accept it. This process enters a
    namespace of its own for good: call it from the process that exits afterwards. VfsError
    (exit 125) when the mount cannot be made or the daemon fails; then the command is killed.
    """
    try:
        _enter_private_namespace()
        dev = os.open("/dev/fuse", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise VfsError(f"mode fuse: {e.strerror} ({e.filename or 'namespace'})") from None
    process.become_subreaper()
    return asyncio.run(_run(namespace, dev, argv, env, passthrough, report))


# --- Availability, for the launcher and doctor ---------------------------------------------


@dataclass(frozen=True)
class _Probe:
    """What a trial mount in a throw-away namespace found (``error`` empty when it worked)."""

    error: str
    minor: int
    passthrough_error: str


def _probe() -> _Probe:
    """Mount FUSE in a forked child's own namespace, answer INIT, try a BACKING_OPEN.

    The child tells its findings through a pipe; nothing it does is visible outside it.
    """
    reader, writer = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        line = "0 fork"
        try:
            line = _probe_child()
        except BaseException as e:  # noqa: BLE001 - a forked child must reach os._exit
            line = f"0 {getattr(e, 'strerror', None) or e}"
        finally:
            os.write(writer, line.encode())
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as f:
        text = f.read().decode(errors="replace")
    os.waitpid(pid, 0)
    minor, _, rest = text.partition(" ")
    if minor == "0" or not minor.isdigit():
        return _Probe(rest or "the probe died", 0, "")
    return _Probe("", int(minor), rest)


def _probe_child() -> str:
    """In the probe's child: ``"<minor> <passthrough error or nothing>"`` or ``"0 <error>"``."""
    try:
        _enter_private_namespace()
    except OSError as e:
        return f"0 no private mount namespace ({e.strerror})"
    try:
        dev = os.open("/dev/fuse", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        return f"0 /dev/fuse: {e.strerror}"
    backing = os.open(sys.executable, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _mount("treadle", "/", "fuse.treadle", MS_RDONLY | MS_NOSUID | MS_NODEV,
               f"fd={dev},rootmode=40000,user_id={os.geteuid()},group_id={os.getegid()}")
    except OSError as e:
        return f"0 a FUSE mount failed ({e.strerror})"
    if not select.select([dev], [], [], PROBE_TIMEOUT)[0]:
        return "0 the kernel sent no FUSE INIT"
    conn = fp.Connection()
    try:
        init = conn.receive(os.read(dev, fp.READ_BUFFER_SIZE))
        assert isinstance(init, fp.Init)  # receive() accepts nothing else first
        os.write(dev, conn.reply_init(init.unique))
    except fp.ProtocolError as e:
        return f"0 {e}"
    if not conn.passthrough:
        return (f"{init.minor} the kernel does not offer FUSE passthrough "
                "(Linux >= 6.9 with CONFIG_FUSE_PASSTHROUGH)")
    try:
        fcntl.ioctl(dev, fp.FUSE_DEV_IOC_BACKING_OPEN, bytearray(fp.pack_backing_map(backing)), True)
    except OSError as e:
        return (f"{init.minor} FUSE_DEV_IOC_BACKING_OPEN refused ({e.strerror}): passthrough needs "
                "CAP_SYS_ADMIN in the initial user namespace (root on the host)")
    return f"{init.minor} "


_probed: list[_Probe] = []
_probe_lock = threading.Lock()


def _probed_once() -> _Probe:
    with _probe_lock:
        if not _probed:
            _probed.append(_probe())
        return _probed[0]


def fuse_available() -> tuple[bool, str]:
    """Whether mode fuse works here, and why (a trial mount in a throw-away namespace)."""
    found = _probed_once()
    if found.error:
        return False, found.error
    user = "as root" if os.geteuid() == 0 else "in a user namespace"
    return True, f"/dev/fuse mounts in a private namespace {user}; the kernel speaks FUSE 7.{found.minor}"


def passthrough_available() -> tuple[bool, str]:
    """Whether reads can go through kernel passthrough here, and why (a trial BACKING_OPEN)."""
    found = _probed_once()
    if found.error:
        return False, found.error
    if found.passthrough_error:
        return False, found.passthrough_error
    return True, f"FUSE_DEV_IOC_BACKING_OPEN works (FUSE 7.{found.minor})"
