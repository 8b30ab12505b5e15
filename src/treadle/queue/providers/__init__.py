"""Batch systems the worker factory can start workers on, one module each (base.Provider)."""

from __future__ import annotations

from typing import Any

from treadle.queue.providers.base import JobState, Provider


def get_provider(kind: str, **options: Any) -> Provider:
    """The provider for ``-T kind``; an unknown kind is the user's mistake."""
    from treadle.errors import UsageError

    if kind == "local":
        from treadle.queue.providers.local import LocalProvider

        return LocalProvider(**options)
    raise UsageError(f"unknown batch type {kind!r} for the factory (available: local)")


__all__ = ["JobState", "Provider", "get_provider"]
