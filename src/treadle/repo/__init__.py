"""The data repository: a metadata database beside stores of checksummed, replicated files.

``Repository`` is the Python API (docs/repo.md); ``treadle repo`` is the command line. It is
loaded on first use, so that a module of this package that needs no database (the service
client that vfs uses) can be imported without SQLAlchemy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Repository"]


def __getattr__(name: str) -> Any:
    if name == "Repository":
        from treadle.repo.repository import Repository

        return Repository
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
