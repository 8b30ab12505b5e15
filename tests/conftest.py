"""Suite-wide settings: the reference tools' environment and the `reference` marker."""

from __future__ import annotations

import os
import shutil

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
