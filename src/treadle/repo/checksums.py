"""Checksums written ``sha256:<hex>`` and the object paths named by them (docs/repo.md).

Objects are named by content, so the same few functions serve ingest, fetch, fsck and the
HTTP service; a later algorithm can be added beside SHA-256 without touching old objects.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePosixPath

from treadle.errors import RepoError

ALGORITHM = "sha256"
CHUNK = 1 << 20  # 1 MiB: large enough that hashing, not the Python loop, takes the time
_CHECKSUM = re.compile(r"sha256:([0-9a-f]{64})")


def format_checksum(hexdigest: str) -> str:
    """``sha256:<hex>`` for a SHA-256 hex digest."""
    return f"{ALGORITHM}:{hexdigest}"


def parse_checksum(text: str) -> str:
    """The hex digest of a ``sha256:<64 lowercase hex>`` checksum; RepoError for anything else."""
    match = _CHECKSUM.fullmatch(text)
    if match is None:
        raise RepoError(f"not a checksum: {text!r} (expected sha256:<64 lowercase hex digits>)")
    return match.group(1)


def object_relpath(checksum: str) -> PurePosixPath:
    """Where an object lives inside a store: ``objects/sha256/ab/cd/<hex>``.

    Two levels of two hex digits keep directories small (65,536 leaves) for millions of objects.
    """
    hexdigest = parse_checksum(checksum)
    return PurePosixPath("objects", ALGORITHM, hexdigest[:2], hexdigest[2:4], hexdigest)


class Hasher:
    """A checksum and a byte count built up chunk by chunk, for streams."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._size = 0

    def update(self, data: bytes) -> None:
        self._hash.update(data)
        self._size += len(data)

    @property
    def checksum(self) -> str:
        return format_checksum(self._hash.hexdigest())

    @property
    def size(self) -> int:
        return self._size


def hash_file(path: Path) -> tuple[str, int]:
    """(checksum, size) of a file, read in CHUNK pieces so any size fits in memory."""
    hasher = Hasher()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
    return hasher.checksum, hasher.size
