"""The run's mount points: a private mount namespace, and FUSE mounted at each mount point in it.

Mode fuse mounts inside a mount namespace of the run's own, so the mounts die with it and a
crashed run leaves nothing on the host (docs/vfs.md, "Fuse mode"). Mount points missing on the
host are made inside that namespace only, over a tmpfs, as bubblewrap does. The FUSE daemon
itself lives in ``fusemode``; this module only gives it its mount points.

System interfaces are ctypes over libc (``unshare``, ``mount``, ``open_tree``, ...): nothing
compiled.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
from collections.abc import Iterable

from treadle.errors import VfsError

# --- Kernel constants (linux/sched.h, linux/mount.h) ----------------------------------------
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

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    """``result`` of a libc call, or OSError with errno and ``what`` when it is negative."""
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    """``mount(2)``; OSError when the kernel refuses."""
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


def enter_private_namespace() -> None:
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
    mount("none", "/", None, MS_REC | MS_PRIVATE, None)


def targets(mounts: Iterable[str]) -> list[str]:
    """Where to bind a directory of the FUSE tree: each mount point, or, when it is missing on
    the host, its first missing ancestor (a synthetic directory of the namespace's tree)."""
    found: list[str] = []
    for point in mounts:
        target = point
        while not os.path.lexists(os.path.dirname(target)):
            target = os.path.dirname(target)
        if os.path.lexists(target) and not os.path.isdir(target):
            raise VfsError(f"mount point {target} exists and is not a directory")
        if target not in found:
            found.append(target)
    return found


class Synthetic:
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
        mount("none", parent, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, None)

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


# --- The FUSE mount ------------------------------------------------------------------------


def mount_fuse(dev: int, where: str) -> None:
    """Mount the FUSE connection ``dev`` at ``where`` (docs/vfs.md).

    ``default_permissions`` lets the kernel check the modes itself (no ACCESS round trips);
    ``allow_other`` because only the run's own processes can reach a mount in its private
    namespace, and a command that changes uid (``runuser``, a job dropping root) must still read.
    """
    options = (f"fd={dev},rootmode=40000,user_id={os.geteuid()},group_id={os.getegid()},"
               "default_permissions,allow_other")
    mount("treadle", where, "fuse.treadle", MS_RDONLY | MS_NOSUID | MS_NODEV, options)


def bind_targets(found: list[str]) -> None:
    """Bind, onto each target, its directory of the FUSE tree mounted at the first target.

    Clones of the subtrees are taken, the mount itself is detached, and the clones are moved
    into place. Paths are walked through the FUSE tree here, so the daemon must already be
    serving: call it from a thread.
    """
    first = found[0]
    trees = []
    try:
        for target in found:
            trees.append(_open_tree(AT_FDCWD, first + target, OPEN_TREE_CLONE))
        _check(_libc.umount2(os.fsencode(first), ctypes.c_int(MNT_DETACH)), f"umount {first}")
        for tree, target in zip(trees, found, strict=True):
            _move_mount(tree, AT_FDCWD, target)
    finally:
        for tree in trees:
            os.close(tree)


def unmount(found: list[str]) -> None:
    """Detach the mounts at ``found``, last first; one already gone is no error."""
    for target in reversed(found):
        _libc.umount2(os.fsencode(target), ctypes.c_int(MNT_DETACH))
