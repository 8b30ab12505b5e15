"""Suite-wide settings: the reference tools' environment, the `reference` marker, and a small disk."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# The Debian build of cctools links Open MPI, which refuses to start as root
# unless told that this is intended (spec workqueue.md §6).
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")

HAVE_REFERENCE = shutil.which("makeflow") is not None and shutil.which("work_queue_worker") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `reference` need cctools; skip them, saying why, where it is absent."""
    if HAVE_REFERENCE:
        return
    skip = pytest.mark.skip(reason="reference cctools (Debian coop-computing-tools) not installed")
    for item in items:
        if "reference" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def small_disk() -> Iterator[Callable[..., Path]]:
    """Mounts small tmpfs filesystems where asked, so a test fills a disk for real (ENOSPC).

    ``small_disk(where, size="256k")`` returns ``where``; every mount is undone at teardown.
    Mounting needs root: elsewhere the test is skipped, saying why.
    """
    mounted: list[Path] = []

    def mount(where: Path, size: str = "256k") -> Path:
        where.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
        mounted.append(where)
        return where

    try:
        yield mount
    finally:
        for where in reversed(mounted):
            if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(where)], capture_output=True)
