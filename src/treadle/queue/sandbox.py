"""The worker's files: workspace, cache and per-task sandboxes, laid out as the reference worker's.

Plain synchronous file operations, standard library only (Python 3.8), so the
worker can call them directly or from a thread. Every path a manager names is
checked here before anything is created, moved or deleted: cache names are single
components (the protocol module already refuses others), sandbox names must stay
inside the sandbox, and no operation follows a symlink out of the place it works in.
"""

from __future__ import annotations

import errno
import itertools
import os
import secrets
import shutil
import stat

from .protocol import is_component, is_safe_relative_path


class SandboxError(Exception):
    """A task's sandbox could not be set up (reported to the manager as INPUT_MISSING)."""


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
    deletes in a thread; most task sandboxes hold a handful of entries.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return True
    entries: list = []
    stack = [path]
    while stack:
        top = stack.pop()
        with os.scandir(top) as it:
            for entry in it:
                entries.append(entry)
                if len(entries) > budget:
                    return False
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    for entry in reversed(entries):  # children before their directories
        if entry.is_dir(follow_symlinks=False):
            os.rmdir(entry.path)
        else:
            os.unlink(entry.path)
    os.rmdir(path)
    return True


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
    """

    def __init__(self, parent: str) -> None:
        self.root = os.path.join(os.path.abspath(parent), f"worker-{os.getuid()}-{os.getpid()}")
        self.cache = os.path.join(self.root, "cache")
        self.tmp = os.path.join(self.cache, "tmp")
        self._spares: list = []  # [(path, name of the empty temporary directory inside)]
        self._spare_outs: list = []  # paths of stdout files kept for reuse
        self._serial = 0
        self._fresh: tuple | None = None  # (mode, uid, gid) of a new sandbox and its tmpdir

    def create(self) -> None:
        os.makedirs(self.tmp, exist_ok=True)

    def wipe(self) -> None:
        """Empty the workspace: every sandbox and the whole cache (disconnection, [C])."""
        self._spares.clear()
        self._spare_outs.clear()
        remove(self.root)
        self.create()

    def destroy(self) -> None:
        self._spares.clear()
        self._spare_outs.clear()
        remove(self.root)

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
        """A task's stdout file, empty, open for writing (a kept one if there is one)."""
        path = self.stdout_path(task_id)
        if self._spare_outs:
            try:
                os.rename(self._spare_outs.pop(), path)
            except OSError:
                pass
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)

    def recycle_stdout(self, path: str) -> bool:
        """Keep a task's stdout file for reuse; False means the caller deletes it."""
        if len(self._spare_outs) >= MAX_SPARES:
            return False
        self._serial += 1
        spare = os.path.join(self.root, f".spare.{self._serial}.stdout")
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
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


def _owner_and_mode(path: str) -> tuple:
    st = os.lstat(path)
    return st.st_mode, st.st_uid, st.st_gid


def fresh_file(path: str, mode: int) -> int:
    """Open ``path`` for writing as a new regular file (replacing whatever was there)."""
    remove(path)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode | 0o600)


def fresh_dir(path: str) -> None:
    """Create ``path`` as a new, empty directory (replacing whatever was there)."""
    remove(path)
    os.mkdir(path, 0o755)


def inside(path: str, top: str) -> bool:
    """Whether ``path``, with symlinks resolved, lies in ``top`` (also resolved)."""
    real_top = os.path.realpath(top)
    real = os.path.realpath(path)
    return real == real_top or real.startswith(real_top + os.sep)


def _sandbox_target(sandbox: str, name: str) -> str:
    """The absolute path of sandbox name ``name``, its parents created inside the sandbox."""
    if not is_safe_relative_path(name):
        raise SandboxError(f"unsafe sandbox name {name!r}")
    path = os.path.normpath(os.path.join(sandbox, name))
    parent = os.path.dirname(path)
    if parent == sandbox:  # a plain name: nothing to create, nothing to escape through
        return path
    os.makedirs(parent, exist_ok=True)
    if not inside(parent, sandbox):
        raise SandboxError(f"sandbox name {name!r} leads outside the sandbox")
    return path


def link_tree(source: str, target: str, allow_symlinks: bool) -> None:
    """Hard-link ``source`` (file or tree) at ``target``. Where a hard link fails
    (another filesystem, too many links), symlink it, or copy it when symlinks
    are disabled (``--disable-symlinks``: programs that refuse symlinks)."""
    st = os.lstat(source)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(source), target)
    elif stat.S_ISDIR(st.st_mode):
        os.mkdir(target, 0o755)
        for entry in os.listdir(source):
            link_tree(os.path.join(source, entry), os.path.join(target, entry), allow_symlinks)
        os.chmod(target, stat.S_IMODE(st.st_mode) | 0o700)
    else:
        try:
            os.link(source, target)
        except OSError:
            if allow_symlinks:
                os.symlink(os.path.abspath(source), target)
            else:
                shutil.copy2(source, target)


def link_input(ws: Workspace, sandbox: str, cache_name: str, name: str,
               allow_symlinks: bool) -> None:
    """Link cache entry ``cache_name`` into the sandbox as ``name``."""
    source = ws.cache_path(cache_name)
    if not os.path.lexists(source):
        raise SandboxError(f"input {cache_name} is not in the cache")
    target = _sandbox_target(sandbox, name)
    remove(target)
    try:
        link_tree(source, target, allow_symlinks)
    except OSError as e:
        raise SandboxError(f"cannot link {cache_name} as {name}: {e}") from None


def make_empty_dir(sandbox: str, name: str) -> None:
    target = _sandbox_target(sandbox, name)
    os.makedirs(target, exist_ok=True)
    if not inside(target, sandbox):
        raise SandboxError(f"sandbox name {name!r} leads outside the sandbox")


def collect_output(ws: Workspace, sandbox: str, name: str, cache_name: str) -> None:
    """Move output ``name`` into the cache; a missing output is left for `get` to report."""
    if not is_safe_relative_path(name):
        return
    path = os.path.normpath(os.path.join(sandbox, name))
    parent = os.path.dirname(path)
    if not os.path.lexists(path) or (parent != sandbox and not inside(parent, sandbox)):
        return
    target = ws.cache_path(cache_name)
    remove(target)
    try:
        os.rename(path, target)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        if os.path.isdir(path):
            shutil.copytree(path, target, symlinks=True)
        else:
            shutil.copy2(path, target, follow_symlinks=False)


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
