"""Batch systems the worker factory can start workers on, one module each (base.Provider).

A provider module is imported only when asked for: the Slurm and HTCondor ones
pull in their batch-system layers, which a local factory never needs.
"""

from __future__ import annotations

import importlib
from typing import Any

from treadle.errors import UsageError
from treadle.queue.providers.base import JobState, Provider, WorkerSpec

# -T name -> "module:class"
PROVIDERS = {
    "local": "treadle.queue.providers.local:LocalProvider",
    "slurm": "treadle.queue.providers.slurm:SlurmProvider",
    "condor": "treadle.queue.providers.condor:CondorProvider",
}


def get_provider(kind: str, **options: Any) -> Provider:
    """The provider for ``-T kind``, built with ``options``; an unknown kind is the user's mistake."""
    if kind not in PROVIDERS:
        raise UsageError(f"unknown batch type {kind!r} for the factory (available: {', '.join(PROVIDERS)})")
    module, _, name = PROVIDERS[kind].partition(":")
    provider: Provider = getattr(importlib.import_module(module), name)(**options)
    return provider


__all__ = ["PROVIDERS", "JobState", "Provider", "WorkerSpec", "get_provider"]
