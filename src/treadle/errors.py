"""Errors a user can cause.

Every exception here carries a message a user can act on; the CLI prints it on
one line and exits non-zero, without a traceback. Anything else that escapes is
a bug in treadle and keeps its traceback.
"""

from __future__ import annotations

import importlib


class TreadleError(Exception):
    """A mistake in the user's input, arguments or environment."""

    exit_status = 1


class UsageError(TreadleError):
    """Bad command-line arguments."""


class ParseError(TreadleError):
    """A syntax or consistency error at a known place in a workflow file.

    ``str()`` gives ``FILE:LINE:COL: error: MESSAGE``, the form editors and
    compilers use, so the place can be clicked on.
    """

    def __init__(self, message: str, file: str = "", line: int = 0, column: int = 0):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: error: {self.message}"


class WorkflowError(TreadleError):
    """A workflow that parses but cannot run (missing input, locked log, ...)."""


class WeaverError(TreadleError):
    """A mistake in a Weaver script."""


class AllPairsError(TreadleError):
    """Bad input to the native All-Pairs or Wavefront engines."""


class BatchError(TreadleError):
    """A batch system command failed (``sbatch``, ``squeue``, ``condor_submit``...).

    ``kind`` is how treadle classifies it (docs/batch.md, "When things go wrong"):
    ``transient`` (retry after a pause: the controller is busy or briefly
    unreachable), ``permanent`` (the same request will always be refused: a bad
    partition, an impossible resource) or ``unknown`` (retried a few times, then
    treated as permanent). The command's own words stay in ``stderr``.
    """

    def __init__(self, message: str, *, kind: str = "unknown", command: tuple[str, ...] = (),
                 returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.command = command
        self.returncode = returncode
        self.stderr = stderr

    @property
    def transient(self) -> bool:
        return self.kind == "transient"


class RepoError(TreadleError):
    """A mistake in using a data repository: usage, a bad name or value, the writer lock held.

    The whole batch of an ingest that meets one commits nothing (docs/repo.md).
    """


class RepoDataError(TreadleError):
    """A repository file that cannot be had right: absent, corrupt in every replica, unreachable.

    Exit status 2, so a script can tell "the data is in trouble" from "I typed it wrong".
    """

    exit_status = 2


class FileAbsent(RepoDataError):
    """The database said so: no such fileid or object, or it was deleted.

    Kept apart from :class:`StoreUnreachable` because a reader must never take "the store is
    down" for "the file does not exist" (the service answers 404 for this one only).
    """


class StoreUnreachable(RepoDataError):
    """A store (or the database, or a service) could not be reached or gave no answer.

    Never a statement about existence: a missing store directory is unreachable, not empty.
    """


class VfsError(TreadleError):
    """``treadle vfs`` itself failed: no mode works here, the mount or the tracer failed.

    Exit status 125, the convention of ``env`` and ``timeout``, so that a caller can tell it from
    the command's own statuses (docs/vfs.md).
    """

    exit_status = 125


# extra name -> the package it installs, for the message of MissingExtra
EXTRAS = {"allpairs": "numpy", "sql": "SQLAlchemy", "condor": "htcondor",
          "postgres": "psycopg"}


class MissingExtra(TreadleError):
    """A feature needs a package that only one of treadle's extras installs.

    The core install stays small (click and rich); a user who reaches for
    ``.npy`` matrices or SQL datasets gets one line naming what to install.
    """

    def __init__(self, extra: str):
        self.extra = extra
        super().__init__(f"this needs {EXTRAS[extra]}: pip install 'treadle[{extra}]'")


def require_extra(module: str, extra: str) -> None:
    """Import ``module`` (numpy, sqlalchemy) or raise :class:`MissingExtra` for ``extra``.

    Called where a feature starts, so the message comes before any work is done.
    """
    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingExtra(extra) from None
