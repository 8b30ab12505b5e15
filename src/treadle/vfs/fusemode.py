"""Mode ``fuse``: the FUSE daemon, and the run it serves.

The kernel routes every path walk under a mount point through the mount, so this mode is
complete by construction (docs/vfs.md, "Fuse mode"). The launcher process enters a private
mount namespace (and a user namespace when not root) and gets its mount points from
``mountns``, then serves the one FUSE connection from an asyncio loop in this process while
the command runs as a child in the same namespace. The mount dies with the namespace: a
crashed run leaves nothing on the host.

One connection serves every mount point. Its root is the namespace's mount table (nodeid 1,
``Namespace.ROOT_INO``), and each mount point gets a bind of its directory in that tree, so
the kernel's inode numbers are the namespace's. Reads go through kernel passthrough when the
kernel lets us hand it the object's file (root on the host, Linux >= 6.9); otherwise, and for
good after the first refusal, the daemon serves them with ``pread``.

System interfaces are ctypes over libc and ioctls on ``/dev/fuse``: nothing compiled, no
libfuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import functools
import itertools
import os
import select
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from treadle.errors import VfsError
from treadle.vfs import fuseproto as fp
from treadle.vfs import mountns, process

if TYPE_CHECKING:
    from treadle.vfs.namespace import Attr, Namespace

_T = TypeVar("_T")

# --- Kernel constants (linux/prctl.h) -----------------------------------------------------
PR_SET_PDEATHSIG = 1

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
# How many filesystems deep under a backing file the kernel may go. At 1 it refuses with ELOOP
# every backing file on an overlayfs, and a container's root is one; at 2, the kernel's most,
# it takes them. The price of 2 is that nothing can be stacked on our mount in turn, and
# nothing is: it lives in the run's private namespace, reached only by the command.
STACK_DEPTH = 2

_libc = ctypes.CDLL(None, use_errno=True)


# --- The daemon ----------------------------------------------------------------------------


class _Absent:
    """A look-up's answer that the name does not exist (a negative entry for the kernel)."""


ABSENT = _Absent()


@dataclass
class _OpenNode:
    """An inode with open handles, which all share one read mode: the file the daemon reads
    (None once the kernel holds it), the backing id (0 when the daemon serves reads), and how
    many handles are open."""

    fd: int | None
    backing_id: int
    handles: int = 0


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
        self._files: dict[int, int] = {}  # open handle -> its inode
        self._nodes: dict[int, _OpenNode] = {}  # inode -> its read mode, while it has handles
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
        for fh in list(self._files):
            self._close(fh)
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
            case fp.Lookup(unique=unique, nodeid=nodeid, name=name):
                self._answer(unique, functools.partial(self._entry, unique), self._cached_lookup,
                             self._full_lookup, nodeid, os.fsdecode(name))
            case fp.GetAttr(unique=unique, nodeid=nodeid):
                self._answer(unique, functools.partial(self._attr, unique),
                             self.namespace.cached_getattr, self.namespace.getattr, nodeid)
            case fp.Statx(unique=unique, nodeid=nodeid):
                self._answer(unique, functools.partial(self._statx, unique),
                             self.namespace.cached_getattr, self.namespace.getattr, nodeid)
            case fp.Open():
                self._open_known(request)
            case fp.OpenDir(unique=unique, nodeid=nodeid):
                self._answer(unique, functools.partial(self._opendir, unique),
                             self.namespace.cached_getattr, self.namespace.getattr, nodeid)
            case fp.ReadDir() | fp.ReadDirPlus():
                limit = max(1, request.size // (DIRENTPLUS_MIN if isinstance(request, fp.ReadDirPlus)
                                                else DIRENT_MIN))
                self._answer(request.unique, functools.partial(self._listing, request),
                             self.namespace.cached_listdir, self.namespace.listdir,
                             request.nodeid, request.offset, limit)
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
        except Exception as e:  # noqa: BLE001 - every failure becomes the caller's answer
            reply = self._failure(unique, e)
        finally:
            self._tasks.pop(unique, None)
        self._write(reply)

    def _failure(self, unique: int, e: Exception) -> bytes:
        """The answer to request ``unique`` that failed with ``e``: its errno, or EIO for our
        own bug, which also fails the daemon (closed, never silently)."""
        if isinstance(e, OSError):
            return self.conn.reply_error(unique, e.errno or errno.EIO)
        self.fail(f"internal error answering request {unique}: {type(e).__name__}: {e}")
        return self.conn.reply_error(unique, errno.EIO)  # the caller waits, unkillable

    def _answer(self, unique: int, build: Callable[[_T], bytes],
                quick: Callable[..., _T | None], full: Callable[..., _T], *args: object) -> None:
        """Answer request ``unique`` with ``build(quick(*args))`` at once when the namespace
        knows it without asking a source, else with ``build(full(*args))`` from a thread.

        Most metadata requests of a run are known answers, and the hop to a thread and back
        costs several times the answer itself (docs/vfs.md, "Fuse mode")."""
        try:
            known = quick(*args)
            reply = None if known is None else build(known)
        except Exception as e:  # noqa: BLE001 - every failure becomes the caller's answer
            reply = self._failure(unique, e)
        if reply is not None:
            self._write(reply)
        else:
            self._spawn(unique, self._asked(build, full, args))

    async def _asked(self, build: Callable[[_T], bytes], full: Callable[..., _T],
                     args: tuple[object, ...]) -> bytes:
        return build(await self._call(full, *args))

    async def _call(self, fn: Callable[..., _T], *args: object) -> _T:
        return await self.loop.run_in_executor(self.pool, fn, *args)

    # -- requests -------------------------------------------------------------------------
    def _init(self, request: fp.Init) -> None:
        self._write(self.conn.reply_init(request.unique, passthrough=self.want_passthrough,
                                         stack_depth=STACK_DEPTH))
        self.passthrough = self.conn.passthrough
        if self.need_passthrough and not self.passthrough:
            self.fail(f"the kernel (FUSE 7.{request.minor}) did not accept passthrough")

    def _timeout(self, attr: Attr) -> float:
        return FILE_TIMEOUT if attr.kind == "file" else DIR_TIMEOUT

    def _cached_lookup(self, parent: int, name: str) -> Attr | _Absent | None:
        try:
            return self.namespace.cached_lookup(parent, name)
        except FileNotFoundError:
            return ABSENT

    def _full_lookup(self, parent: int, name: str) -> Attr | _Absent:
        try:
            return self.namespace.lookup(parent, name)
        except FileNotFoundError:
            return ABSENT

    def _entry(self, unique: int, attr: Attr | _Absent) -> bytes:
        if isinstance(attr, _Absent):
            return self.conn.reply_negative_entry(unique, timeout=ABSENT_TIMEOUT)
        timeout = self._timeout(attr)
        return self.conn.reply_entry(unique, attr, entry_timeout=timeout, attr_timeout=timeout,
                                     uid=self._uid, gid=self._gid)

    def _attr(self, unique: int, attr: Attr) -> bytes:
        return self.conn.reply_attr(unique, attr, attr_timeout=self._timeout(attr),
                                    uid=self._uid, gid=self._gid)

    def _statx(self, unique: int, attr: Attr) -> bytes:
        return self.conn.reply_statx(unique, attr, attr_timeout=self._timeout(attr),
                                     uid=self._uid, gid=self._gid)

    def _open_known(self, request: fp.Open) -> None:
        """Answer OPEN at once when the inode is open already or this run already has the
        object's verified file, else ask the namespace in a task. Objects never change, so the
        file found at the first open serves every later one (V6 in docs/vfs.md), unless it has
        gone meanwhile (an evicted cache copy): then the namespace is asked again."""
        if request.nodeid in self._nodes:
            self._write(self._handle(request.unique, request.nodeid))
            return
        path = self._objects.get(request.nodeid)
        if path is not None:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                del self._objects[request.nodeid]
            else:
                self._write(self._opened(request.unique, request.nodeid, fd))
                return
        self._spawn(request.unique, self._open(request))

    async def _open(self, request: fp.Open) -> bytes:
        path = await self._call(self.namespace.open_file, request.nodeid)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._objects[request.nodeid] = path
        return self._opened(request.unique, request.nodeid, fd)

    def _opened(self, unique: int, nodeid: int, fd: int) -> bytes:
        """The OPEN reply for inode ``nodeid`` whose object's file is ``fd``: passthrough, or
        the daemon reads it. An inode opened meanwhile by another handle keeps its mode."""
        if nodeid in self._nodes:
            os.close(fd)
        else:
            backing_id = self._backing_open(fd) if self.passthrough else 0
            if backing_id:
                os.close(fd)  # the kernel holds the file now
            self._nodes[nodeid] = _OpenNode(None if backing_id else fd, backing_id)
        return self._handle(unique, nodeid)

    def _handle(self, unique: int, nodeid: int) -> bytes:
        """The OPEN reply for a new handle of the open inode ``nodeid``, in the inode's mode.

        The kernel fails with EIO an open answered in one mode while the inode has handles in
        the other, and takes passthrough handles of one inode only on one backing file. So
        every handle shares the first one's backing id, or its file, even after the connection
        has switched to daemon reads; the id is closed when the last handle is released.
        """
        node = self._nodes[nodeid]
        node.handles += 1
        fh = next(self._handles)
        self._files[fh] = nodeid
        if node.backing_id:
            self.namespace.stats["passthrough_opens"] += 1
            # the backing file's page cache serves every open
            return self.conn.reply_open(unique, fh, fp.FOPEN_PASSTHROUGH, node.backing_id)
        return self.conn.reply_open(unique, fh, fp.FOPEN_KEEP_CACHE)

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
        nodeid = self._files.get(request.fh)
        fd = None if nodeid is None else self._nodes[nodeid].fd
        if fd is None:
            self._write(self.conn.reply_error(request.unique, errno.EBADF))
            return
        try:
            data = os.pread(fd, request.size, request.offset)
        except OSError as e:
            self._write(self.conn.reply_error(request.unique, e.errno or errno.EIO))
            return
        self.namespace.stats["daemon_reads"] += 1
        self._write(self.conn.reply_data(request.unique, data))

    def _close(self, fh: int) -> None:
        """Release handle ``fh``; its inode's backing id and file with the inode's last one."""
        nodeid = self._files.pop(fh, None)
        if nodeid is None:
            return
        node = self._nodes[nodeid]
        node.handles -= 1
        if node.handles:
            return
        del self._nodes[nodeid]
        if node.backing_id:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self.dev, fp.FUSE_DEV_IOC_BACKING_CLOSE,
                            fp.pack_backing_id(node.backing_id))
        if node.fd is not None:
            os.close(node.fd)

    def _opendir(self, unique: int, attr: Attr) -> bytes:
        if attr.kind != "dir":
            raise OSError(errno.ENOTDIR, "not a directory")
        return self.conn.reply_open(unique, 0, 0)

    def _listing(self, request: fp.ReadDir | fp.ReadDirPlus,
                 listing: list[tuple[str, Attr, int]]) -> bytes:
        entries = [fp.DirEntry(name, attr, after, self._timeout(attr), self._timeout(attr))
                   for name, attr, after in listing]
        if isinstance(request, fp.ReadDirPlus):
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
    synthetic = mountns.Synthetic()
    try:
        targets = mountns.targets(namespace.mounts)
        synthetic.make([t for t in targets if not os.path.lexists(t)])
        mountns.mount_fuse(dev, targets[0])
    except (OSError, VfsError) as e:
        synthetic.undo()
        daemon.stop()
        if isinstance(e, VfsError):
            raise
        raise VfsError(f"cannot mount {', '.join(namespace.mounts)}: {e.strerror}") from None
    daemon.start()  # /dev/fuse can be read only once it is mounted
    try:
        try:
            failure = await _first(loop.run_in_executor(None, mountns.bind_targets, targets),
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
        mountns.unmount(targets)
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
        mountns.enter_private_namespace()
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
        mountns.enter_private_namespace()
    except OSError as e:
        return f"0 no private mount namespace ({e.strerror})"
    try:
        dev = os.open("/dev/fuse", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        return f"0 /dev/fuse: {e.strerror}"
    backing = os.open(sys.executable, os.O_RDONLY | os.O_CLOEXEC)
    try:
        mountns.mount("treadle", "/", "fuse.treadle",
                      mountns.MS_RDONLY | mountns.MS_NOSUID | mountns.MS_NODEV,
                      f"fd={dev},rootmode=40000,user_id={os.geteuid()},group_id={os.getegid()}")
    except OSError as e:
        return f"0 a FUSE mount failed ({e.strerror})"
    if not select.select([dev], [], [], PROBE_TIMEOUT)[0]:
        return "0 the kernel sent no FUSE INIT"
    conn = fp.Connection()
    try:
        init = conn.receive(os.read(dev, fp.READ_BUFFER_SIZE))
        assert isinstance(init, fp.Init)  # receive() accepts nothing else first
        os.write(dev, conn.reply_init(init.unique, stack_depth=STACK_DEPTH))
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
