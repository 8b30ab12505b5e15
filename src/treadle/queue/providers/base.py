"""The one small interface every batch system implements for the worker factory.

::

    factory ──submit(spec, count)──▶ Provider ──▶ process groups / a Slurm array / an HTCondor cluster
    factory ◀──status(ids): {id: JobState}──┘     one query for all ids
    factory ──cancel(ids)──────────▶              one command; does not wait

Bulk by design: ``submit`` starts ``count`` identical workers in one batch
submission and returns their ids at once; ``status`` asks about every job in
one query, so watching a pool costs the same for 2 workers as for 200. How a
worker gets onto a node (the installed command, the zipapp carried in the job)
is the provider's business; what the worker is told is the factory's, in a
:class:`WorkerSpec` (docs/batch.md).
"""

from __future__ import annotations

import enum
import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from treadle.batch.base import BatchSystem, Observation, Submitted
from treadle.errors import BatchError


class JobState(enum.Enum):
    """Where a worker job is in its batch system."""

    PENDING = "pending"  # queued, not running yet
    RUNNING = "running"
    HELD = "held"  # will not start by itself (a user, an administrator or a policy holds it)
    DONE = "done"  # ended with status 0, was cancelled, or is unknown: it holds nothing any more
    FAILED = "failed"  # ended with a non-zero status or a signal, or never ran


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What every worker of one submission is.

    ``args`` are the worker's options with the manager (``HOST PORT`` or
    ``-M NAME -C CATALOG``) last; the resources are separate because a provider
    may have to say them in the batch system's own words (Slurm's
    ``$SLURM_CPUS_PER_TASK``). ``wall`` is in seconds; the worker is told to
    leave a minute before it (:data:`WALL_MARGIN`). ``options`` are the user's
    submit options (``-B``), already split. ``files`` are files the worker
    reads (the password file), named in ``args`` by their path here; a
    provider that transfers them to the node rewrites those paths.
    ``command`` is ``"bundle"`` (treadle's standard-library-only worker
    zipapp, run by ``python``) or a program such as ``work_queue_worker``.
    """

    args: tuple[str, ...]
    cores: int | None = None
    memory: int | None = None
    disk: int | None = None
    gpus: int | None = None
    wall: int | None = None
    options: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    command: str = "bundle"
    python: str = "python3"


WALL_MARGIN = 60
"""Seconds a worker leaves before its job's wall time, so its tasks go back to the manager."""


def accepted(system: BatchSystem, answers: Sequence[Submitted]) -> list[str]:
    """The ids of one submission, all or nothing: if the system refused any job, the others are
    cancelled and the refusal raised, so the factory never counts half a submission."""
    ids = [a for a in answers if isinstance(a, str)]
    refused = next((a for a in answers if isinstance(a, BatchError)), None)
    if refused is not None:
        system.cancel(ids)
        raise refused
    return ids


def states_of(ids: Iterable[str], seen: Iterable[Observation],
              state: Callable[[Observation], JobState]) -> dict[str, JobState]:
    """Each id's state from one query's observations; an id the system no longer lists is DONE."""
    by_native = {o.native: o for o in seen}
    return {i: state(by_native[i]) if i in by_native else JobState.DONE for i in ids}


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.1, ::1, or a name resolving only to those).

    A name this machine cannot resolve is not loopback: the nodes may know it.
    """
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def resource_options(spec: WorkerSpec, cores: str | None = None) -> list[str]:
    """The worker's resource options for ``spec``: what it offers the manager.

    ``cores`` replaces the number of cores with the batch system's own word for
    what it granted (a shell expansion such as ``${SLURM_CPUS_PER_TASK:-1}``),
    which the caller quotes for its script.
    """
    out: list[str] = []
    if cores is not None:
        out += ["--cores", cores]
    elif spec.cores is not None:
        out += ["--cores", str(spec.cores)]
    for name in ("memory", "disk", "gpus"):
        value = getattr(spec, name)
        if value is not None:
            out += [f"--{name}", str(value)]
    if spec.wall is not None:
        out += ["--wall-time", str(max(1, spec.wall - WALL_MARGIN))]
    return out


@runtime_checkable
class Provider(Protocol):
    """Start, watch and stop worker jobs on one batch system."""

    name: str

    def submit(self, spec: WorkerSpec, count: int) -> list[str]:
        """Start ``count`` workers in ONE batch submission; their job ids, in order.

        Raises :class:`treadle.errors.BatchError` when the batch system refuses.
        """
        ...

    def status(self, ids: Iterable[str]) -> dict[str, JobState]:
        """The state of each job id, in one query (ids the batch system no longer knows: DONE)."""
        ...

    def cancel(self, ids: Iterable[str]) -> None:
        """Ask the batch system to end these jobs, in one command; returns without waiting."""
        ...

    def close(self) -> None:
        """Cancel what is left and release the provider's files."""
        ...

    def log_path(self, id: str) -> str | None:  # noqa: A002 - the contract's name
        """The file holding the job's stdout and stderr, if the provider keeps one."""
        ...
