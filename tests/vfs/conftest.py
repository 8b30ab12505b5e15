"""Shared fixtures of the vfs tests: a repository holding a few files, and its HTTP service.

Repositories are real (SQLite), filled by the real ingest; the service is a real
``treadle repo serve`` on 127.0.0.1, stopped at the end of the test.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from treadle.repo.context import init_repository, open_context
from treadle.repo.ingest import ingest


@dataclass(frozen=True)
class Filled:
    """A repository and what was put in it: fileid -> (the source file's bytes, its extension)."""

    path: Path
    files: dict[int, tuple[bytes, str]]
    uuid: str


def _fill(where: Path, count: int) -> Filled:
    sources = where / "sources"
    sources.mkdir(parents=True)
    manifest = where / "images.csv"
    with manifest.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["path", "recording", "colour"])
        for i in range(count):
            name = f"img{i:04d}.jpg" if i % 3 else f"img{i:04d}.txt"
            (sources / name).write_bytes(f"bytes of image {i}\n".encode() * (50 + 37 * i))
            out.writerow([f"sources/{name}", f"rec{i}", "blue" if i % 2 else "brown"])
    repo = where / "images.repo"
    init_repository(repo, stores=[("a", "dir:stores/a")]).close()
    with open_context(repo, write=True) as ctx:
        result = ingest(ctx, manifest, table="images", key="recording")
        uuid = ctx.config.uuid
    files = {}
    for fileid, i in zip(result.fileids, range(count), strict=True):
        name = f"img{i:04d}.jpg" if i % 3 else f"img{i:04d}.txt"
        files[fileid] = ((sources / name).read_bytes(), name.rsplit(".", 1)[1])
    return Filled(repo, files, uuid)


@pytest.fixture
def filled_repo(tmp_path: Path) -> Filled:
    """A repository with 12 files (extensions jpg and txt) in user table ``images``."""
    return _fill(tmp_path / "r", 12)


@pytest.fixture
def served_repo(filled_repo: Filled, tmp_path: Path) -> Iterator[tuple[Filled, str]]:
    """``filled_repo`` behind ``treadle repo serve --no-auth`` on a free loopback port: (repo, URL)."""
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "treadle", "repo", "serve", str(filled_repo.path),
         "--bind", "127.0.0.1:0", "--no-auth"], stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        assert url.startswith("http://"), (tmp_path / "serve.log").read_text()
        yield filled_repo, url
    finally:
        server.terminate()
        server.wait(30)
        log.close()
