"""Fixtures for the All-Pairs tests: item files, list files and comparison programs."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TREADLE = [sys.executable, "-m", "treadle"]


def write_items(directory: Path, contents: list[bytes], names: list[str] | None = None) -> list[str]:
    """Write one file per content; return their paths (as listed)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, data in enumerate(contents):
        name = names[k] if names else f"item{k:03d}.bin"
        path = directory / name
        path.write_bytes(data)
        paths.append(str(path))
    return paths


def write_list(path: Path, entries: list[str]) -> str:
    path.write_text("".join(e + "\n" for e in entries), encoding="utf-8")
    return str(path)


def make_script(path: Path, body: str) -> str:
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def hamming(a: bytes, b: bytes) -> int:
    """The brute-force reference for BITWISE and the test callables."""
    return sum(x != y for x, y in zip(a, b, strict=False)) + abs(len(a) - len(b))


@pytest.fixture
def items(tmp_path: Path) -> list[str]:
    """Six small files, one empty and one duplicate content."""
    contents = [b"abcdef", b"abcxef", b"", b"zzzzzzzzz", b"abcdef", b"\x00\x01\x02"]
    return write_items(tmp_path / "items", contents)


@pytest.fixture
def lines_diff(tmp_path: Path) -> str:
    """An antisymmetric executable F: line count of a minus line count of b."""
    return make_script(tmp_path / "linediff.sh",
                       '#!/bin/sh\necho $(( $(wc -l < "$1") - $(wc -l < "$2") ))\n')


@pytest.fixture
def size_diff_py(tmp_path: Path) -> str:
    """A Python callable file: size of a minus size of b, path mode."""
    path = tmp_path / "fns.py"
    path.write_text(
        "import os\n"
        "from treadle.allpairs import batched, takes_bytes\n"
        "def sizediff(a, b):\n"
        "    return os.path.getsize(a) - os.path.getsize(b)\n"
        "@takes_bytes\n"
        "def ham(a, b):\n"
        "    return sum(x != y for x, y in zip(a, b, strict=False)) + abs(len(a) - len(b))\n"
        "@batched\n"
        "@takes_bytes\n"
        "def hamb(xs, ys):\n"
        "    return [[sum(x != y for x, y in zip(a, b, strict=False)) + abs(len(a) - len(b)) for b in ys]"
        " for a in xs]\n"
        "def printer(a, b):\n"
        "    print(os.path.basename(a) + '|' + os.path.basename(b))\n"
        "@batched\n"
        "def short(xs, ys):\n"
        "    return [[0] * (len(ys) - 1) for _ in xs]\n"
    )
    return str(path)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
