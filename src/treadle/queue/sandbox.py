"""The worker's files: workspace, cache and per-task sandboxes, laid out as the reference worker's.

Plain synchronous file operations, standard library only (Python 3.8), so the
worker can call them directly or from a thread. Every path a manager names is
checked here before anything is created, moved or deleted: cache names are single
components (the protocol module already refuses others), sandbox names must stay
inside the sandbox, and no operation follows a symlink out of the place it works in:
paths are walked one component at a time relative to directory descriptors
(:func:`resolve_beneath`), because a task, or a directory input holding a symlink,
can put symlinks anywhere in its sandbox.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import secrets
import shutil
import stat

from .protocol import is_component, is_safe_relative_path


class SandboxError(Exception):
    """A task's sandbox could not be set up (reported to the manager as INPUT_MISSING)."""


_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_NOFOLLOW
MAX_LINKS = 40  # symlinks followed in one walk: the kernel's own limit before ELOOP


def _components(path: str) -> list:
    return [c for c in path.split("/") if c not in ("", ".")]


def _below(target: str, roots: set, rel: str) -> str:
    """Absolute symlink target ``target`` as a path relative to the root it names."""
    for root in roots:
        if target == root or target.startswith(root.rstrip("/") + "/"):
            return target[len(root):]
    raise OSError(errno.EXDEV, "a symlink leads outside", rel)


def resolve_beneath(root: str, rel: str, make_dirs: bool = False,
                    follow_last: bool = True) -> tuple:
    """``(dir_fd, name)``: where path ``rel`` lies under directory ``root``, never outside it.

    What ``openat2``'s RESOLVE_BENEATH does, in Python 3.8 on any kernel: each
    component is looked up relative to the descriptor of the directory before it,
    without following symlinks; a symlink's target is read and walked the same way;
    ``..`` returns to a directory this walk opened (never above ``root``); an absolute
    target counts only when it names a place in ``root``. A symlink planted by a
    task, or sent inside a directory input, so cannot lead a worker's operation
    outside: the walk fails with EXDEV instead, and a directory swapped for a
    symlink meanwhile fails with ELOOP. ``make_dirs`` creates missing directories
    on the way (not ``name``).

    ``name`` is the last component, which need not exist; it is not a symlink when
    ``follow_last``, and ``"."`` when ``rel`` ends at ``dir_fd`` itself. The caller
    closes ``dir_fd``.
    """
    roots = {os.path.abspath(root), os.path.realpath(root)}
    # ``root`` itself must not be a symlink either: a task could swap a sandbox for one
    stack = [os.open(root, _DIR_FLAGS)]  # the directories walked into
    todo = _components(rel)[::-1]
    links = 0
    try:
        while todo:
            name = todo.pop()
            if name == "..":
                if len(stack) == 1:
                    raise OSError(errno.EXDEV, "the path leads outside", rel)
                os.close(stack.pop())
                continue
            try:
                st = os.stat(name, dir_fd=stack[-1], follow_symlinks=False)
            except FileNotFoundError:
                if not todo:
                    return stack.pop(), name
                if not make_dirs:
                    raise
                os.mkdir(name, 0o755, dir_fd=stack[-1])
                stack.append(os.open(name, _DIR_FLAGS, dir_fd=stack[-1]))
                continue
            if stat.S_ISLNK(st.st_mode) and (todo or follow_last):
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, "too many symlinks", rel)
                target = os.readlink(name, dir_fd=stack[-1])
                if target.startswith("/"):
                    target = _below(target, roots, rel)
                    while len(stack) > 1:
                        os.close(stack.pop())
                todo.extend(_components(target)[::-1])
            elif not todo:
                return stack.pop(), name
            else:
                stack.append(os.open(name, _DIR_FLAGS, dir_fd=stack[-1]))
        return stack.pop(), "."
    finally:
        for fd in stack:
            os.close(fd)


def open_beneath(root: str, rel: str, follow: bool = True) -> int:
    """A read-only descriptor of ``rel`` under ``root`` (see :func:`resolve_beneath`).

    ``follow=False`` refuses a final symlink (ELOOP). Opened non-blocking, so a FIFO
    planted where a file was expected cannot stall the worker; the caller checks
    the type with ``os.fstat``.
    """
    dir_fd, name = resolve_beneath(root, rel, follow_last=follow)
    try:
        return os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def open_regular(root: str, rel: str, follow: bool = True) -> tuple:
    """``(fd, size)`` of regular file ``rel`` under ``root`` (see :func:`open_beneath`),
    or ``(-1, 0)`` if there is none there. The caller closes ``fd``."""
    try:
        fd = open_beneath(root, rel, follow)
    except OSError:
        return -1, 0
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        return fd, st.st_size
    os.close(fd)
    return -1, 0


def remove_at(dir_fd: int | None, name: str) -> None:
    """Delete entry ``name`` of directory ``dir_fd`` (path ``name`` if None), a whole
    tree for a directory, never following a symlink; a missing entry is fine."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        for entry in os.listdir(fd):
            remove_at(fd, entry)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def workspace_parent(option: str | None = None) -> str:
    """The first of -s, $_CONDOR_SCRATCH_DIR, $TMPDIR, $TEMP, $TMP and /tmp."""
    if option:
        return option
    for var in ("_CONDOR_SCRATCH_DIR", "TMPDIR", "TEMP", "TMP"):
        value = os.environ.get(var)
        if value:
            return value
    return "/tmp"


def remove(path: str) -> None:
    """Delete a file, a symlink or a whole tree; a missing path is fine."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def remove_if_small(path: str, budget: int = 16) -> bool:
    """Delete ``path`` if it is missing, a file, or a tree of at most ``budget`` entries.

    Returns False (and leaves the path alone) for bigger trees, which the caller
    deletes in a thread; most task sandboxes hold a handful of entries. The tree
    is walked through directory descriptors: a running task can swap a directory
    in it for a symlink meanwhile, which must not make us delete elsewhere.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return True
    parent, name = os.path.split(path)
    dir_fd = os.open(parent, _DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        if _tree_size(dir_fd, name, budget) > budget:
            return False
        remove_at(dir_fd, name)
    finally:
        os.close(dir_fd)
    return True


def _tree_size(dir_fd: int, name: str, budget: int) -> int:
    """How many entries directory ``name`` of ``dir_fd`` holds, counted to just past ``budget``."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    count = 0
    try:
        with os.scandir(fd) as it:
            for entry in it:
                count += 1
                if entry.is_dir(follow_symlinks=False):
                    count += _tree_size(fd, entry.name, budget - count)
                if count > budget:
                    break
    finally:
        os.close(fd)
    return count


MAX_SPARES = 64  # emptied sandboxes kept for reuse; more than any worker runs at once


class Workspace:
    """``<parent>/worker-<uid>-<pid>`` with ``cache/`` (and ``cache/tmp``) and sandboxes.

    Emptied sandboxes are kept (renamed ``.spare.N``) and renamed into the next
    task's sandbox. Removing a directory frees a block, which costs about 0.2 ms
    on a filesystem mounted with ``discard`` (each task has two: the sandbox and
    its temporary directory), several times the rest of a trivial task's file
    work; a rename costs a few microseconds. Stdout files are kept the same way:
    creating and deleting an inode per task costs more than renaming one.

    The price: a process that left its task's process group (``setsid``) and so
    outlived the task's kill would find its old directory, or its old stdout, in
    use by a later task. The reference worker kills no process group at all.
    A kept stdout file is reused only while it is still the worker's own file
    (see :meth:`open_stdout`).

    A live worker holds an ``flock`` on its workspace: that is how a later worker
    tells a workspace left by a killed one (:func:`remove_stale_workspaces`).
    """

    def __init__(self, parent: str) -> None:
        self.root = os.path.join(os.path.abspath(parent), f"worker-{os.getuid()}-{os.getpid()}")
        self.cache = os.path.join(self.root, "cache")
        self.tmp = os.path.join(self.cache, "tmp")
        self._spares: list = []  # [(path, name of the empty temporary directory inside)]
        self._spare_outs: list = []  # paths of stdout files kept for reuse
        self._serial = 0
        self._fresh: tuple | None = None  # (mode, uid, gid) of a new sandbox and its tmpdir
        self._lock = -1  # descriptor of the root, holding the flock that says "in use"

    def create(self) -> None:
        os.makedirs(self.tmp, exist_ok=True)
        self._unlock()
        self._lock = os.open(self.root, _DIR_FLAGS)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a filesystem without locks: the pid check alone protects us
            pass

    def wipe(self) -> None:
        """Empty the workspace: every sandbox and the whole cache (disconnection, [C])."""
        self.destroy()
        self.create()

    def destroy(self) -> None:
        self._spares.clear()
        self._spare_outs.clear()
        remove(self.root)
        self._unlock()

    def _unlock(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def new_sandbox(self, task_id: int) -> tuple:
        """``(sandbox, tmpdir)``: a new empty ``t.<id>`` holding an empty
        ``cctools-temp-t.<id>.XXXXXX`` (the reference's name), from a spare if there is one."""
        box = self.sandbox_path(task_id)
        name = f"cctools-temp-t.{task_id}.{secrets.token_hex(3)}"
        tmpdir = os.path.join(box, name)
        while self._spares:
            spare, old = self._spares.pop()
            try:
                os.rename(spare, box)  # fails if a non-empty t.<id> is in the way
            except OSError:
                remove(spare)
                continue
            try:
                os.rename(os.path.join(box, old), tmpdir)
                return box, tmpdir
            except OSError:
                break
        remove(box)
        os.mkdir(box, 0o755)
        os.mkdir(tmpdir, 0o700)
        if self._fresh is None:
            self._fresh = (_owner_and_mode(box), _owner_and_mode(tmpdir))
        return box, tmpdir

    def open_stdout(self, task_id: int) -> int:
        """A task's stdout file, empty, open for writing (a kept one if there is one).

        A kept file is reused only if it is still a regular file with no other
        name, checked on the open descriptor before emptying it: tasks can reach
        these files, and one replaced by a hard link to a file elsewhere (or by a
        symlink or a FIFO) would have the next task's output written there.
        """
        path = self.stdout_path(task_id)
        if self._spare_outs:
            try:
                os.rename(self._spare_outs.pop(), path)
                fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                pass
            else:
                st = os.fstat(fd)
                if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                    os.set_blocking(fd, True)
                    os.ftruncate(fd, 0)
                    return fd
                os.close(fd)
        return fresh_file(path, 0o644)

    def recycle_stdout(self, path: str) -> bool:
        """Keep a task's stdout file for reuse; False means the caller deletes it."""
        if len(self._spare_outs) >= MAX_SPARES:
            return False
        self._serial += 1
        spare = os.path.join(self.root, f".spare.{self._serial}.stdout")
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                return False
            os.rename(path, spare)
        except OSError:
            return False
        self._spare_outs.append(spare)
        return True

    def recycle(self, box: str) -> bool:
        """Keep sandbox ``box`` as a spare if it is as new: only its empty tmpdir left,
        modes and owners unchanged. False means the caller deletes it."""
        if self._fresh is None or len(self._spares) >= MAX_SPARES:
            return False
        try:
            if _owner_and_mode(box) != self._fresh[0]:
                return False
            with os.scandir(box) as it:
                entries = list(itertools.islice(it, 2))
            if len(entries) != 1 or not entries[0].name.startswith("cctools-temp-t.") \
                    or not entries[0].is_dir(follow_symlinks=False) \
                    or _owner_and_mode(entries[0].path) != self._fresh[1]:
                return False
            with os.scandir(entries[0].path) as it:
                if next(it, None) is not None:
                    return False
            self._serial += 1
            spare = os.path.join(self.root, f".spare.{self._serial}")
            os.rename(box, spare)
        except OSError:
            return False
        self._spares.append((spare, entries[0].name))
        return True

    def cache_path(self, name: str) -> str:
        if not is_component(name) or name == "tmp":
            raise SandboxError(f"bad cache name {name!r}")
        return os.path.join(self.cache, name)

    def sandbox_path(self, task_id: int) -> str:
        return os.path.join(self.root, f"t.{task_id}")

    def stdout_path(self, task_id: int) -> str:
        return os.path.join(self.root, f"t.{task_id}.stdout")


def remove_stale_workspaces(parent: str) -> list:
    """Delete the workspaces that dead workers of this user left in ``parent``; their paths.

    A worker killed with SIGKILL cannot clean up after itself. Its workspace is
    stale when no process has its pid any more and nobody holds its lock (see
    :class:`Workspace`); the lock also protects live workers on other hosts
    that share ``parent``, whose pids mean nothing here.
    """
    prefix = f"worker-{os.getuid()}-"
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    removed = []
    for name in names:
        pid = name[len(prefix):]
        if not name.startswith(prefix) or not pid.isdigit() or _alive(int(pid)):
            continue
        path = os.path.join(parent, name)
        try:
            fd = os.open(path, _DIR_FLAGS)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        remove(path)
        os.close(fd)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _owner_and_mode(path: str) -> tuple:
    st = os.lstat(path)
    return st.st_mode, st.st_uid, st.st_gid


def fresh_file(path: str, mode: int, dir_fd: int | None = None) -> int:
    """Open ``path`` (relative to ``dir_fd`` if given) for writing as a new regular
    file, replacing whatever was there."""
    remove_at(dir_fd, path)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode | 0o600,
                   dir_fd=dir_fd)


def fresh_dir(path: str, dir_fd: int | None = None) -> int:
    """Create ``path`` (relative to ``dir_fd`` if given) as a new, empty directory,
    replacing whatever was there; a descriptor of it, to work in it by."""
    remove_at(dir_fd, path)
    os.mkdir(path, 0o755, dir_fd=dir_fd)
    return os.open(path, _DIR_FLAGS, dir_fd=dir_fd)


def _sandbox_place(sandbox: str, name: str, follow_last: bool) -> tuple:
    """``(dir_fd, last)`` of sandbox name ``name``, its parents created inside the sandbox.

    Nothing is created before it is known to be inside: a directory input may hold
    an absolute symlink, and an input nested below it must not make directories
    where it points.
    """
    if not is_safe_relative_path(name):
        raise SandboxError(f"unsafe sandbox name {name!r}")
    try:
        return resolve_beneath(sandbox, name, make_dirs=True, follow_last=follow_last)
    except OSError as e:
        if e.errno in (errno.EXDEV, errno.ELOOP):
            raise SandboxError(f"sandbox name {name!r} leads outside the sandbox") from None
        raise SandboxError(f"cannot make room for {name!r}: {e.strerror}") from None


def link_tree(source: str, target: str, allow_symlinks: bool, dir_fd: int | None = None) -> None:
    """Hard-link ``source`` (file or tree) at ``target`` (relative to ``dir_fd`` if given).
    Where a hard link fails (another filesystem, too many links), symlink it, or copy
    it when symlinks are disabled (``--disable-symlinks``: programs that refuse
    symlinks). Nothing at or below ``target`` is followed if it is a symlink."""
    st = os.lstat(source)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(source), target, dir_fd=dir_fd)
    elif stat.S_ISDIR(st.st_mode):
        os.mkdir(target, 0o755, dir_fd=dir_fd)
        fd = os.open(target, _DIR_FLAGS, dir_fd=dir_fd)
        try:
            for entry in os.listdir(source):
                link_tree(os.path.join(source, entry), entry, allow_symlinks, fd)
            os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)
        finally:
            os.close(fd)
    else:
        try:
            os.link(source, target, dst_dir_fd=dir_fd)
        except OSError:
            if allow_symlinks:
                os.symlink(os.path.abspath(source), target, dir_fd=dir_fd)
            else:
                _copy_file(source, target, st, dir_fd)


def _copy_file(source: str, target: str, st: os.stat_result, dir_fd: int | None) -> None:
    """Copy regular file ``source`` to the new file ``target`` with its mode and times."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                 dir_fd=dir_fd)
    with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fchmod(fd, stat.S_IMODE(st.st_mode))
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def link_input(ws: Workspace, sandbox: str, cache_name: str, name: str,
               allow_symlinks: bool) -> None:
    """Link cache entry ``cache_name`` into the sandbox as ``name``."""
    source = ws.cache_path(cache_name)
    if not os.path.lexists(source):
        raise SandboxError(f"input {cache_name} is not in the cache")
    dir_fd, last = _sandbox_place(sandbox, name, follow_last=False)
    try:
        remove_at(dir_fd, last)
        link_tree(source, last, allow_symlinks, dir_fd)
    except OSError as e:
        raise SandboxError(f"cannot link {cache_name} as {name}: {e}") from None
    finally:
        os.close(dir_fd)


def make_empty_dir(sandbox: str, name: str) -> None:
    dir_fd, last = _sandbox_place(sandbox, name, follow_last=True)
    try:
        os.mkdir(last, 0o755, dir_fd=dir_fd)
    except FileExistsError:
        if not stat.S_ISDIR(os.stat(last, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise SandboxError(f"{name!r} exists and is not a directory") from None
    finally:
        os.close(dir_fd)


def collect_output(ws: Workspace, sandbox: str, name: str, cache_name: str) -> None:
    """Move output ``name`` into the cache; a missing output is left for `get` to report,
    and so is one whose parents lead outside the sandbox."""
    if not is_safe_relative_path(name):
        return
    try:
        dir_fd, last = resolve_beneath(sandbox, name, follow_last=False)
    except OSError:
        return
    try:
        try:
            os.stat(last, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        target = ws.cache_path(cache_name)
        remove(target)
        try:
            os.rename(last, target, src_dir_fd=dir_fd)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            path = os.path.join(sandbox, name)
            if os.path.isdir(path):
                shutil.copytree(path, target, symlinks=True)
            else:
                shutil.copy2(path, target, follow_symlinks=False)
    finally:
        os.close(dir_fd)


def free_disk_mb(path: str) -> int:
    return shutil.disk_usage(path).free // (1 << 20)


def used_disk_mb(path: str) -> int:
    """Bytes used under ``path`` in MB (hard links counted once)."""
    seen = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key not in seen:
                seen.add(key)
                total += st.st_blocks * 512
    return total // (1 << 20)
