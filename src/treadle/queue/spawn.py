"""When a command needs no shell, and where its program is (shared by the local backend and the worker).

Starting ``/bin/sh -c "touch out.1"`` costs two execs; starting ``touch`` costs
one, about 40 % of the price of a trivial task. Doing so is only allowed when
nothing the command can observe changes, so the decision is deliberately
narrow: plain words of safe characters, the first of which is neither a shell
keyword, a builtin nor an assignment. Everything else, and any program that
cannot be started directly, goes through the shell.

Standard library only and Python 3.8 syntax: the worker zipapp carries this
module (``treadle.queue.bundle``), and ``treadle.backends.local`` imports it too,
so the engine and the worker make the same decision with the same code.
"""

from __future__ import annotations

import os
import re
import signal

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
