"""Getting written bytes onto the disk: one syncfs per filesystem, and writeback started early.

Standard library only (ctypes over the C library), so that both the stores and vfs's cache, which
must not need a database driver, use the same calls (docs/repo.md, "Ingest").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast


def _libc_function(name: str, argtypes: list[type[ctypes._SimpleCData[Any]]]) -> Callable[..., int] | None:
    """A function of the C library, None where it has no such function (not Linux)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None
    call = getattr(libc, name, None)
    if call is None:
        return None
    call.argtypes = argtypes
    call.restype = ctypes.c_int
    return cast(Callable[..., int], call)


_SYNCFS = _libc_function("syncfs", [ctypes.c_int])
_SYNC_FILE_RANGE = _libc_function("sync_file_range", [ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                                                      ctypes.c_uint])
_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writing the dirty pages out, do not wait


def start_writeback(fd: int, offset: int = 0, length: int = 0) -> None:
    """Start writing ``length`` bytes at ``offset`` of ``fd`` to disk now (0: to the end), without
    waiting.

    Only a head start for the syncfs or fsync that follows (which is what makes them durable):
    the disk then works while the copies and hashes use the CPU, instead of after them. Nothing
    where the C library lacks sync_file_range.
    """
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def sync_filesystem(root: Path) -> bool:
    """Make every write to the filesystem holding ``root`` durable with one syncfs(2).

    One call instead of an fsync per file: the flushes are the same, the waits are not.
    False when this C library has no syncfs (the caller then fsyncs file by file); OSError when
    the flush failed.
    """
    if _SYNCFS is None:
        return False
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _SYNCFS(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno), str(root))
    finally:
        os.close(fd)
    return True
