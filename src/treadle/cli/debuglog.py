"""Debug output for the commands that take the reference's ``-d FLAG`` and ``-o FILE``.

``treadle run`` and ``treadle worker`` have their own (the worker travels without
treadle); ``allpairs`` and ``factory`` send the ``treadle`` loggers here.
"""

from __future__ import annotations

import logging
import sys

from treadle.errors import UsageError


def enable(debug_file: str | None, flags: tuple[str, ...]) -> None:
    """Log everything under ``treadle`` at DEBUG to ``debug_file`` (else stderr) once a
    flag or a file is given. The flags name no subsystems yet: any flag means all."""
    if not debug_file and not flags:
        return
    try:
        handler = logging.FileHandler(debug_file) if debug_file else logging.StreamHandler(sys.stderr)
    except OSError as e:
        raise UsageError(f"cannot open debug file {debug_file}: {e.strerror}") from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    logger = logging.getLogger("treadle")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
