"""The contract between the DAG engine and whatever runs its jobs.

::

    engine ──submit(Job)──────────▶ Backend ──▶ processes / Work Queue / Slurm / HTCondor
    engine ◀──wait(timeout)─JobResult──┘
    engine ──cancel(job_id), close()──▶

A backend runs commands; it knows nothing about the DAG, the journal or
retries. ``submit`` returns at once with the backend's id for the job (the pid
for local jobs, the task id for Work Queue); ``wait`` returns the next finished
job, or ``None`` when ``timeout`` passes first. Files named in ``Job.inputs``
exist in the workflow's directory before submission; after a successful job
the backend has placed ``Job.outputs`` there (a backend without a sandbox runs
the command in that directory, so it has nothing to move). Checking that the
outputs really exist is the engine's job, the same for every backend.

A job's output never reaches the engine's own stdout or stderr: the backend
writes the job's stdout and stderr to the files named by ``Job.stdout`` and
``Job.stderr`` (capped as :mod:`treadle.backends.logs` says; a stream with no
file is discarded), and ``JobResult`` names the files it wrote.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

# The contract owns resource requests: a job carries them, and the workflow model
# (treadle.flow.model) builds them from rules and categories.
RESOURCE_NAMES = ("cores", "memory", "disk", "gpus", "wall_time", "mpi_processes")


@dataclass(frozen=True, slots=True)
class Resources:
    """Resource requests. ``None`` means "not declared" (it is not counted when packing).

    Units follow Makeflow: memory and disk in MB, wall time in seconds. Frozen,
    so one instance can be shared by every rule that declares the same values.
    """

    cores: int | None = None
    memory: int | None = None
    disk: int | None = None
    gpus: int | None = None
    wall_time: int | None = None
    mpi_processes: int | None = None

    def overlaid(self, *fallbacks: Resources) -> Resources:
        """Each field from ``self`` if declared, else from the first fallback that declares it."""
        merged = {}
        for f in RESOURCE_NAMES:
            value = getattr(self, f)
            for fb in fallbacks:
                if value is not None:
                    break
                value = getattr(fb, f)
            merged[f] = value
        return Resources(**merged)

    def declared(self) -> dict[str, int]:
        """The declared fields only, by name."""
        return {f: v for f in RESOURCE_NAMES if (v := getattr(self, f)) is not None}

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))


NO_RESOURCES = Resources()


@dataclass(frozen=True, slots=True)
class FileSpec:
    """A file as the workflow names it and as the task's sandbox names it."""

    dag_name: str
    task_name: str


@dataclass(frozen=True, slots=True)
class Job:
    """One command to run, with everything a backend needs and nothing it does not."""

    rule_id: int
    command: str
    inputs: tuple[FileSpec, ...] = ()
    outputs: tuple[FileSpec, ...] = ()
    resources: Resources = NO_RESOURCES
    environment: Mapping[str, str] = field(default_factory=dict)
    category: str = "default"
    batch_options: str | None = None
    stdout: str | None = None  # file for the job's stdout; None: discarded
    stderr: str | None = None  # file for the job's stderr; None: discarded


@dataclass(frozen=True, slots=True)
class JobResult:
    """How a job ended.

    ``exit_code`` is the command's exit status when it exited; ``signal`` the
    signal number when it was killed by one (then ``exit_code`` is ``None``).
    ``error`` is set when the backend could not run the job at all (an input
    it could not send, a submission refused); the engine treats that as a
    failed attempt.

    ``stdout`` and ``stderr`` are the files that hold the job's streams, or
    ``None`` where nothing was kept. They are the same file when the backend
    can only keep the two together (Work Queue: protocol 9 sends one combined
    output). A log the backend could not write (a full disk) sets ``error``.

    Batch systems add what a user needs to find the job and to act on its
    failure: ``native`` (the scheduler's id, ``1234_7``), ``host``, ``log``
    (the scheduler's own stdout/stderr file of the job), ``reason`` (one line:
    ``TIMEOUT``, ``PartitionNodeLimit``, ``sbatch``'s message), ``hint`` (what
    to change: ``raise WALL_TIME (was 60 s)``) and ``usage`` (measured ``cpu``
    seconds, ``rss`` MB). ``retry`` is false when the same job would fail the
    same way (a wall-time kill, a refused submission): ``-r`` does not repeat it.
    """

    job_id: int
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    started: float = 0.0  # Unix time, seconds
    finished: float = 0.0
    stdout: str | None = None
    stderr: str | None = None
    native: str | None = None
    host: str | None = None
    log: str | None = None
    reason: str | None = None
    hint: str | None = None
    retry: bool = True
    usage: Mapping[str, float] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and self.signal is None and self.error is None


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """What a run tells the backend it builds: the generic facts, plus the backend's own settings.

    ``settings`` holds the options only some backend understands (Work Queue's
    port, a batch system's queue...), by option name, as the command line or a
    Python caller gave them; each backend picks its own with :func:`own_options`
    and ignores the rest, so the generic run options never grow a field per backend.
    """

    workdir: str  # the workflow's directory: job files are named relative to it
    log_path: str  # the backend's own log (Work Queue's transactions, the dry run's script)
    send_environment: bool = False  # remote jobs get the engine's whole environment
    settings: Mapping[str, Any] = field(default_factory=dict)
    dagfile: str = "Makeflow"  # the workflow file, for names derived from it (DAGFILE.batch/)
    # The run's -B: a batch backend checks it before anything is submitted (a rule's own
    # BATCH_OPTIONS arrive with its Job).
    batch_options: str | None = None
    # Names the run for a batch system: 8 hex digits, the same when the run resumes from its log,
    # so every job of the run can be found (and adopted) by one query (docs/batch.md, "Recovery").
    tag: str = ""
    first_handle: int = 1  # handles a backend invents start here: above every job id in the log
    rule_count: int = 0  # rules in the workflow (a batch backend's advice depends on the run's size)
    # --keep-logs: successful jobs' logs stay. Without it the engine removes them, so a backend
    # that writes a job's log itself may leave out an empty one of a job that exited 0.
    keep_logs: bool = False
    # --shared-fs: absolute directories the workers see at the same path; files under them never travel.
    shared_fs: tuple[str, ...] = ()
    # notify(handle, event, **fields): what a backend tells the engine about a job on the way:
    # "queued" (native=...: journalled), "running" (host=...), "requeued", "lost" (reason=...),
    # "held" (reason=...), "warning" (message=...: shown to the user).
    notify: Callable[..., None] | None = None


def on_shared_fs(path: str, shared: tuple[str, ...]) -> str | None:
    """The directory of ``shared`` that the absolute ``path`` lies under, or ``None``.

    Only absolute names can be on a shared filesystem (as in the reference):
    a relative name is the job's own, in its sandbox.
    """
    if not os.path.isabs(path):
        return None
    norm = os.path.normpath(path)
    for d in shared:
        if norm == d or norm.startswith(d.rstrip("/") + "/"):
            return d
    return None


_OptionsT = TypeVar("_OptionsT")


def own_options(cls: type[_OptionsT], settings: Mapping[str, Any]) -> _OptionsT:
    """An instance of the options dataclass ``cls`` from the settings it declares a field for."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]  # cls is a dataclass by contract
    return cls(**{k: v for k, v in settings.items() if k in names})


@runtime_checkable
class Backend(Protocol):
    """What the engine needs from an execution system.

    ``name`` is the ``-T`` value. ``sandboxed`` is true when jobs run in a
    private directory with their inputs copied in, which is what makes
    ``LOCAL->REMOTE`` renaming meaningful. ``runs_in_place`` is true when a job
    is a plain process in the workflow's directory on this machine: the engine
    may then wrap it for ``--sandbox`` and need not list its files. The class
    attributes ``default_max_remote`` (``-J`` when not given) and
    ``log_suffix`` (the default batch log is ``DAGFILE.<suffix>``) are the
    backend's defaults; ``options_type`` is the dataclass of its own settings
    (``None``: it has none); :meth:`from_options` builds it for a run.
    """

    name: str
    sandboxed: bool
    runs_in_place: bool
    default_max_remote: ClassVar[int]
    log_suffix: ClassVar[str]
    options_type: ClassVar[type | None]

    @classmethod
    def from_options(cls, config: BackendConfig) -> Backend:
        """The backend for one run, built from the run's configuration."""
        ...

    def greeting(self) -> str | None:
        """A line for the user as the run starts (where workers connect), or ``None``."""
        ...

    def submit(self, job: Job) -> int:
        """Start ``job`` and return its id; never blocks on the job itself."""
        ...

    def wait(self, timeout: float | None) -> JobResult | None:
        """The next finished job, or ``None`` if none finishes within ``timeout`` seconds."""
        ...

    def cancel(self, job_id: int) -> None:
        """Stop a running job and everything it started. Its result is not reported."""
        ...

    def close(self) -> None:
        """Release resources; cancels jobs still running."""
        ...


@runtime_checkable
class ChecksFiles(Protocol):
    """A backend class that cannot move some files a rule names, and says so before the run.

    The engine calls :meth:`check_files` for every rule the backend would run,
    before anything starts, so a name it cannot carry is one error naming the
    rule, not a failure halfway through the run.
    """

    @classmethod
    def check_files(cls, rule: str, inputs: Sequence[FileSpec], outputs: Sequence[FileSpec]) -> None:
        """Raise :class:`~treadle.errors.WorkflowError` naming ``rule`` (its ``FILE:LINE``) for a file it cannot move."""
        ...


@runtime_checkable
class Recovering(Protocol):
    """A backend that can take over jobs a previous engine of the same run left queued or running.

    ``previous`` maps each handle of a rule last logged running under this
    run's tag to the native id journalled for it (``""`` when the engine died
    before it could journal one). The backend returns the handles it adopts
    (alive at the scheduler, or already finished with a result on record); the
    engine logs those rules running under the same handle and takes their
    results from :meth:`Backend.wait`, and resets the rest as usual.
    """

    def recover(self, previous: Mapping[int, str]) -> set[int]:
        ...
