"""Trace mode: the command runs under ptrace and a seccomp filter, for hosts without FUSE.

How it works (docs/vfs.md, "Trace mode"): the tracer forks the command and seizes it with
``PTRACE_SEIZE`` (fork, vfork, clone, exec and seccomp events, ``EXITKILL`` so that nothing runs
on untraced if the tracer dies). The child installs the filter of :mod:`treadle.vfs.bpf`, built
from :data:`treadle.vfs.syscalls.TABLE`, and execs. Path-free calls run natively; every other
call stops at its seccomp event, where the tracer reads its path arguments, resolves relative
names through ``/proc/<tid>/cwd`` and ``/proc/<tid>/fd/<n>``, and then either lets it run,
rewrites its paths into the materialised view (:mod:`treadle.vfs.view`), or skips it with the
errno a read-only mount would give, or answers it itself from the namespace (stat and its
relatives, listings, extended attributes). Results that reveal the view (``getcwd``,
``readlink`` of ``/proc`` links) are translated back at the call's exit stop.
Unknown numbers get ENOSYS and one warning, Parrot's policy: the layer fails closed.

A rewritten path goes into a scratch area that the tracer maps into each thread once (an
injected ``mmap``), never below the stack pointer, which is unsafe on small stacks. The
argument register is restored at the exit stop, because compiled code may rely on the kernel
keeping it. Everything is ctypes over libc; x86-64 only.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import re
import secrets
import signal
import stat
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from treadle.errors import VfsError
from treadle.vfs import bpf, process
from treadle.vfs.cache import Cache
from treadle.vfs.namespace import Attr, Namespace
from treadle.vfs.syscalls import MAX_KNOWN, TABLE, Syscall
from treadle.vfs.view import View

# ptrace requests and options (<linux/ptrace.h>)
_PTRACE_CONT = 7
_PTRACE_GETREGS = 12
_PTRACE_SETREGS = 13
_PTRACE_SYSCALL = 24
_PTRACE_GETEVENTMSG = 0x4201
_PTRACE_SEIZE = 0x4206
_PTRACE_LISTEN = 0x4208
_OPTIONS = (0x1       # TRACESYSGOOD: exit stops say so
            | 0x2     # TRACEFORK
            | 0x4     # TRACEVFORK
            | 0x8     # TRACECLONE
            | 0x10    # TRACEEXEC
            | 0x80    # TRACESECCOMP
            | 0x100000)  # EXITKILL
_EVENT_FORK, _EVENT_VFORK, _EVENT_CLONE, _EVENT_EXEC = 1, 2, 3, 4
_EVENT_SECCOMP = 7
_EVENT_STOP = 128
_WALL = 0x40000000
_SYSCALL_EXIT = signal.SIGTRAP | 0x80
_GROUP_STOPS = (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)

# x86-64 numbers and flags the tracer itself needs
_SYS_MMAP = 9
_SYS_LSEEK = 8
_GETDENTS64 = 217
_DIRENT64 = struct.Struct("<QqHB")  # d_ino, d_off, d_reclen, d_type; then the name and NUL
_DIRENT = struct.Struct("<QqH")  # d_ino, d_off, d_reclen; then name, NUL, pad, d_type last
_DT_DIR, _DT_REG = 4, 8
_EXEC_CALLS = frozenset({59, 322, 134})
_READLINK, _READLINKAT = 89, 267
_RENAMES = frozenset({82, 264, 316})
_LINKS = frozenset({86, 265})
_CREATES = frozenset({83, 258, 88, 266, 133, 259})
_REMOVES = frozenset({84, 87, 263})
_UTIMENSAT = 280
_XATTR_READS = {191: True, 192: True, 194: False, 195: False}  # True: getxattr, else list
_XATTR_AT_READS = {464: True, 465: False}  # getxattrat (struct xattr_args), listxattrat
_XATTR_ARGS = struct.Struct("<QII")  # struct xattr_args: value, size, flags
_USELIB, _TRUNCATE, _RMDIR, _UNLINK, _UNLINKAT = 134, 76, 84, 87, 263
_IOCTL, _FTRUNCATE, _FALLOCATE = 16, 77, 285
_FS_IOC32_SETFLAGS = 0x40046602  # the 32-bit twin: only compat tasks' ioctl knows it
_AT_REMOVEDIR = 0x200
_RENAME_NOREPLACE = 0x1
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_AT_FLAG_ARG = {262: 3, 332: 2, 268: 3, 452: 3, 260: 4, 280: 3, 439: 3, 463: 2, 464: 2,
                465: 2, 466: 2, 468: 4, 469: 4, 265: 4, 322: 4, 428: 2, 303: 4}
_O_ACCMODE, _O_CREAT, _O_EXCL, _O_TRUNC, _O_DIRECTORY = 0o3, 0o100, 0o200, 0o1000, 0o200000
_O_PATH = 0o10000000
_W_OK = 2
_ST_RDONLY, _ST_VALID = 0x1, 0x20  # statfs f_flags: the kernel adds ST_VALID
_PATH_MAX = 4096
_PAGE = os.sysconf("SC_PAGE_SIZE")
_FIRST_READ = 256  # most paths are shorter: read this much first, then whole pages
_AREA = 4 * _PATH_MAX  # two rewritten paths per call (a rename's or a link's), with room
_NEG = 1 << 64
_PROC_LINK = re.compile(r"/proc/(self|thread-self|\d+)(/task/\d+)?/(cwd|exe|root|fd/\d+)")

# stat-family calls naming a file under M are answered at their entry stop from the namespace
# (docs/vfs.md, "Trace mode"): no view file is made, and the identity is the namespace's, so a
# file looks the same before and after its first open, as cp, tar and rsync need. Number -> the
# buffer argument.
_STAT_BUFFER = {4: 1, 5: 1, 6: 1, 262: 2, 332: 4}
_STATX = 332
# AT_SYMLINK_NOFOLLOW, AT_NO_AUTOMOUNT, AT_EMPTY_PATH and AT_STATX_SYNC_TYPE: any other bit
# is EINVAL, and so is a statx asking for both sync types or a reserved mask bit
_STAT_FLAGS = 0x100 | 0x800 | 0x1000 | 0x6000
_STATX_SYNC_TYPE, _STATX_RESERVED = 0x6000, 0x80000000
# struct stat (x86-64): dev, ino, nlink, mode, uid, gid, pad, rdev, size, blksize, blocks,
# then atime, mtime and ctime as (seconds, nanoseconds) pairs, and three reserved words
_STAT = struct.Struct("<QQQIII4xQqqq6q24x")
# struct statx (linux/stat.h, 256 bytes): mask, blksize, attributes, nlink, uid, gid, mode,
# ino, size, blocks, attributes_mask; atime, btime, ctime, mtime (i64 seconds, u32
# nanoseconds, pad); rdev and dev as major and minor; the rest (mount id onwards) left zero
_STATX_STRUCT = struct.Struct("<IIQIIIH2xQQQQ" + "qI4x" * 4 + "IIII112x")
# Every filesystem's statx fills the basic stats, whatever was asked (stx_mask says which);
# btime and the mount id are not known for M and are not claimed
_STATX_BASIC_STATS = 0x7FF
# the attributes the kernel's VFS always says it reports (automount, mount root, DAX)
_STATX_ATTRIBUTES_MASK = 0x1000 | 0x2000 | 0x200000
# One device number for every file under M, the kernel's anonymous major 0 with a minor far
# above the ones it hands out: cp and shutil must never mistake a view file for a host one.
_DEV_MAJOR, _DEV_MINOR = 0, 0xFFFFF

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_libc.ptrace.restype = ctypes.c_long


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_libc.process_vm_readv.argtypes = [ctypes.c_int, ctypes.POINTER(_Iovec), ctypes.c_ulong,
                                   ctypes.POINTER(_Iovec), ctypes.c_ulong, ctypes.c_ulong]
_libc.process_vm_readv.restype = ctypes.c_ssize_t
_libc.process_vm_writev.argtypes = _libc.process_vm_readv.argtypes
_libc.process_vm_writev.restype = ctypes.c_ssize_t


class _Regs(ctypes.Structure):
    """``struct user_regs_struct`` of x86-64 (``<sys/user.h>``)."""

    _fields_ = [(name, ctypes.c_ulonglong) for name in (
        "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags "
        "rsp ss fs_base gs_base ds es fs gs").split()]


_ARGS = ("rdi", "rsi", "rdx", "r10", "r8", "r9")


def _arg(regs: _Regs, index: int) -> int:
    return int(getattr(regs, _ARGS[index]))


def _fd_arg(regs: _Regs, index: int) -> int:
    """An ``int`` argument (a dirfd) as the kernel reads it: the low 32 bits, signed."""
    value = _arg(regs, index) & 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


class _Return(Exception):
    """Skip the call: the tracer answered it, and it returns ``value``."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value


class _Refuse(_Return):
    """Skip the call: it fails with ``err``."""

    def __init__(self, err: int) -> None:
        super().__init__(-err)


def _ptrace(request: int, tid: int, addr: int = 0, data: object = None) -> int:
    result = _libc.ptrace(request, tid, addr, data)
    if result == -1:
        err = ctypes.get_errno()
        if err:
            raise OSError(err, f"ptrace({request:#x}, {tid}): {os.strerror(err)}")
    return int(result)


@dataclass
class _Thread:
    """What the tracer keeps per traced thread."""

    tid: int
    area: int = 0  # the scratch area's address, 0 until the first rewrite
    at_exit: Callable[[int, _Regs], None] | None = None
    restore: dict[str, int] = field(default_factory=dict)  # argument registers to put back


@dataclass
class _Where:
    """One path argument, located: its normalised absolute form and whether it reaches M."""

    text: str  # normalised absolute path
    mount: str | None  # the mount it lies under
    through: bool  # it walked through M (a ``..`` out of it), so the kernel must get ``text``
    slash: bool  # it ended in "/", which the kernel treats as "must be a directory"
    inside: bool = False  # relative to a directory in the view, no "..": fine as it is

    def target(self, view: View) -> str:
        """The path the kernel should resolve instead."""
        real = view.to_view(self.text) if self.mount else self.text
        return real + "/" if self.slash and real != "/" else real


class Tracer:
    """The event loop over every traced thread of one command (module docstring)."""

    def __init__(self, view: View, report: Callable[[str], None]) -> None:
        self.view = view
        self.report = report
        self.threads: dict[int, _Thread] = {}
        self.traps = 0
        self._warned: set[int] = set()
        self._statfs = self._statfs_bytes()
        self._page = ctypes.create_string_buffer(_PAGE)
        self._local = _Iovec(ctypes.addressof(self._page), _PAGE)
        self._remote = _Iovec(0, 0)
        self._uselib = _uselib_implemented()

    # -- the loop --------------------------------------------------------------------------

    def run(self, child: int) -> int:
        """Trace until ``child`` (the command) exits; its wait status."""
        self.threads[child] = _Thread(child)
        while True:
            tid, status = os.waitpid(-1, _WALL)
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                self.threads.pop(tid, None)
                if tid == child:
                    return status
                continue
            if not os.WIFSTOPPED(status):
                continue
            try:
                self._stopped(tid, status)
            except ProcessLookupError:
                self.threads.pop(tid, None)  # killed (SIGKILL) while we looked at it

    def _stopped(self, tid: int, status: int) -> None:
        sig = os.WSTOPSIG(status)
        event = status >> 16
        thread = self.threads.get(tid)
        if thread is None:  # a new child or thread, often seen before its creator's event
            thread = self.threads[tid] = _Thread(tid)
            if event == _EVENT_STOP:
                _ptrace(_PTRACE_CONT, tid)
                return
        if sig == _SYSCALL_EXIT:
            self._exit_stop(thread)
        elif sig == signal.SIGTRAP and event == _EVENT_SECCOMP:
            self.traps += 1
            self._syscall(thread)
        elif sig == signal.SIGTRAP and event in (_EVENT_FORK, _EVENT_VFORK, _EVENT_CLONE):
            new = ctypes.c_ulong()
            _ptrace(_PTRACE_GETEVENTMSG, tid, 0, ctypes.byref(new))
            self.threads.setdefault(new.value, _Thread(new.value))
            _ptrace(_PTRACE_CONT, tid)
        elif sig == signal.SIGTRAP and event == _EVENT_EXEC:
            former = ctypes.c_ulong()
            _ptrace(_PTRACE_GETEVENTMSG, tid, 0, ctypes.byref(former))
            self.threads.pop(former.value, None)
            self.threads[tid] = _Thread(tid)  # a new address space: no scratch area yet
            _ptrace(_PTRACE_CONT, tid)
        elif event == _EVENT_STOP:
            if sig in _GROUP_STOPS:
                _ptrace(_PTRACE_LISTEN, tid)  # stays stopped until SIGCONT, as untraced
            else:
                _ptrace(_PTRACE_CONT, tid)
        else:  # a signal on its way to the thread
            _ptrace(_PTRACE_CONT, tid, 0, sig)

    def _exit_stop(self, thread: _Thread) -> None:
        action, thread.at_exit = thread.at_exit, None
        regs = self._regs(thread.tid)
        if action is not None:
            action(thread.tid, regs)
        for name, value in thread.restore.items():
            setattr(regs, name, value)
        thread.restore.clear()
        _ptrace(_PTRACE_SETREGS, thread.tid, 0, ctypes.byref(regs))
        _ptrace(_PTRACE_CONT, thread.tid)

    # -- one trapped call ------------------------------------------------------------------

    def _syscall(self, thread: _Thread) -> None:
        regs = self._regs(thread.tid)
        nr = int(regs.orig_rax)
        call = TABLE.get(nr)
        try:
            if call is None:
                self._unknown(nr)
            elif call.cls == "P":
                if self._path_call(thread, regs, call):
                    return
            elif call.cls == "F":
                self._fd_call(thread, regs, call)
            elif call.under_m == "translate":  # getcwd
                self._resume_to_exit(thread, self._getcwd_result)
                return
            elif call.under_m == "list":
                if self._listing(thread, regs):
                    return
            elif call.under_m == "identity":  # fstat: the namespace's identity, as newfstatat gives
                where = self._fd_where(thread.tid, _fd_arg(regs, 0))
                if where is not None and where.mount is not None:
                    self._stat_answer(thread.tid, regs, where)
            elif call.under_m != "native":
                raise _Refuse(errno.ENOSYS)
        except _Return as answer:
            regs.orig_rax = _NEG - 1
            regs.rax = answer.value % _NEG
            _ptrace(_PTRACE_SETREGS, thread.tid, 0, ctypes.byref(regs))
        _ptrace(_PTRACE_CONT, thread.tid)

    def _unknown(self, nr: int) -> None:
        if nr not in self._warned:
            self._warned.add(nr)
            limit = f"above {MAX_KNOWN}, " if nr > MAX_KNOWN else ""
            self.report(f"treadle vfs: system call {nr} ({limit}unknown to trace mode) "
                        f"refused with ENOSYS")
        raise _Refuse(errno.ENOSYS)

    def _listing(self, thread: _Thread, regs: _Regs) -> bool:
        """getdents of a directory in the view: write the next entries from the namespace into
        the caller's buffer; True when the call was resumed here (to its exit stop).

        The view holds only the names looked up in it, so a listing makes no placeholders. The
        directory's file position is the namespace's cookie: the call becomes ``lseek`` to the
        cookie after the last entry written, and its exit stop returns the byte count. So
        ``rewinddir``, ``seekdir``, ``dup`` and ``fork`` behave as on a real directory.
        """
        tid, fd = thread.tid, _fd_arg(regs, 0)
        where = self._fd_where(tid, fd)
        if where is None or where.mount is None:
            return False
        state = _fd_state(tid, fd)
        if state is None or state[0] & _O_PATH:
            return False  # the kernel says EBADF
        try:
            attr = self.view.stat(where.text)
            if attr.kind != "dir":
                return False  # the kernel says ENOTDIR
            count = _arg(regs, 2) & 0xFFFFFFFF
            entries = self.view.namespace.listdir(attr.ino, state[1], count // 24 + 1)
        except OSError as e:
            raise _Refuse(e.errno or errno.EIO) from None
        if not entries:
            raise _Return(0)
        data, cookie = _dirents(entries, count, int(regs.orig_rax) == _GETDENTS64)
        if not data:
            raise _Refuse(errno.EINVAL)  # the buffer holds not even one entry
        self._write(tid, _arg(regs, 1), data)
        thread.restore.update(rsi=int(regs.rsi), rdx=int(regs.rdx))
        regs.orig_rax, regs.rsi, regs.rdx = _SYS_LSEEK, cookie, os.SEEK_SET
        _ptrace(_PTRACE_SETREGS, tid, 0, ctypes.byref(regs))

        def written(_tid: int, after: _Regs) -> None:
            if int(after.rax) < _NEG - 4095:
                after.rax = len(data)

        self._resume_to_exit(thread, written)
        return True

    def _resume_to_exit(self, thread: _Thread,
                        action: Callable[[int, _Regs], None] | None) -> None:
        thread.at_exit = action
        _ptrace(_PTRACE_SYSCALL, thread.tid)

    def _path_call(self, thread: _Thread, regs: _Regs, call: Syscall) -> bool:
        """Handle a class-P call; True when it was resumed here (to its exit stop)."""
        if call.nr == _USELIB and not self._uselib:
            raise _Refuse(errno.ENOSYS)  # compiled out: the kernel looks at no path
        places = self._locate_all(thread.tid, regs, call)
        if not places:
            return False
        touched = [(i, w) for i, w in places if w is not None and (w.mount or w.through)]
        if not touched:
            if call.nr in (_READLINK, _READLINKAT):
                return self._readlink(thread, regs, call, places)
            return False
        under = [(i, w) for i, w in touched if w.mount]
        if under:
            if call.nr in _STAT_BUFFER:
                self._stat_answer(thread.tid, regs, under[0][1])
            self._decide(thread, regs, call, places, under)
        rewrites = {i: w.target(self.view) for i, w in touched if not w.inside}
        if not rewrites:
            return False  # the kernel resolves it in the view by itself, now it is made
        self._rewrite(thread, regs, rewrites)
        return True

    def _locate_all(self, tid: int, regs: _Regs, call: Syscall
                    ) -> list[tuple[int, _Where | None]]:
        """Each path argument (index, where it resolves); None for one the kernel will judge."""
        found = []
        for role in call.roles:
            if role[0] != "p":
                continue
            index = int(role[1:])
            dirfd = _dirfd_index(call, index)
            found.append((index, self._locate(tid, regs, call, index, dirfd)))
        return found

    def _locate(self, tid: int, regs: _Regs, call: Syscall, index: int,
                dirfd: int | None) -> _Where | None:
        address = _arg(regs, index)
        if address == 0:
            if call.nr == _UTIMENSAT:  # utimensat(fd, NULL, ...) changes the fd's file
                self._refuse_view_fd(tid, _fd_arg(regs, 0))
            elif call.nr in _STAT_BUFFER:  # newer kernels take NULL for "" with AT_EMPTY_PATH
                return self._empty_path(tid, regs, call, dirfd)
            return None
        raw = self._read_string(tid, address)
        if raw is None:
            return None  # unreadable or too long: the kernel answers EFAULT or ENAMETOOLONG
        if not raw:
            return self._empty_path(tid, regs, call, dirfd)
        text = os.fsdecode(raw)
        if not text.startswith("/"):
            fd = _AT_FDCWD if dirfd is None else _fd_arg(regs, dirfd)
            link = f"/proc/{tid}/cwd" if fd == _AT_FDCWD else f"/proc/{tid}/fd/{fd}"
            try:
                base = os.readlink(link)
            except OSError:
                return None  # a bad dirfd: the kernel says EBADF
            inside = self.view.contains(base) and b".." not in raw
            text = self.view.to_mount(base).rstrip("/") + "/" + text
        else:
            inside = False
        normal, through = self._normalise(text)
        if call.nr not in (_READLINK, _READLINKAT):
            normal = self._unmask(tid, normal)
        mount = self.view.mount_of(normal)
        return _Where(normal, mount, through and not mount, raw.endswith(b"/"),
                      inside and mount is not None)

    def _empty_path(self, tid: int, regs: _Regs, call: Syscall,
                    dirfd: int | None) -> _Where | None:
        """An ``AT_EMPTY_PATH`` call of a kind that acts on its fd's file as on its M path."""
        if call.nr in _AT_FLAG_ARG and dirfd is not None \
                and (call.under_m == "erofs" or call.nr in _XATTR_AT_READS
                     or call.nr in _STAT_BUFFER) \
                and _arg(regs, _AT_FLAG_ARG[call.nr]) & _AT_EMPTY_PATH:
            return self._fd_where(tid, _fd_arg(regs, dirfd))
        return None

    def _fd_where(self, tid: int, fd: int) -> _Where | None:
        """The file an fd (or the working directory) stands for, when it lies in the view: an
        ``AT_EMPTY_PATH`` call acts on it as on its M path."""
        link = f"/proc/{tid}/cwd" if fd == _AT_FDCWD else f"/proc/{tid}/fd/{fd}"
        try:
            real = os.readlink(link)
        except OSError:
            return None  # a bad fd: the kernel says EBADF
        if not self.view.contains(real):
            return None
        path = self.view.to_mount(real)
        return _Where(path, self.view.mount_of(path), False, False, inside=True)

    def _unmask(self, tid: int, path: str) -> str:
        """A path that reaches the view other than through M (the view's own name, or a
        ``/proc`` link to a file in it) stands for the M path: it is just as read-only."""
        target = path
        if _PROC_LINK.fullmatch(path):
            own = path.replace("/proc/thread-self/", f"/proc/{tid}/task/{tid}/", 1)
            try:
                target = os.readlink(own.replace("/proc/self/", f"/proc/{tid}/", 1))
            except OSError:
                return path
        return self.view.to_mount(target) if self.view.contains(target) else path

    def _normalise(self, path: str) -> tuple[str, bool]:
        """``path`` with ``.``, ``..`` and repeated slashes resolved lexically (M has no
        symlinks), and whether the walk passed through M."""
        parts: list[str] = []
        through = False
        dots = ".." in path
        for part in path.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if dots and not through and self.view.mount_of("/" + "/".join(parts)):
                    through = True
                if parts:
                    parts.pop()
                continue
            parts.append(part)
        return "/" + "/".join(parts), through

    def _decide(self, thread: _Thread, regs: _Regs, call: Syscall,
                places: list[tuple[int, _Where | None]], under: list[tuple[int, _Where]]
                ) -> None:
        """Materialise what a call under M needs, or refuse it (raises :class:`_Refuse`)."""
        action = call.under_m
        where = under[0][1]
        if action == "materialise":
            self._open(thread, regs, call, where)
        elif action in ("placeholder", "watch"):
            attr = self._exists(where.text)
            if _wants_write(thread.tid, regs, call):
                raise _Refuse(errno.EROFS)
            if call.nr in _XATTR_READS or call.nr in _XATTR_AT_READS:
                self._xattr_answer(thread.tid, regs, call.nr, attr)
            self._soft(lambda: self.view.placeholder(where.text), attr.kind)
        elif action == "chdir":
            if self._exists(where.text).kind != "dir":
                raise _Refuse(errno.ENOTDIR)
            self._soft(lambda: self.view.placeholder(where.text), "dir")
        elif action == "statfs":
            self._exists(where.text)
            self._write(thread.tid, _arg(regs, 1), self._statfs)
            raise _Return(0)
        elif action == "erofs":
            self._read_only(regs, call, places, under)
        elif action == "eopnotsupp":
            self._exists(where.text)
            raise _Refuse(errno.EOPNOTSUPP)
        else:  # eperm: mounts and administration naming M (a documented gap)
            raise _Refuse(errno.EPERM)

    def _xattr_answer(self, tid: int, regs: _Regs, nr: int, attr: Attr) -> None:
        """Answer getxattr, listxattr and their ``*at`` forms from the namespace, as fuse mode
        does: a view file that is a hard-linked replica carries no xattrs of its own."""
        namespace = self.view.namespace
        at = nr in _XATTR_AT_READS  # one more argument: the AT_* flags after the path
        if _XATTR_READS.get(nr) or _XATTR_AT_READS.get(nr):
            name = self._read_string(tid, _arg(regs, 1 + 2 * at))
            if name is None:
                raise _Refuse(errno.EFAULT)
            if at:
                buffer, size = self._xattr_args(tid, regs)
            else:
                buffer, size = _arg(regs, 2), _arg(regs, 3)
            try:
                value = namespace.getxattr(attr.ino, os.fsdecode(name))
            except OSError as e:
                raise _Refuse(e.errno or errno.EIO) from None
        else:
            value = b"".join(os.fsencode(n) + b"\0" for n in namespace.listxattr(attr.ino))
            buffer, size = _arg(regs, 1 + 2 * at), _arg(regs, 2 + 2 * at)
        if size:
            if size < len(value):
                raise _Refuse(errno.ERANGE)
            self._write(tid, buffer, value)
        raise _Return(len(value))

    def _xattr_args(self, tid: int, regs: _Regs) -> tuple[int, int]:
        """getxattrat's value buffer and size, from its ``struct xattr_args``."""
        if _arg(regs, 5) < _XATTR_ARGS.size:
            raise _Refuse(errno.EINVAL)
        data = self._read(tid, _arg(regs, 4), _XATTR_ARGS.size)
        if data is None:
            raise _Refuse(errno.EFAULT)
        value, size, flags = _XATTR_ARGS.unpack(data)
        if flags:
            raise _Refuse(errno.EINVAL)
        return value, size

    def _open(self, thread: _Thread, regs: _Regs, call: Syscall, where: _Where) -> None:
        flags = _open_flags(thread.tid, regs, call, self._read)
        writes = flags & _O_ACCMODE != 0 or flags & _O_TRUNC or call.write_intent is True
        try:
            attr = self.view.stat(where.text)
        except OSError as e:
            if e.errno == errno.ENOENT and flags & _O_CREAT:
                self._exists(os.path.dirname(where.text))
                raise _Refuse(errno.EROFS) from None
            raise _Refuse(e.errno or errno.EIO) from None
        if flags & _O_CREAT and flags & _O_EXCL:
            raise _Refuse(errno.EEXIST)
        if attr.kind == "dir":
            if writes:
                raise _Refuse(errno.EISDIR)
            self._soft(lambda: self.view.materialise(where.text), "dir")
            return
        if flags & _O_DIRECTORY or where.slash:
            raise _Refuse(errno.ENOTDIR)
        if writes:
            raise _Refuse(errno.EROFS)
        if call.nr in _EXEC_CALLS:  # mode 0444: the kernel refuses with EACCES itself
            self._soft(lambda: self.view.placeholder(where.text), "file")
        else:
            self._soft(lambda: self.view.materialise(where.text), "file")

    def _read_only(self, regs: _Regs, call: Syscall, places: list[tuple[int, _Where | None]],
                   under: list[tuple[int, _Where]]) -> None:
        """The errno a read-only mount gives a change under M (docs/vfs.md), found in the
        order the kernel checks: names first, then the mount."""
        if call.nr in _LINKS:
            self._link(places[0][1], places[-1][1])
        if call.nr in _RENAMES:
            self._rename(regs, call, places[0][1], places[-1][1], len(under) < len(places))
            raise _Refuse(errno.EROFS)  # the mount is checked before the names
        where = under[0][1]
        if call.nr in _CREATES:
            self._exists(os.path.dirname(where.text))
            if self._present(where.text):
                raise _Refuse(errno.EEXIST)
        elif call.nr in _REMOVES and where.text == where.mount:
            # M itself is an entry of a writable host directory, and a mount point
            removedir = call.nr == _RMDIR or (call.nr == _UNLINKAT and _arg(regs, 2) & _AT_REMOVEDIR)
            raise _Refuse(errno.EBUSY if removedir else errno.EISDIR)
        elif call.nr in _REMOVES:
            self._exists(os.path.dirname(where.text))
        elif self._exists(where.text).kind == "dir" and call.nr == _TRUNCATE:
            raise _Refuse(errno.EISDIR)
        raise _Refuse(errno.EROFS)

    def _link(self, old: _Where | None, new: _Where | None) -> None:
        """link and linkat: the old name must exist, the new one must not, then the mounts."""
        if old is not None:
            if old.mount:
                self._exists(old.text)
            else:
                _host_lstat(old.text)
        if new is not None and new.mount:
            self._exists(os.path.dirname(new.text))
            if self._present(new.text):
                raise _Refuse(errno.EEXIST)
            raise _Refuse(errno.EROFS)
        if new is not None and _host_lstat(new.text, missing_ok=True):
            raise _Refuse(errno.EEXIST)
        raise _Refuse(errno.EXDEV)

    def _rename(self, regs: _Regs, call: Syscall, old: _Where | None, new: _Where | None,
                across: bool) -> None:
        """rename of M itself (a mount point in a host directory), or between M and elsewhere."""
        if old is None or old.text != old.mount or new is None:
            if across:
                raise _Refuse(errno.EXDEV)
            return
        if new.mount:
            raise _Refuse(errno.EXDEV)
        found = _host_lstat(new.text, missing_ok=True)
        if found is not None:
            if call.nr == 316 and _arg(regs, 4) & _RENAME_NOREPLACE:
                raise _Refuse(errno.EEXIST)
            if not stat.S_ISDIR(found.st_mode):
                raise _Refuse(errno.ENOTDIR)
        raise _Refuse(errno.EBUSY)

    def _exists(self, path: str) -> Attr:
        """The namespace's attributes of ``path``, or the call fails with its errno."""
        try:
            return self.view.stat(path)
        except OSError as e:
            raise _Refuse(e.errno or errno.EIO) from None

    def _present(self, path: str) -> bool:
        try:
            self.view.stat(path)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                return False
            raise _Refuse(e.errno or errno.EIO) from None
        return True

    def _soft(self, make: Callable[[], object], kind: str) -> None:
        """Materialise; a failure of the namespace becomes the call's errno, and one of the
        view itself (its disk) EIO with a line saying why."""
        try:
            make()
        except OSError as e:
            if e.filename is not None and self.view.contains(os.fsdecode(e.filename)):
                self.report(f"treadle vfs: the view {self.view.root}: {e.strerror}")
                raise _Refuse(errno.EIO) from None
            raise _Refuse(e.errno or errno.EIO) from None

    def _fd_call(self, thread: _Thread, regs: _Regs, call: Syscall) -> None:
        tid, fd = thread.tid, _fd_arg(regs, 0)
        if call.nr == _IOCTL and _arg(regs, 1) & 0xFFFFFFFF == _FS_IOC32_SETFLAGS:
            if self._fd_where(tid, fd) is not None:
                raise _Refuse(errno.ENOTTY)
            return
        if call.nr in (_FTRUNCATE, _FALLOCATE) and _fd_cannot_write(tid, fd):
            return  # the kernel refuses it (EINVAL, EBADF) before it looks at the mount
        if call.write_intent is True or _wants_write(tid, regs, call):
            self._refuse_view_fd(tid, fd)

    def _refuse_view_fd(self, tid: int, fd: int) -> None:
        """EROFS when ``fd`` (or the working directory, for AT_FDCWD) lies in the view."""
        link = f"/proc/{tid}/cwd" if fd == _AT_FDCWD else f"/proc/{tid}/fd/{fd}"
        with contextlib.suppress(OSError):
            if self.view.contains(os.readlink(link)):
                raise _Refuse(errno.EROFS)

    # -- rewriting and translating ---------------------------------------------------------

    def _rewrite(self, thread: _Thread, regs: _Regs, paths: dict[int, str]) -> None:
        """Point the call's path arguments at new strings in the thread's scratch area (a
        readlink's result is translated back at the exit stop)."""
        if not thread.area:
            self._inject_area(thread, regs)
            return
        offset = 0
        for index, text in paths.items():
            data = os.fsencode(text) + b"\0"
            if len(data) > _AREA // 2:
                raise _Refuse(errno.ENAMETOOLONG)
            self._write(thread.tid, thread.area + offset, data)
            name = _ARGS[index]
            thread.restore[name] = int(getattr(regs, name))
            setattr(regs, name, thread.area + offset)
            offset += _AREA // 2
        _ptrace(_PTRACE_SETREGS, thread.tid, 0, ctypes.byref(regs))
        after = self._readlink_result(regs) if int(regs.orig_rax) in (_READLINK, _READLINKAT) \
            else None
        self._resume_to_exit(thread, after)

    def _inject_area(self, thread: _Thread, regs: _Regs) -> None:
        """Make the thread map its scratch area, then run the same call again from scratch."""
        saved = _Regs.from_buffer_copy(regs)
        regs.orig_rax = _SYS_MMAP
        regs.rdi, regs.rsi = 0, _AREA
        regs.rdx = 0x1 | 0x2  # PROT_READ | PROT_WRITE
        regs.r10 = 0x02 | 0x20  # MAP_PRIVATE | MAP_ANONYMOUS
        regs.r8, regs.r9 = _NEG - 1, 0
        _ptrace(_PTRACE_SETREGS, thread.tid, 0, ctypes.byref(regs))

        def mapped(_tid: int, after: _Regs) -> None:
            result = int(after.rax)
            if result >= _NEG - 4095:
                self.report(f"treadle vfs: no scratch memory in process {thread.tid}: "
                            f"{os.strerror(_NEG - result)}")
                saved.orig_rax, saved.rax = _NEG - 1, _NEG - errno.ENOMEM
            else:
                thread.area = result
                saved.rip -= 2  # back onto the syscall instruction: the call traps again
                saved.rax = saved.orig_rax
            ctypes.memmove(ctypes.addressof(after), ctypes.addressof(saved), ctypes.sizeof(saved))

        self._resume_to_exit(thread, mapped)

    def _getcwd_result(self, tid: int, regs: _Regs) -> None:
        length = int(regs.rax)
        if length >= _NEG - 4095 or length == 0:
            return
        data = self._read(tid, int(regs.rdi), length)
        if data is None:
            return
        real = os.fsdecode(data.rstrip(b"\0"))
        if not self.view.contains(real):
            return
        shown = os.fsencode(self.view.to_mount(real)) + b"\0"
        if len(shown) > int(regs.rsi):
            regs.rax = _NEG - errno.ERANGE
            return
        self._write(tid, int(regs.rdi), shown)
        regs.rax = len(shown)

    def _readlink(self, thread: _Thread, regs: _Regs, call: Syscall,
                  places: list[tuple[int, _Where | None]]) -> bool:
        """readlink of a ``/proc`` link: translate a view target back to M at the exit stop."""
        where = places[0][1]
        if where is None or not _PROC_LINK.fullmatch(where.text):
            return False
        self._resume_to_exit(thread, self._readlink_result(regs))
        return True

    def _readlink_result(self, entry: _Regs) -> Callable[[int, _Regs], None]:
        buffer_arg = 1 if int(entry.orig_rax) == _READLINK else 2
        buffer, size = _arg(entry, buffer_arg), _arg(entry, buffer_arg + 1)

        def translate(tid: int, regs: _Regs) -> None:
            length = int(regs.rax)
            if length >= _NEG - 4095 or length == 0:
                return
            data = self._read(tid, buffer, length)
            if data is None or not self.view.contains(os.fsdecode(data)):
                return
            shown = os.fsencode(self.view.to_mount(os.fsdecode(data)))[:size]
            self._write(tid, buffer, shown)
            regs.rax = len(shown)

        return translate

    def _stat_answer(self, tid: int, regs: _Regs, where: _Where) -> None:
        """Answer a stat-family call naming a file under M (or fstat of a view fd) at its entry
        stop, from the namespace alone: fuse mode's values written into the caller's buffer,
        and the call skipped (raises :class:`_Return` or :class:`_Refuse`).

        No view file is made, so ``find -printf %s`` or ``ls -l`` over a large directory costs
        one stop per entry, not a file per entry. The errors come in the kernel's order: the
        flags, then the name, then the buffer.
        """
        nr = int(regs.orig_rax)
        flags = _arg(regs, _AT_FLAG_ARG[nr]) & 0xFFFFFFFF if nr in _AT_FLAG_ARG else 0
        if flags & ~_STAT_FLAGS or nr == _STATX and (
                flags & _STATX_SYNC_TYPE == _STATX_SYNC_TYPE
                or _arg(regs, 3) & 0xFFFFFFFF & _STATX_RESERVED):
            raise _Refuse(errno.EINVAL)
        attr = self._exists(where.text)
        if where.slash and attr.kind != "dir":
            raise _Refuse(errno.ENOTDIR)
        mtime = max(attr.mtime, 0.0)  # before 1970 counts as 1970, as in fuse mode
        seconds = int(mtime)
        nanos = min(int(round((mtime - seconds) * 1e9)), 999_999_999)
        blocks = (attr.size + 511) // 512
        uid, gid = os.geteuid(), os.getegid()  # fuse mode's owner: the one who runs treadle
        if nr == _STATX:
            data = _STATX_STRUCT.pack(
                _STATX_BASIC_STATS, _PAGE, 0, attr.nlink, uid, gid, attr.mode, attr.ino,
                attr.size, blocks, _STATX_ATTRIBUTES_MASK, seconds, nanos, 0, 0, seconds,
                nanos, seconds, nanos, 0, 0, _DEV_MAJOR, _DEV_MINOR)
        else:
            data = _STAT.pack(os.makedev(_DEV_MAJOR, _DEV_MINOR), attr.ino, attr.nlink,
                              attr.mode, uid, gid, 0, attr.size, _PAGE, blocks,
                              *(seconds, nanos) * 3)
        self._write(tid, _arg(regs, _STAT_BUFFER[nr]), data)
        raise _Return(0)

    # -- memory and registers --------------------------------------------------------------

    def _regs(self, tid: int) -> _Regs:
        regs = _Regs()
        _ptrace(_PTRACE_GETREGS, tid, 0, ctypes.byref(regs))
        return regs

    def _read(self, tid: int, address: int, size: int) -> bytes | None:
        """``size`` bytes of the thread's memory, or None when they cannot all be read."""
        if size > _PAGE:
            buf = ctypes.create_string_buffer(size)
            local = _Iovec(ctypes.addressof(buf), size)
        else:  # the common case reuses one buffer: a stop costs tens of microseconds
            buf, local = self._page, self._local
            local.len = size
        remote = self._remote
        remote.base, remote.len = address, size
        got = _libc.process_vm_readv(tid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        return ctypes.string_at(buf, size) if got == size else None

    def _read_string(self, tid: int, address: int) -> bytes | None:
        """A NUL-terminated string, read in pieces that never cross into the next page (it may
        be unmapped); None when unreadable or longer than PATH_MAX."""
        data = b""
        piece = _FIRST_READ
        while len(data) <= _PATH_MAX:
            size = min(piece, _PAGE - (address % _PAGE))
            chunk = self._read(tid, address, size)
            if chunk is None:
                return None
            end = chunk.find(b"\0")
            if end >= 0:
                return data + chunk[:end]
            data += chunk
            address += size
            piece = _PAGE
        return None

    def _write(self, tid: int, address: int, data: bytes) -> None:
        buf = ctypes.create_string_buffer(data, len(data))
        local = _Iovec(ctypes.cast(buf, ctypes.c_void_p), len(data))
        remote = _Iovec(address, len(data))
        if _libc.process_vm_writev(tid, ctypes.byref(local), 1, ctypes.byref(remote), 1,
                                   0) != len(data):
            raise _Refuse(errno.EFAULT)

    def _statfs_bytes(self) -> bytes:
        """``struct statfs`` (x86-64) with the values fuse mode reports."""
        values = self.view.namespace.statfs()
        return struct.pack(
            "<qqQQQQQiiqqq4q", values.get("f_type", 0x65735546), values.get("f_bsize", 4096),
            values.get("f_blocks", 0), values.get("f_bfree", 0), values.get("f_bavail", 0),
            values.get("f_files", 0), values.get("f_ffree", 0), 0, 0,
            values.get("f_namemax", 255), values.get("f_frsize", 4096),
            values.get("f_flag", 0) | _ST_RDONLY | _ST_VALID, 0, 0, 0, 0)


def _host_lstat(path: str, *, missing_ok: bool = False) -> os.stat_result | None:
    """``lstat`` of a path outside M, whose errno the call fails with (None: absent, allowed)."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        if missing_ok and os.path.isdir(os.path.dirname(path)):
            return None
        raise _Refuse(errno.ENOENT) from None
    except OSError as e:
        raise _Refuse(e.errno or errno.EIO) from None


def _fd_state(tid: int, fd: int) -> tuple[int, int] | None:
    """A thread's fd: its open flags and file position (from ``/proc``), None when closed."""
    try:
        with open(f"/proc/{tid}/fdinfo/{fd}", "rb") as info:
            fields = dict(line.split(b":", 1) for line in info.read().splitlines()[:2])
        return int(fields[b"flags"], 8), int(fields[b"pos"])
    except (OSError, ValueError, KeyError):
        return None


def _fd_cannot_write(tid: int, fd: int) -> bool:
    """Whether a thread's fd was opened without write access."""
    state = _fd_state(tid, fd)
    return state is not None and (state[0] & _O_ACCMODE == os.O_RDONLY or bool(state[0] & _O_PATH))


def _dirents(entries: list[tuple[str, Attr, int]], count: int, wide: bool) -> tuple[bytes, int]:
    """As many entries as ``count`` bytes hold, as ``getdents64`` (``wide``) or ``getdents``
    lays them out, and the cookie after the last one."""
    out = bytearray()
    cookie = 0
    for name, attr, after in entries:
        raw = os.fsencode(name)
        kind = _DT_DIR if attr.kind == "dir" else _DT_REG
        if wide:
            size = (_DIRENT64.size + len(raw) + 1 + 7) & ~7
            record = _DIRENT64.pack(attr.ino, after, size, kind) + raw
            record += bytes(size - len(record))
        else:
            size = (_DIRENT.size + len(raw) + 2 + 7) & ~7
            record = _DIRENT.pack(attr.ino, after, size) + raw
            record += bytes(size - len(record) - 1) + bytes((kind,))
        if len(out) + size > count:
            break
        out += record
        cookie = after
    return bytes(out), cookie


def _uselib_implemented() -> bool:
    """Whether this kernel has ``uselib`` (mostly compiled out: then ENOSYS, whatever the path)."""
    _libc.syscall.restype = ctypes.c_long
    ctypes.set_errno(0)
    _libc.syscall(ctypes.c_long(_USELIB), ctypes.c_long(0))
    return ctypes.get_errno() != errno.ENOSYS


def _dirfd_index(call: Syscall, path_index: int) -> int | None:
    """The argument holding the dirfd that path argument ``path_index`` is relative to."""
    roles = call.roles
    position = roles.index(f"p{path_index}")
    if position and roles[position - 1][0] == "d":
        return int(roles[position - 1][1:])
    return None


def _last_path(call: Syscall) -> int:
    return max(int(r[1:]) for r in call.roles if r[0] == "p")


def _wants_write(tid: int, regs: _Regs, call: Syscall) -> bool:
    """Whether a call whose arguments decide (docs/vfs.md) asks to write."""
    rule = call.write_intent
    if not isinstance(rule, str):
        return bool(rule)
    kind, _, index = rule.partition(":")
    value = _arg(regs, int(index))
    if kind == "mode":
        return bool(value & _W_OK)
    if kind == "request":
        return True  # only the mutating ioctl requests trap
    return bool(value & _O_ACCMODE or value & _O_TRUNC)


def _open_flags(tid: int, regs: _Regs, call: Syscall,
                read: Callable[[int, int, int], bytes | None]) -> int:
    rule = call.write_intent
    if not isinstance(rule, str):
        return _O_CREAT | _O_TRUNC | os.O_WRONLY if rule else 0
    kind, _, index = rule.partition(":")
    if kind == "how":  # openat2: struct open_how starts with the u64 flags
        data = read(tid, _arg(regs, int(index)), 8)
        if data is None:
            raise _Refuse(errno.EFAULT)
        return int(struct.unpack("<Q", data)[0])
    return _arg(regs, int(index))


# -- running a command -----------------------------------------------------------------------

def trace_available() -> tuple[bool, str]:
    """Whether trace mode works here, and why (for ``treadle vfs doctor`` and ``auto``).

    Tries it: a child installs the real filter under ``PTRACE_SEIZE`` and makes one trapped
    call, which must reach this process as a seccomp stop.
    """
    if platform.machine() != "x86_64":
        return False, f"trace mode needs x86-64, this is {platform.machine()}"
    with contextlib.suppress(OSError):
        if "trace" not in Path("/proc/sys/kernel/seccomp/actions_avail").read_text().split():
            return False, "the kernel's seccomp lacks the TRACE action"
    program = bpf.build_filter(TABLE)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(ready_w)
        os.read(ready_r, 1)
        try:
            bpf.install(program)
        except OSError:
            os._exit(3)
        os.getcwd()
        os._exit(0)
    os.close(ready_r)
    try:
        try:
            _ptrace(_PTRACE_SEIZE, pid, 0, _OPTIONS)
        except OSError as e:
            return False, f"ptrace refused ({e.strerror}: Yama's ptrace_scope, or a container)"
        os.write(ready_w, b"x")
        _, status = os.waitpid(pid, _WALL)
        if os.WIFEXITED(status):
            return False, "a seccomp filter could not be installed"
        if os.WIFSTOPPED(status) and status >> 16 == _EVENT_SECCOMP:
            return True, "ptrace and seccomp filters with the TRACE action work"
        return False, f"unexpected trial stop (wait status {status:#x})"
    finally:
        os.close(ready_w)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, _WALL)


def run_trace(namespace: Namespace, cache: Cache, argv: list[str], env: dict[str, str], *,
              report: Callable[[str], None]) -> int:
    """Run ``argv`` under the tracer with M's tree in a per-run view; the command's status.

    Exit status follows :mod:`treadle.vfs.process`. A failure of the tracer itself kills the
    command (``EXITKILL``, then every leftover) and raises VfsError (exit 125).
    """
    if platform.machine() != "x86_64":
        raise VfsError(f"trace mode needs x86-64, this is {platform.machine()}")
    program = bpf.build_filter(TABLE)
    root = cache.view_dir(f"{os.getpid()}-{secrets.token_hex(4)}")
    view = View(namespace, cache, root)
    process.become_subreaper()
    ready_r, ready_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child; it only ever leaves by exec or _exit
        try:
            os.close(ready_w)
            if os.read(ready_r, 1) != b"x":
                os._exit(125)
            os.close(ready_r)
            bpf.install(program)
        except BaseException as exc:  # noqa: BLE001 - a forked child must reach os._exit
            with contextlib.suppress(OSError):
                os.write(2, f"treadle vfs: cannot start traced: {exc}\n".encode())
            os._exit(125)
        process.exec_child(argv, env)
    os.close(ready_r)
    tracer = Tracer(view, report)
    try:
        try:
            _ptrace(_PTRACE_SEIZE, child, 0, _OPTIONS)
        except OSError as e:  # the child sees the pipe close unwritten and exits untraced
            raise VfsError(f"trace mode: cannot trace the command: {e.strerror}") from None
        else:
            os.write(ready_w, b"x")
        finally:
            os.close(ready_w)
        with process.SignalForwarder(child):
            status = tracer.run(child)
        return process.exit_status(status)
    except VfsError:
        raise
    except Exception as exc:
        raise VfsError(f"trace mode: the tracer failed: {exc!r}") from exc
    finally:
        process.kill_leftovers()
        view.remove()
        namespace.stats["traps"] = namespace.stats.get("traps", 0) + tracer.traps
