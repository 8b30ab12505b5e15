"""Every x86-64 system call number up to ``MAX_KNOWN``, and what trace mode does with it.

Trace mode is sound only if each call that names a file by path reaches the tracer and
each call it does not understand fails (docs/vfs.md, "Trace mode"). That argument rests
on this table being complete, so it is plain data that a test checks number by number
against the system headers, libseccomp and the running kernel, and that
:mod:`treadle.vfs.bpf` compiles into the seccomp filter.

Classes:

* ``P``: takes a path. Argument roles say where: ``pN`` a path the kernel resolves, ``dN``
  the directory fd it is relative to, ``tN`` stored text (a symlink target, never resolved).
* ``F``: mutates through an fd (``fN``); refused when the fd lies in the view.
* ``I``: an indirect path carrier: refused (ENOSYS) or, where paths never reach M, native.
* ``O``: output that reveals paths (translated) or an obsolete path leak (ENOSYS).
* ``A``: path-free, on the filter's allow-list, runs natively.
* ``X``: obsolete or unassigned on x86-64: the filter answers ENOSYS.

``write_intent`` is ``True`` for calls that always change something, ``False`` for pure
reads, and for calls whose arguments decide, a rule ``"KIND:N"`` naming argument ``N``:
``flags:N`` open flags, ``how:N`` a ``struct open_how`` (flags first), ``mode:N`` an
access mode (``W_OK``), ``request:N`` an ioctl request (see ``TRAPPED_IOCTLS``).

``under_m`` names the tracer's action for a call that resolves under M: ``materialise``
(the verified object, then run), ``placeholder`` (a metadata stand-in, then run),
``statfs`` (answered with fuse mode's values), ``chdir``, ``watch`` (rewritten into the
view), ``erofs``, ``eopnotsupp``, ``eperm``, ``translate`` (results mapped back to M),
``list`` (a view directory's entries written from the namespace), ``identity`` (a view
fd's stat result given the namespace's identity), ``enosys``, ``native``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The highest number classified. Numbers above it trap and get ENOSYS with a warning.
MAX_KNOWN = 469

#: ioctl requests that change a file through its fd (``linux/fs.h``): they trap, every
#: other request runs natively.
TRAPPED_IOCTLS: dict[int, str] = {
    0x40086602: "FS_IOC_SETFLAGS",
    0x40046602: "FS_IOC32_SETFLAGS",
    0x401C5820: "FS_IOC_FSSETXATTR",
}

CLASSES = ("P", "F", "I", "O", "A", "X")


@dataclass(frozen=True)
class Syscall:
    """One x86-64 system call number and how trace mode treats it (module docstring)."""

    nr: int
    name: str
    roles: tuple[str, ...]
    cls: str
    write_intent: bool | str
    under_m: str


# Names by number, from unistd_64.h (0..450) and the kernel's syscall_64.tbl (451..469).
# An empty name is a number x86-64 never assigned.
_NAMED: dict[int, str] = dict(enumerate((
    "read write open close stat fstat lstat poll lseek mmap mprotect munmap brk rt_sigaction "
    "rt_sigprocmask rt_sigreturn ioctl pread64 pwrite64 readv writev access pipe select "
    "sched_yield mremap msync mincore madvise shmget shmat shmctl dup dup2 pause nanosleep "
    "getitimer alarm setitimer getpid sendfile socket connect accept sendto recvfrom sendmsg "
    "recvmsg shutdown bind listen getsockname getpeername socketpair setsockopt getsockopt "
    "clone fork vfork execve exit wait4 kill uname semget semop semctl shmdt msgget msgsnd "
    "msgrcv msgctl fcntl flock fsync fdatasync truncate ftruncate getdents getcwd chdir "
    "fchdir rename mkdir rmdir creat link unlink symlink readlink chmod fchmod chown fchown "
    "lchown umask gettimeofday getrlimit getrusage sysinfo times ptrace getuid syslog getgid "
    "setuid setgid geteuid getegid setpgid getppid getpgrp setsid setreuid setregid "
    "getgroups setgroups setresuid getresuid setresgid getresgid getpgid setfsuid setfsgid "
    "getsid capget capset rt_sigpending rt_sigtimedwait rt_sigqueueinfo rt_sigsuspend "
    "sigaltstack utime mknod uselib personality ustat statfs fstatfs sysfs getpriority "
    "setpriority sched_setparam sched_getparam sched_setscheduler sched_getscheduler "
    "sched_get_priority_max sched_get_priority_min sched_rr_get_interval mlock munlock "
    "mlockall munlockall vhangup modify_ldt pivot_root _sysctl prctl arch_prctl adjtimex "
    "setrlimit chroot sync acct settimeofday mount umount2 swapon swapoff reboot sethostname "
    "setdomainname iopl ioperm create_module init_module delete_module get_kernel_syms "
    "query_module quotactl nfsservctl getpmsg putpmsg afs_syscall tuxcall security gettid "
    "readahead setxattr lsetxattr fsetxattr getxattr lgetxattr fgetxattr listxattr "
    "llistxattr flistxattr removexattr lremovexattr fremovexattr tkill time futex "
    "sched_setaffinity sched_getaffinity set_thread_area io_setup io_destroy io_getevents "
    "io_submit io_cancel get_thread_area lookup_dcookie epoll_create epoll_ctl_old "
    "epoll_wait_old remap_file_pages getdents64 set_tid_address restart_syscall semtimedop "
    "fadvise64 timer_create timer_settime timer_gettime timer_getoverrun timer_delete "
    "clock_settime clock_gettime clock_getres clock_nanosleep exit_group epoll_wait "
    "epoll_ctl tgkill utimes vserver mbind set_mempolicy get_mempolicy mq_open mq_unlink "
    "mq_timedsend mq_timedreceive mq_notify mq_getsetattr kexec_load waitid add_key "
    "request_key keyctl ioprio_set ioprio_get inotify_init inotify_add_watch "
    "inotify_rm_watch migrate_pages openat mkdirat mknodat fchownat futimesat newfstatat "
    "unlinkat renameat linkat symlinkat readlinkat fchmodat faccessat pselect6 ppoll "
    "unshare set_robust_list get_robust_list splice tee sync_file_range vmsplice "
    "move_pages utimensat epoll_pwait signalfd timerfd_create eventfd fallocate "
    "timerfd_settime timerfd_gettime accept4 signalfd4 eventfd2 epoll_create1 dup3 pipe2 "
    "inotify_init1 preadv pwritev rt_tgsigqueueinfo perf_event_open recvmmsg fanotify_init "
    "fanotify_mark prlimit64 name_to_handle_at open_by_handle_at clock_adjtime syncfs "
    "sendmmsg setns getcpu process_vm_readv process_vm_writev kcmp finit_module "
    "sched_setattr sched_getattr renameat2 seccomp getrandom memfd_create kexec_file_load "
    "bpf execveat userfaultfd membarrier mlock2 copy_file_range preadv2 pwritev2 "
    "pkey_mprotect pkey_alloc pkey_free statx io_pgetevents rseq"
).split()))
# 335 and 336 are newer than the 6.1 header: both exist only to return from or enter a
# uprobe trampoline, name nothing, and the kernel itself lets them past seccomp.
_NAMED.update({335: "uretprobe", 336: "uprobe"})
_NAMED.update(enumerate((
    "pidfd_send_signal io_uring_setup io_uring_enter io_uring_register open_tree move_mount "
    "fsopen fsconfig fsmount fspick pidfd_open clone3 close_range openat2 pidfd_getfd "
    "faccessat2 process_madvise epoll_pwait2 mount_setattr quotactl_fd "
    "landlock_create_ruleset landlock_add_rule landlock_restrict_self memfd_secret "
    "process_mrelease futex_waitv set_mempolicy_home_node cachestat fchmodat2 "
    "map_shadow_stack futex_wake futex_wait futex_requeue statmount listmount "
    "lsm_get_self_attr lsm_set_self_attr lsm_list_modules mseal setxattrat getxattrat "
    "listxattrat removexattrat open_tree_attr file_getattr file_setattr"
).split(), start=424))

# Class P: number -> (roles, write intent, action under M). docs/vfs.md lists the same.
_PATH: dict[int, tuple[str, bool | str, str]] = {
    # open, execute
    2: ("p0", "flags:1", "materialise"),
    85: ("p0", True, "materialise"),
    257: ("d0 p1", "flags:2", "materialise"),
    437: ("d0 p1", "how:2", "materialise"),
    59: ("p0", False, "materialise"),
    322: ("d0 p1", False, "materialise"),
    134: ("p0", False, "materialise"),
    # metadata reads
    4: ("p0", False, "placeholder"),
    6: ("p0", False, "placeholder"),
    262: ("d0 p1", False, "placeholder"),
    332: ("d0 p1", False, "placeholder"),
    137: ("p0", False, "statfs"),
    21: ("p0", "mode:1", "placeholder"),
    269: ("d0 p1", "mode:2", "placeholder"),
    439: ("d0 p1", "mode:2", "placeholder"),
    89: ("p0", False, "placeholder"),
    267: ("d0 p1", False, "placeholder"),
    191: ("p0", False, "placeholder"),
    192: ("p0", False, "placeholder"),
    194: ("p0", False, "placeholder"),
    195: ("p0", False, "placeholder"),
    464: ("d0 p1", False, "placeholder"),
    465: ("d0 p1", False, "placeholder"),
    468: ("d0 p1", False, "eopnotsupp"),
    # working directory
    80: ("p0", False, "chdir"),
    # namespace changes
    82: ("p0 p1", True, "erofs"),
    264: ("d0 p1 d2 p3", True, "erofs"),
    316: ("d0 p1 d2 p3", True, "erofs"),
    83: ("p0", True, "erofs"),
    258: ("d0 p1", True, "erofs"),
    84: ("p0", True, "erofs"),
    86: ("p0 p1", True, "erofs"),
    265: ("d0 p1 d2 p3", True, "erofs"),
    87: ("p0", True, "erofs"),
    263: ("d0 p1", True, "erofs"),
    88: ("t0 p1", True, "erofs"),
    266: ("t0 d1 p2", True, "erofs"),
    133: ("p0", True, "erofs"),
    259: ("d0 p1", True, "erofs"),
    76: ("p0", True, "erofs"),
    # metadata writes (utimensat: a NULL path means the fd itself)
    90: ("p0", True, "erofs"),
    268: ("d0 p1", True, "erofs"),
    452: ("d0 p1", True, "erofs"),
    92: ("p0", True, "erofs"),
    94: ("p0", True, "erofs"),
    260: ("d0 p1", True, "erofs"),
    132: ("p0", True, "erofs"),
    235: ("p0", True, "erofs"),
    261: ("d0 p1", True, "erofs"),
    280: ("d0 p1", True, "erofs"),
    188: ("p0", True, "erofs"),
    189: ("p0", True, "erofs"),
    197: ("p0", True, "erofs"),
    198: ("p0", True, "erofs"),
    463: ("d0 p1", True, "erofs"),
    466: ("d0 p1", True, "erofs"),
    469: ("d0 p1", True, "erofs"),
    # watches, handles
    254: ("p1", False, "watch"),
    301: ("d3 p4", False, "watch"),
    303: ("d0 p1", False, "placeholder"),
    # mounts, administration (mount's data and quotactl's addr may also hold paths)
    155: ("p0 p1", True, "eperm"),
    161: ("p0", False, "eperm"),
    163: ("p0", True, "eperm"),
    165: ("p0 p1", True, "eperm"),
    166: ("p0", True, "eperm"),
    167: ("p0", True, "eperm"),
    168: ("p0", True, "eperm"),
    179: ("p1", True, "eperm"),
    428: ("d0 p1", False, "eperm"),
    429: ("d0 p1 d2 p3", True, "eperm"),
    431: ("p3 d4", True, "eperm"),
    433: ("d0 p1", False, "eperm"),
    442: ("d0 p1", True, "eperm"),
    467: ("d0 p1", False, "eperm"),
}

# Class F: fd-based mutators. ioctl traps only for the requests in TRAPPED_IOCTLS.
_FD: dict[int, bool | str] = {
    91: True, 93: True, 190: True, 199: True, 77: True, 285: True, 16: "request:1",
}

# Class I: io_uring and handles reach paths the tracer cannot see, so they are refused;
# bpf's pinned paths live on bpffs and AF_UNIX socket paths are not files under M, so
# those run natively.
_INDIRECT: dict[int, str] = {
    425: "enosys", 426: "enosys", 427: "enosys", 304: "enosys",
    321: "native", 42: "native", 49: "native", 44: "native", 46: "native", 307: "native",
}

# Class O: getcwd reports the view's path unless translated; a listing of a directory in
# the view comes from the namespace (the view holds only what was looked up); fstat of a view
# fd reports the namespace's identity, as the stat calls do (glibc uses newfstatat, Go and
# musl call fstat itself); lookup_dcookie is refused.
_OUTPUT: dict[int, str] = {79: "translate", 78: "list", 217: "list", 5: "identity", 212: "enosys"}

# Assigned numbers that x86-64 no longer implements (the kernel answers ENOSYS itself).
_OBSOLETE = frozenset({
    156, 174, 177, 178, 180, 181, 182, 183, 184, 185, 205, 211, 214, 215, 236,
})


def _build() -> dict[int, Syscall]:
    table: dict[int, Syscall] = {}
    for nr in range(MAX_KNOWN + 1):
        name = _NAMED.get(nr, "")
        if nr in _PATH:
            roles, intent, action = _PATH[nr]
            table[nr] = Syscall(nr, name, tuple(roles.split()), "P", intent, action)
        elif nr in _FD:
            table[nr] = Syscall(nr, name, ("f0",), "F", _FD[nr], "erofs")
        elif nr in _INDIRECT:
            table[nr] = Syscall(nr, name, (), "I", False, _INDIRECT[nr])
        elif nr in _OUTPUT:
            table[nr] = Syscall(nr, name, (), "O", False, _OUTPUT[nr])
        elif nr in _OBSOLETE or not name:
            table[nr] = Syscall(nr, name, (), "X", False, "enosys")
        else:
            table[nr] = Syscall(nr, name, (), "A", False, "native")
    return table


#: Number -> entry, for every number from 0 to MAX_KNOWN.
TABLE: dict[int, Syscall] = _build()

_BY_NAME = {s.name: s for s in TABLE.values() if s.name}


def by_name(name: str) -> Syscall:
    """The entry of a named call (``KeyError`` for a name x86-64 does not have)."""
    return _BY_NAME[name]
