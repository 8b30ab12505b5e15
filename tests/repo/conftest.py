"""Shared fixtures of the repository tests: a two-store repository and files to put in it.

The `database_url` parameter (SQLite and a real PostgreSQL server) is suite-wide, in
tests/conftest.py, because the Weaver tests read repositories too.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def repo_dir(tmp_path: Path, database_url: str | None) -> Path:
    """A fresh repository with two dir stores, `a` and `b`, two replicas wanted, one required."""
    from treadle.repo.context import init_repository

    path = tmp_path / "test.repo"
    ctx = init_repository(path, database=database_url,
                          stores=[("a", "dir:stores/a"), ("b", "dir:stores/b")],
                          replicas=2, min_replicas=1)
    ctx.close()
    return path


@pytest.fixture
def make_files(tmp_path: Path) -> Callable[..., list[Path]]:
    """Write ``n`` files of distinct bytes under ``tmp_path/<prefix>``; return their paths."""
    counter = itertools.count()

    def make(n: int, size: int = 1000, prefix: str = "src", suffix: str = ".dat") -> list[Path]:
        where = tmp_path / prefix
        where.mkdir(parents=True, exist_ok=True)
        paths = []
        for _ in range(n):
            i = next(counter)
            seed = f"file {i} of {prefix}\n".encode()
            path = where / f"f{i:06d}{suffix}"
            path.write_bytes((seed * (size // len(seed) + 1))[:size])
            paths.append(path)
        return paths

    return make
