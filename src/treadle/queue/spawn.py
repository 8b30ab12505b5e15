"""When a command needs no shell, and where its program is (shared by the local backend and the worker).

Starting ``/bin/sh -c "touch out.1"`` costs two execs; starting ``touch`` costs
one, about 40 % of the price of a trivial task. Doing so is only allowed when
nothing the command can observe changes, so the decision is deliberately
narrow: plain words of safe characters, the first of which is neither a shell
keyword, a builtin nor an assignment. Everything else, and any program that
cannot be started directly, goes through the shell.

Standard library only and Python 3.8 syntax: the worker zipapp carries this
module (``treadle.queue.bundle``), and ``treadle.backends.local`` imports it too,
so the engine and the worker make the same decision with the same code, and make
their children die with them (:class:`Watchdog`) the same way.
"""

from __future__ import annotations

import os
import re
import signal
import sys

SHELL = "/bin/sh"

# Words the shell treats specially when they come first: keywords and builtins.
# A command starting with one of them always goes through the shell (``echo``
# and ``test`` exist as programs too, but behave differently as builtins).
_SHELL_FIRST_WORDS = frozenset(
    """! { } case do done elif else esac fi for if in then until while
    . : [ [[ alias bg break builtin cd chdir command continue echo eval exec exit export
    false fc fg getopts hash jobs kill let local printf pwd read readonly return set
    shift source test times trap true type typeset ulimit umask unalias unset wait""".split()
)
# Characters that mean nothing to the shell inside a word.
_SHELL_FREE = re.compile(r"[A-Za-z0-9_./,:+@%^=-]+(?:[ \t]+[A-Za-z0-9_./,:+@%^=-]+)*[ \t]*\Z")

# Signals Python ignores for itself; a started program must find them at their defaults,
# as it would when started by a shell.
RESET_SIGNALS = tuple(
    s for s in (getattr(signal, n, None) for n in ("SIGPIPE", "SIGXFSZ", "SIGXFZ")) if s is not None
)


def shell_free_argv(command: str) -> list[str] | None:
    """The argument vector the shell would build for ``command``, if it is trivially the words.

    Only plain words of safe characters qualify: no quotes, ``$``, globs,
    redirections, operators, ``~``, backslashes or newlines; the first word
    is not a keyword or builtin and not an assignment (``X=1 prog``). For any
    other command the answer is ``None`` and the shell must run it.
    """
    if not _SHELL_FREE.match(command):
        return None
    words = command.split()
    first = words[0]
    if first in _SHELL_FIRST_WORDS or "=" in first:
        return None
    return words


def find_program(word: str, path: str, cwd: str | None = None) -> str | None:
    """The file the shell would execute for command word ``word``, or None if none.

    Searched afresh every time, as each ``/bin/sh -c`` does: remembering findings
    would keep running an old program after a new one appeared earlier on ``PATH``.
    The search costs a few microseconds, a stat per ``PATH`` entry tried. ``cwd``
    is the directory the command will run in (default: ours); relative ``PATH``
    entries are searched there.
    """
    if "/" in word:
        return word
    for d in path.split(":"):
        if d[:1] == "/":
            base = d
        else:  # "" means the current directory, as "." does
            base = os.path.join(cwd, d) if cwd is not None else (d or ".")
        candidate = os.path.join(base, word)
        if os.access(candidate, os.X_OK) and os.path.isfile(candidate):
            return candidate
    return None


def direct_start(command: str, path: str | None,
                 cwd: str | None = None) -> tuple[str, list[str]] | None:
    """``(program, argv)`` to start ``command`` without a shell, or None to use the shell.

    ``path`` is the command's ``PATH``; without one the shell searches its own
    built-in list, so the shell is left to do it. A program that cannot be started
    after all (not executable, no ``#!``) is the caller's to hand to the shell.
    """
    argv = shell_free_argv(command)
    if argv is None or path is None:
        return None
    program = find_program(argv[0], path, cwd)
    if program is None:
        return None
    return program, argv


def shell_report_argv(sig: int) -> list[str]:
    """argv of a shell that reports a child's death by ``sig`` as ``/bin/sh -c`` does.

    A shell running a program as its child outlives it and reports the death its
    own way (dash: a message such as "Segmentation fault" on stderr and exit status
    128+N). A program started directly dies without that report, so whoever
    started it runs this stand-in, whose inner shell dies of the same signal, and
    takes the outer shell's message and status as the program's.
    """
    return ["/bin/sh", "-c", f"/bin/sh -c 'kill -{sig} $$'"]


class Watchdog:
    """A tiny process that kills the recorded process groups when its owner goes away.

    The owner (the local backend's engine, or a worker) tells it through a pipe
    which process groups are alive. When the pipe closes, because the owner exited
    or was killed with SIGKILL, it kills the groups still recorded. The
    parent-death signal would do this too, but ``posix_spawn`` cannot set it up.
    """

    SCRIPT = (
        "import os,signal,sys,time\n"
        "for s in (signal.SIGINT,signal.SIGTERM,signal.SIGQUIT,signal.SIGHUP):signal.signal(s,signal.SIG_IGN)\n"
        "g=set()\n"
        "for l in sys.stdin.buffer:\n"
        " for w in l.split():\n"
        "  (g.add if w[:1]==b'+' else g.discard)(int(w[1:]))\n"
        "def k(s):\n"
        " for p in list(g):\n"
        "  try:os.killpg(p,s)\n"
        "  except OSError:g.discard(p)\n"
        "k(signal.SIGTERM)\n"
        "time.sleep(0.3 if g else 0)\n"
        "k(signal.SIGKILL)\n"
    )

    def __init__(self) -> None:
        r, w = os.pipe()
        try:
            self.pid = os.posix_spawn(
                sys.executable,
                [sys.executable, "-S", "-E", "-c", self.SCRIPT],
                os.environ,
                file_actions=[(os.POSIX_SPAWN_DUP2, r, 0)],
                setpgroup=0,
            )
        finally:
            os.close(r)
        self._w = w
        self._pending: list[str] = []

    def add(self, pgid: int) -> None:
        self._pending.append(f"+{pgid}\n")
        data = "".join(self._pending).encode()
        self._pending.clear()
        try:
            os.write(self._w, data)
        except OSError:
            pass

    def remove(self, pgid: int) -> None:
        # Sent with the next add, or by close: saves a syscall per job.
        self._pending.append(f"-{pgid}\n")

    def close(self) -> None:
        if self._w < 0:
            return
        if self._pending:  # groups that ended must not be killed: their ids may be reused
            try:
                os.write(self._w, "".join(self._pending).encode())
            except OSError:
                pass
            self._pending.clear()
        os.close(self._w)
        self._w = -1
        # The watchdog exits by itself on end-of-file; reap it if it already has, but
        # never make the owner's exit wait for it.
        try:
            os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pass
