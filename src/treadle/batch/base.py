"""What every batch system module speaks: jobs in, observations out.

::

    backend / provider ──submit(jobs)──▶ BatchSystem ──▶ sbatch / condor_submit / processes
                       ◀──harvest(), poll(tag), final(ids): [Observation]──┘
                       ──cancel(ids), cancel_tag(tag)──▶

A system module runs its commands with an argv list (never a shell string) and
turns their text into :class:`Observation` records; deciding what an
observation *means* for a job (lost, held too long, finished) is the
:class:`~treadle.batch.tracker.BatchTracker`'s job, the same for every system.
Calls are few by design: one command submits a whole round, one query asks
about every job of a run, so the cost of watching a run does not grow with its
number of jobs (docs/batch.md, "Tracking").
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from treadle.errors import BatchError


class State(enum.Enum):
    """Where the scheduler says a job is; its own word is kept in :attr:`Observation.word`."""

    PENDING = "pending"  # queued (or requeued), not running
    RUNNING = "running"
    HELD = "held"  # held by a user, an administrator or a policy: will not start by itself
    ENDED = "ended"  # finished, failed, cancelled or killed: the word says which
    GONE = "gone"  # the scheduler no longer knows the job


@dataclass(frozen=True, slots=True)
class Request:
    """Resources asked of the scheduler for one job; ``None`` means "not asked".

    Memory and disk in MB, wall time in seconds. ``procs`` is the number of
    MPI processes (tasks) the cores are split over.
    """

    cores: int | None = None
    memory: int | None = None
    disk: int | None = None
    gpus: int | None = None
    wall: int | None = None
    procs: int | None = None


@dataclass(frozen=True, slots=True)
class BatchJob:
    """One job to submit.

    ``tag`` names the run (all its jobs share it, so one query finds them);
    ``script`` is the path of the script the job runs; ``workdir`` the directory
    it starts in; ``options`` the user's extra submit options, already split
    (``-B``, ``BATCH_OPTIONS``); ``log`` where the scheduler writes the job's
    stdout and stderr; ``inputs`` the files a system without a shared
    filesystem must transfer (HTCondor); ``comment`` a short label stored with
    the job (the engine's handle), which comes back in observations.
    """

    tag: str
    script: str
    workdir: str
    request: Request = Request()
    options: tuple[str, ...] = ()
    log: str | None = None
    inputs: tuple[str, ...] = ()
    comment: str = ""


@dataclass(frozen=True, slots=True)
class Observation:
    """What one look at the scheduler (or a job's status file, or a log event) said about one job.

    ``native`` is the scheduler's id (``1234``, ``1234_7``, ``56.3``); ``label``
    the job's comment when the source knows it (status files and recovery
    queries do), else ``""``. ``word`` is the scheduler's own state name
    (``COMPLETED``, ``TIMEOUT``, ``NODE_FAIL``...), ``reason`` its pending or
    hold reason. ``exit`` and ``signal`` are set for an ended job when known;
    ``hold_code`` and ``hold_subcode`` for HTCondor holds. Times are Unix
    seconds. ``usage`` carries measured resources (``cpu`` seconds, ``rss`` MB).
    """

    native: str
    state: State
    word: str = ""
    reason: str = ""
    label: str = ""
    host: str = ""
    exit: int | None = None
    signal: int | None = None
    hold_code: int | None = None
    hold_subcode: int | None = None
    start: float | None = None
    end: float | None = None
    usage: Mapping[str, float] = field(default_factory=dict)


# What submit() returns for each job, in order: its native id, or why it was refused.
Submitted = str | BatchError


class BatchSystem(Protocol):
    """One batch system. Every method makes at most a few commands, whatever the job count."""

    name: str  # "local", "slurm", "condor"

    def submit(self, jobs: Sequence[BatchJob]) -> list[Submitted]:
        """Submit a round of jobs; for each, in order, its native id or the error that refused it."""
        ...

    def harvest(self) -> list[Observation]:
        """Cheap, every wait tick: news that needs no scheduler query (status files, the user log)."""
        ...

    def poll(self, tag: str) -> list[Observation]:
        """One scheduler query for every job of the run named ``tag``."""
        ...

    def final(self, ids: Sequence[str]) -> list[Observation]:
        """One query for how these jobs, gone from :meth:`poll`, ended (accounting, history)."""
        ...

    def cancel(self, ids: Sequence[str]) -> None:
        """One command that cancels all these jobs; does not wait for them to end."""
        ...

    def cancel_tag(self, tag: str) -> None:
        """Cancel every job of the run named ``tag`` (abort)."""
        ...
