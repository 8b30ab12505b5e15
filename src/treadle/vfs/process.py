"""The command's process rules, shared by both modes (docs/vfs.md, "Processes and exit status").

vfs runs one command and must behave like ``env`` or ``timeout`` around it: the command's own
exit status (128+n for a signal), 126 and 127 when it cannot be started, signals sent to vfs
passed on, and nothing the command started left running once it is over, because a leftover
would hold the mount or run untraced. vfs is a child subreaper, so orphans come back to it and
can be found and killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType, TracebackType
from typing import NoReturn

PR_SET_CHILD_SUBREAPER = 36

# The signals that ask a command to stop; a terminal's or an engine's signal to the process
# group reaches the command by itself, one sent to vfs alone is passed on.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

# Signals that Python itself sets to "ignore" at start; an ignored signal stays ignored across
# exec, so the command would not die of a broken pipe as it does when started by a shell.
_PYTHON_IGNORES = (signal.SIGPIPE, signal.SIGXFSZ)

# How long kill_leftovers waits for killed processes to be reaped: SIGKILL also ends a process
# blocked on a FUSE request, so only a process stuck in the kernel elsewhere takes longer.
_REAP_TIMEOUT = 10.0

# waitpid flag (linux/wait.h): reap clone children and tracees too, whatever their exit signal.
_WALL = 0x40000000


def become_subreaper() -> None:
    """Make this process the one that inherits the command's orphans (``PR_SET_CHILD_SUBREAPER``).

    Without it, a daemonised grandchild is re-parented to init and escapes :func:`kill_leftovers`.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def exit_status(wait_status: int) -> int:
    """The status vfs exits with for a command that ended with ``wait_status`` (from ``waitpid``).

    The command's own code, or 128+n when signal n killed it: what a shell reports.
    """
    if os.WIFEXITED(wait_status):
        return os.WEXITSTATUS(wait_status)
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    raise ValueError(f"wait status {wait_status:#x} is neither an exit nor a death by signal")


def exec_child(argv: Sequence[str], env: Mapping[str, str]) -> NoReturn:
    """In a forked child, become the command; never return.

    Searches ``PATH`` from ``env`` as ``execvp`` does. When the command cannot be started it
    prints one line and exits 127 if it was not found, 126 otherwise, the convention of ``env``
    and ``timeout``. Only ``os._exit`` leaves here: the child must never run the parent's code.
    """
    name = argv[0] if argv else ""
    code = 126
    try:
        for signum in _PYTHON_IGNORES:
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.execvpe(name, list(argv), dict(env))
    except (FileNotFoundError, NotADirectoryError) as exc:
        code = 127
        _say(f"treadle vfs: {name}: {exc.strerror or 'not found'}")
    except OSError as exc:
        _say(f"treadle vfs: {name}: {exc.strerror or exc}")
    except BaseException as exc:  # a forked child must reach os._exit whatever happens
        _say(f"treadle vfs: cannot run {name!r}: {exc}")
    os._exit(code)


def _say(line: str) -> None:
    """Write one line to stderr unbuffered: a forked child must not flush the parent's buffers."""
    with contextlib.suppress(OSError):
        os.write(2, (line + "\n").encode(errors="replace"))


class SignalForwarder:
    """While active, pass SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to vfs on to process ``pid``.

    vfs itself does not stop on them: it waits for the command, which decides, and then exits with
    the command's status (130, 143, 129 when the command died of it). A signal the command already
    has pending (the same signal sent to the whole process group) is not sent a second time.
    Enter it in the main thread, as Python's ``signal`` module requires.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}

    def __enter__(self) -> SignalForwarder:
        for signum in FORWARDED:
            self._previous[signum] = signal.signal(signum, self._forward)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        if signum in _pending(self.pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)


def _pending(pid: int) -> set[int]:
    """Signals pending for process ``pid``, for it or its threads (``/proc/PID/status``)."""
    mask = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("SigPnd", "ShdPnd"):
                    mask |= int(value.strip(), 16)
    except (OSError, ValueError):
        return set()
    return {n for n in range(1, 65) if mask & (1 << (n - 1))}


def _children() -> dict[int, list[int]]:
    """Every live process's children, from ``/proc/*/stat`` (parent pid -> child pids)."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def descendants(pid: int | None = None) -> list[int]:
    """The processes below ``pid`` (default: this one), children first."""
    tree = _children()
    found: list[int] = []
    todo = [os.getpid() if pid is None else pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _reap() -> bool:
    """Reap every child that has ended; whether any child is left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG | _WALL)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def kill_leftovers() -> None:
    """Kill every process still below vfs and reap them, once the command has ended.

    Call it after the command's own status is collected and before the mount or the tracer goes
    away. Processes may fork while they are being killed, and orphans come back to vfs (a child
    subreaper) only once their parent died, so it scans again until nothing is left.
    """
    deadline = time.monotonic() + _REAP_TIMEOUT
    while True:
        for pid in descendants():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not _reap():
            return
        if time.monotonic() >= deadline:
            left = " ".join(str(pid) for pid in descendants())
            print(f"treadle vfs: processes still running after SIGKILL: {left}", file=sys.stderr)
            return
        time.sleep(0.01)
