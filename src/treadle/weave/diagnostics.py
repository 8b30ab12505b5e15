"""Diagnostics about the user's script: ``error``, ``warn`` and the call site they name.

The ground floor of the compiler: it imports nothing else of ``treadle.weave``, so
every other module may report a mistake without pulling in the rest. What it
needs to know about the script being compiled (its file, how messages name it,
whether ``-W`` is on) it is told by ``attach``, when a compile starts.
"""

from __future__ import annotations

import logging
import os
import sys
from types import FrameType
from typing import Protocol

from treadle.errors import WeaverError

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Source(Protocol):
    """What diagnostics need from the script being compiled."""

    path: str  # frames in this file are the user's
    display: str  # how messages name it

    @property
    def strict(self) -> bool:  # -W: warnings are errors
        ...


_source: Source | None = None


def attach(source: Source | None) -> None:
    """Name the script that messages are about (``None``: no script is being compiled)."""
    global _source
    _source = source


def user_site() -> str:
    """``script.py:LINE`` of the innermost frame outside treadle (the user's call site)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith(_PACKAGE_DIR) and not name.startswith("<"):
            return f"{_display(name)}:{frame.f_lineno}"
        frame = frame.f_back
    return _display(_source.path) if _source is not None else "<weave>"


def _display(filename: str) -> str:
    if _source is not None and filename == _source.path:
        return _source.display
    return filename


def warn(message: str, site: str | None = None) -> None:
    """A warning about the user's script; an error under ``-W``."""
    where = site or user_site()
    if _source is not None and _source.strict:
        err = WeaverError(f"{message} (a warning, made an error by -W)")
        err.site = where  # type: ignore[attr-defined]  # the site rides on the error; describe() reads it with getattr
        raise err
    logging.getLogger("treadle.weave.user").warning("%s: warning: %s", where, message)


def error(message: str, site: str | None = None) -> WeaverError:
    """A ``WeaverError`` that remembers where in the script it belongs (``None``: find out)."""
    err = WeaverError(message)
    err.site = site  # type: ignore[attr-defined]  # the site rides on the error; describe() reads it with getattr
    return err
