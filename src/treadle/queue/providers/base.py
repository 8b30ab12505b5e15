"""The one small interface every batch system implements for the worker factory.

::

    factory ──submit(worker_args)──────▶ Provider ──▶ local processes / Slurm / HTCondor
    factory ◀──status(ids): {id: JobState}──┘
    factory ──cancel(ids)──────────────▶

``submit`` starts one worker job whose command line is ``treadle worker`` with
``worker_args`` (the provider decides how the worker gets onto the node: the
installed command, or the zipapp of ``treadle worker-bundle``) and returns the
batch system's id for it at once. ``status`` reports ids the provider knows;
``cancel`` asks the batch system to end jobs and returns without waiting.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable


class JobState(enum.Enum):
    """Where a worker job is in its batch system."""

    PENDING = "pending"  # queued, not running yet
    RUNNING = "running"
    DONE = "done"  # finished, failed or cancelled: it holds no resources any more


@runtime_checkable
class Provider(Protocol):
    """Start, watch and stop worker jobs on one batch system."""

    def submit(self, worker_args: Sequence[str]) -> str:
        """Start one worker with these arguments; return its job id."""
        ...

    def status(self, ids: Iterable[str]) -> dict[str, JobState]:
        """The state of each job id (unknown ids are reported DONE)."""
        ...

    def cancel(self, ids: Iterable[str]) -> None:
        """Ask the batch system to end these jobs."""
        ...
