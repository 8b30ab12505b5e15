"""``treadle vfs run``: from mount options to a command running with repository paths (docs/vfs.md).

The launcher checks the mounts, leaves to an outer run what it already serves (nesting), opens
the sources without contacting them, builds the one :class:`~treadle.vfs.namespace.Namespace`
both modes answer from, picks a mode and hands the command to it. The mode modules are
imported only when chosen, and a local repository's database driver only by its source, so a
run with http mounts alone starts nearly as fast as the interpreter.
"""

from __future__ import annotations

import json
import os
import posixpath
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from treadle.errors import VfsError
from treadle.vfs import process

MODES = ("auto", "fuse", "trace")
VERIFY = ("auto", "always")
REPOSITORY_XATTR = "user.treadle.repository"


@dataclass
class RunOptions:
    """What ``treadle vfs run`` was asked, with the defaults of docs/vfs.md.

    ``mounts`` holds (M, SOURCE) pairs; an empty M takes the source's default mount point.
    """

    mounts: list[tuple[str, str]] = field(default_factory=list)
    mode: str = "auto"
    cache: Path | None = None
    cache_size: str | None = None
    verify: str = "auto"
    timeout: float = 60.0
    token_file: str | None = None
    stats: Path | None = None
    verbose: bool = False


def parse_mount(text: str) -> tuple[str, str]:
    """``M=SOURCE`` or ``SOURCE`` alone as (M, SOURCE), M empty when not given.

    Only an absolute path before the first ``=`` is a mount point, so a source whose own name
    holds an ``=`` (``http://host/?a=b``, ``data=1/images.repo``) still reads as a source.
    """
    mount, sep, source = text.partition("=")
    if sep and mount.startswith("/") and source:
        return mount, source
    return "", text


def _normalise(mount: str) -> str:
    """``mount`` (absolute: from parse_mount or a repository's checked settings) made canonical."""
    clean = posixpath.normpath(mount)
    if clean.startswith("//"):
        clean = "/" + clean.lstrip("/")
    if clean == "/":
        raise VfsError("the mount point cannot be / itself")
    return clean


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def check_mounts(points: list[str]) -> None:
    """VfsError when two mount points are the same or one lies inside another."""
    for i, a in enumerate(points):
        for b in points[i + 1:]:
            if _inside(a, b) or _inside(b, a):
                raise VfsError(f"mount points {a} and {b} lie inside one another")


def _served_by(path: str) -> str | None:
    """The repository uuid an outer ``treadle vfs run`` shows at ``path``, or None."""
    try:
        return os.getxattr(path, REPOSITORY_XATTR).decode(errors="replace")
    except OSError:
        return None  # absent, no such xattr, or a filesystem without xattrs: nobody serves it


def outer_mount(mount: str) -> str | None:
    """The closest of ``mount`` and its ancestors that an outer run serves, or None."""
    path = mount
    while path != "/":
        if _served_by(path) is not None:
            return path
        path = posixpath.dirname(path)
    return None


def choose_mode(wanted: str) -> tuple[str, str]:
    """The mode to run in and why: ``wanted`` if it can work here, for ``auto`` fuse, else trace.

    VfsError names what is missing. Each mode's check lives in its module, imported only here.
    """
    if wanted not in MODES:
        raise VfsError(f"unknown mode {wanted!r} (expected one of {', '.join(MODES)})")
    refused = ""
    if wanted in ("auto", "fuse"):
        from treadle.vfs.fusemode import fuse_available

        ok, why = fuse_available()
        if ok:
            return "fuse", why
        if wanted == "fuse":
            raise VfsError(f"mode fuse cannot work here: {why}")
        refused = f"fuse: {why}"
    from treadle.vfs.trace import trace_available

    ok, why = trace_available()
    if ok:
        return "trace", why + (f" (not {refused})" if refused else "")
    if wanted == "trace":
        raise VfsError(f"mode trace cannot work here: {why}")
    raise VfsError(f"no mode works here: {refused}; trace: {why}")


def _say(line: str) -> None:
    print(f"treadle vfs: {line}", file=sys.stderr, flush=True)


def run(options: RunOptions, argv: list[str]) -> int:
    """Run ``argv`` with the mounts of ``options``; the command's exit status (docs/vfs.md).

    VfsError (exit 125) when vfs itself cannot work. Nothing remote is contacted before the
    command starts: sources are opened here but asked nothing.
    """
    if not argv:
        raise VfsError("no command given (treadle vfs run [OPTIONS] -- COMMAND [ARGS...])")
    if options.verify not in VERIFY:
        raise VfsError(f"unknown --verify {options.verify!r} (expected auto or always)")
    report: Callable[[str], None] = _say
    verbose: Callable[[str], None] | None = _say if options.verbose else None
    env = dict(os.environ)

    from treadle.vfs.sources import open_source

    wanted = []
    for mount, spec in options.mounts:
        source = open_source(spec, token_file=options.token_file, timeout=options.timeout)
        wanted.append((_normalise(mount or source.default_mount), source))
    check_mounts([m for m, _ in wanted])
    mounts = []
    for mount, source in wanted:
        outer = outer_mount(mount)
        if outer is None:
            mounts.append((mount, source))
        elif outer == mount:
            if verbose is not None:
                verbose(f"{mount} is served by an outer treadle vfs run; leaving it to that run")
        else:
            raise VfsError(f"{mount} lies inside {outer}, which an outer treadle vfs run serves "
                           "read-only")

    if not mounts:
        if verbose is not None:
            verbose("nothing left to mount: running the command as it is")
        status = run_plain(argv, env)
        _write_stats(options.stats, {"mode": "none", "exit_status": status})
        return status

    mode, why = choose_mode(options.mode)
    if verbose is not None:
        verbose(f"mode {mode}: {why}")
    from treadle.vfs.cache import Cache, default_cache_dir, parse_size
    from treadle.vfs.namespace import Namespace

    cache = Cache(options.cache or default_cache_dir(),
                  parse_size(options.cache_size) if options.cache_size else None)
    namespace = Namespace(mounts, cache, verify=options.verify, timeout=options.timeout,
                          report=report)
    if mode == "fuse":
        from treadle.vfs.fusemode import run_fuse

        status = run_fuse(namespace, argv, env, report=report)
    else:
        from treadle.vfs.trace import run_trace

        status = run_trace(namespace, cache, argv, env, report=report)
    namespace.close()
    _write_stats(options.stats, {"mode": mode, "exit_status": status,
                                 "passthrough": namespace.stats.get("passthrough_opens", 0) > 0,
                                 **namespace.stats})
    return status


def run_plain(argv: list[str], env: dict[str, str]) -> int:
    """Run the command with the process rules and no mount of our own (everything nested).

    Still a subreaper that forwards signals and kills leftovers, so a nested run behaves as any
    other to whoever started it.
    """
    process.become_subreaper()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        process.exec_child(argv, env)
    with process.SignalForwarder(pid):
        _, wait_status = os.waitpid(pid, 0)
    process.kill_leftovers()
    return process.exit_status(wait_status)


def _write_stats(path: Path | None, summary: dict[str, object]) -> None:
    """``--stats FILE``: the run's summary as one JSON object (docs/vfs.md, "Statistics")."""
    if path is None:
        return
    try:
        path.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as e:
        _say(f"cannot write --stats {path}: {e.strerror}")  # the command's status still stands
