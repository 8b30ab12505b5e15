"""The worker's files: workspace, cache and per-task sandboxes (spec section 2.2).

Plain synchronous file operations, standard library only (Python 3.8), so the
worker can call them directly or from a thread. Every path a manager names is
checked here before anything is created, moved or deleted: cache names are single
components (the protocol module already refuses others), sandbox names must stay
inside the sandbox, and no operation follows a symlink out of the place it works in.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile

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


class Workspace:
    """``<parent>/worker-<uid>-<pid>`` with ``cache/`` (and ``cache/tmp``) and sandboxes."""

    def __init__(self, parent: str) -> None:
        self.root = os.path.join(os.path.abspath(parent), f"worker-{os.getuid()}-{os.getpid()}")
        self.cache = os.path.join(self.root, "cache")
        self.tmp = os.path.join(self.cache, "tmp")

    def create(self) -> None:
        os.makedirs(self.tmp, exist_ok=True)

    def wipe(self) -> None:
        """Empty the workspace: every sandbox and the whole cache (disconnection, [C])."""
        remove(self.root)
        self.create()

    def destroy(self) -> None:
        remove(self.root)

    def cache_path(self, name: str) -> str:
        if not is_component(name) or name == "tmp":
            raise SandboxError(f"bad cache name {name!r}")
        return os.path.join(self.cache, name)

    def sandbox_path(self, task_id: int) -> str:
        return os.path.join(self.root, f"t.{task_id}")

    def stdout_path(self, task_id: int) -> str:
        return os.path.join(self.root, f"t.{task_id}.stdout")


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
    """Hard-link ``source`` (file or tree) at ``target``; symlink if hard links fail."""
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
            if not allow_symlinks:
                raise
            os.symlink(os.path.abspath(source), target)


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


def make_task_tmpdir(sandbox: str, task_id: int) -> str:
    """``t.<id>/cctools-temp-t.<id>.XXXXXX``, exported as TMPDIR, TEMP and TMP."""
    return tempfile.mkdtemp(prefix=f"cctools-temp-t.{task_id}.", dir=sandbox)


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
