"""The worker factory: keep as many workers as a manager's tasks need.

Each round asks the manager for its ``queue_status`` (the query
``work_queue_status`` sends, so the reference manager and treadle's both
answer it; or, inside ``treadle run -T wq --factory``, a callable that reads
the manager directly) and the provider for the state of every worker job, in
one query each, then:

1. forgets jobs that ended;
2. sets the target: the manager's ``workers_wanted`` when it publishes one,
   else enough workers for the waiting and running tasks, within the bounds;
3. grows: below the target, submits up to ``workers_per_cycle`` workers in ONE
   provider submission;
4. shrinks: above the target, cancels pending and held jobs, newest first.
   They hold no work. Running workers are never cancelled for a lower target:
   they leave by themselves after ``-t`` idle seconds. Above ``max_workers``
   the newest go, pending ones first;
5. notices a crash loop: when three jobs in a row end within 30 s of starting
   and no worker joined the manager meanwhile, submission pauses (30 s,
   doubling to 10 min) with one loud line naming the last job's log.

The period between rounds adapts, so the start order of manager and factory
costs nothing: 0.5 s while the manager is unreachable (for a minute, then the
interval), 0.5 s again whenever its answer changes, doubling up to the
interval while it does not. :meth:`Factory.wake` starts a round at once (an
in-process manager calls it when tasks are submitted). On stop, every job is
cancelled and the factory waits (up to 30 s) until the provider says they are
gone (docs/batch.md).
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from treadle.errors import BatchError, TreadleError, UsageError
from treadle.queue import protocol as wp
from treadle.queue.providers import get_provider
from treadle.queue.providers.base import JobState, Provider, WorkerSpec
from treadle.queue.status import query_catalog, query_status

log = logging.getLogger("treadle.factory")

FAST_PERIOD = 0.5  # seconds between rounds while something changes
UNREACHABLE_FAST = 60.0  # seconds of fast rounds for an unreachable manager, then the interval
MIN_GAP = 0.2  # seconds between two rounds however often the factory is woken
QUICK_EXIT = 30.0  # a job ending this soon after it started, with no worker joining, is a quick exit
QUICK_EXITS = 3  # quick exits in a row that make a crash loop
PAUSE_FIRST, PAUSE_MAX = 30.0, 600.0  # the crash-loop pause, doubling
SUBMIT_BACKOFF_MAX = 60.0  # a refused submission is retried after 1, 2, 4 ... s up to this
STOP_WAIT = 30.0  # seconds the factory waits, when stopping, for its jobs to be gone

ENDED = (JobState.DONE, JobState.FAILED)
WAITING = (JobState.PENDING, JobState.HELD)


@dataclass
class FactoryConfig:
    """What the factory keeps: the bounds, and what each worker is told.

    The manager is ``host``/``port``, or (``project`` and ``catalog``) the one
    a catalog server lists under a name matching ``project``. Workers connect
    to ``manager_host`` when given (the manager's address as the nodes see
    it), else to ``host``.
    """

    host: str = ""
    port: int = 0
    project: str | None = None
    catalog: str | None = None
    manager_host: str | None = None
    min_workers: int = 0
    max_workers: int = 10
    workers_per_cycle: int = 10
    tasks_per_worker: int | None = None  # default: the worker's cores
    password_file: str | None = None
    cores: int | None = None
    memory: int | None = None
    disk: int | None = None
    gpus: int | None = None
    wall_time: int | None = None
    worker_timeout: float = 60.0  # idle (and connect) timeout passed to each worker
    workdir: str | None = None
    tls_ca: str | None = None  # the manager speaks TLS; trust certificates from this CA file
    interval: float = 5.0
    options: tuple[str, ...] = ()  # the batch system's submit options (-B), already split
    worker_command: str = "bundle"
    worker_python: str = "python3"
    batch_dir: str | None = None
    allow_loopback: bool = False
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.min_workers > self.max_workers:
            raise UsageError("--min-workers is larger than --max-workers")
        if not self.project and not self.host:
            raise UsageError("give the manager as HOST PORT, or -M NAME with --catalog HOST:PORT")
        if self.project and not self.catalog:
            raise UsageError("-M NAME needs --catalog HOST:PORT")
        if self.password_file:
            self.password_file = os.path.abspath(self.password_file)

    def worker_args(self) -> list[str]:
        """The worker's options, the manager last; resources travel in the :class:`WorkerSpec`."""
        args = ["-t", f"{self.worker_timeout:g}"]
        if self.password_file:
            args += ["-P", self.password_file]
        if self.workdir:
            args += ["-s", self.workdir]
        if self.tls_ca:
            args += ["--tls-ca", self.tls_ca]
        args += self.extra_args
        if self.project and self.catalog:
            return args + ["-M", self.project, "-C", self.catalog]
        return args + [self.manager_host or self.host, str(self.port)]

    def spec(self) -> WorkerSpec:
        """What every worker of this factory is."""
        return WorkerSpec(
            args=tuple(self.worker_args()), cores=self.cores, memory=self.memory, disk=self.disk,
            gpus=self.gpus, wall=self.wall_time, options=self.options,
            files=(self.password_file,) if self.password_file else (),
            command=self.worker_command, python=self.worker_python)

    @property
    def where(self) -> str:
        """The manager, as messages name it."""
        return f"{self.project} (catalog {self.catalog})" if self.project else f"{self.host}:{self.port}"


def build_provider(kind: str, config: FactoryConfig) -> Provider:
    """The provider for ``-T kind`` with its batch directory.

    Local workers keep their scripts and logs in a fresh temporary directory
    unless told otherwise; the others default to ``treadle-factory.<id>`` in the
    current directory, which on a cluster is usually on the filesystem the
    nodes share.
    """
    if kind == "local":
        return get_provider(kind, batch_dir=config.batch_dir)
    batch_dir = config.batch_dir or os.path.abspath(f"treadle-factory.{uuid.uuid4().hex[:8]}")
    return get_provider(kind, batch_dir=batch_dir, manager_host=config.manager_host or config.host or None,
                        allow_loopback=config.allow_loopback)


def batch_options_for(kind: str, text: str | None) -> tuple[str, ...]:
    """``-B`` in the words of ``kind``: sbatch options (shell-split, treadle's own refused) or
    HTCondor submit lines (``\\n`` starts a new one); local workers take none."""
    if not text:
        return ()
    if kind == "slurm":
        from treadle.batch.slurm import check_options, split_options

        options = split_options(text)
        check_options(options)
        return options
    if kind == "condor":
        from treadle.batch.condor import description_lines

        return description_lines(text)
    raise UsageError(f"-B is for batch systems; -T {kind} workers take no submit options")


@dataclass
class _Job:
    """A worker job the factory watches."""

    id: str
    submitted: float
    joined: int  # the manager's workers_joined when the job was submitted
    state: JobState = JobState.PENDING
    started: float | None = None  # the first round that saw it running
    seen: float = 0.0  # the last round that saw it


class Factory:
    """Sizes a pool of worker jobs to a manager's queue (see the module docstring)."""

    def __init__(self, config: FactoryConfig, provider: Provider,
                 status: Callable[[], Mapping[str, Any]] | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.provider = provider
        self.jobs: list[_Job] = []  # oldest first
        self.started = 0  # workers submitted so far
        self.period = min(FAST_PERIOD, config.interval)
        self._spec = config.spec()
        self._clock = clock
        self._leaving: set[str] = set()  # cancelled, not yet seen gone
        self._password: bytes | None = None
        if config.password_file:
            with open(config.password_file, "rb") as f:
                self._password = f.read()
        self._status = status or self._query
        self._unreachable_since: float | None = None
        self._answer: tuple[int, int | None] | None = None
        self._joined = 0
        self._quick = 0
        self._pause = PAUSE_FIRST
        self._paused_until = 0.0
        self._submit_backoff = 0.0
        self._said: str | None = None  # the last warning, so a repeated one is not printed again
        self._wake = threading.Event()
        self._stop = threading.Event()

    # ---------------------------------------------------------------- manager
    def _query(self) -> Mapping[str, Any]:
        """The manager's ``queue_status``; in catalog mode the catalog only says where it is
        (its own record there is up to a minute old)."""
        c = self.config
        host, port = c.host, c.port
        if c.project and c.catalog:
            found = [r for r in query_catalog(c.catalog) if re.fullmatch(c.project, str(r.get("project", "")))]
            if not found:
                raise OSError(f"the catalog lists no manager named {c.project}")
            host, port = str(found[0].get("address") or found[0].get("name")), _count(found[0], "port")
        reply = query_status(host, port, self._password, tls_ca=c.tls_ca)
        return reply[0] if reply and isinstance(reply[0], dict) else {}

    def _ask_manager(self, now: float) -> Mapping[str, Any] | None:
        try:
            status = self._status()
        except (OSError, wp.ProtocolError, TreadleError) as e:
            log.info("manager %s not reachable: %s", self.config.where, e)
            if self._unreachable_since is None:  # once per outage: the factory asks every few seconds
                why = getattr(e, "strerror", None) or str(e)
                _warn(f"factory: warning: cannot reach manager {self.config.where} ({why}); keeping "
                      f"{self.config.min_workers} workers (--min-workers) until it answers")
                self._unreachable_since = now
            return None
        if self._unreachable_since is not None:
            _warn(f"factory: manager {self.config.where} answers again")
            self._unreachable_since = None
        return status

    def target(self, status: Mapping[str, Any] | None) -> int:
        """Workers wanted, within bounds: the number the manager publishes as
        ``workers_wanted`` when it does (an All-Pairs run knows its best pool size
        while only a few of its blocks are queued), else enough workers for the
        waiting plus dispatched tasks, ``tasks_per_worker`` (default: the
        worker's cores) each."""
        c = self.config
        if status is None:  # manager not reachable: keep the minimum only
            return c.min_workers
        if "workers_wanted" in status:
            wanted = _count(status, "workers_wanted")
        else:
            tasks = _count(status, "tasks_waiting") + _count(status, "tasks_on_workers")
            wanted = math.ceil(tasks / max(1, c.tasks_per_worker or c.cores or 1))
        return max(c.min_workers, min(c.max_workers, wanted))

    # ---------------------------------------------------------------- a round
    def step(self) -> None:
        """One round: ask the manager and the provider, forget, grow or shrink; set the next period."""
        now = self._clock()
        status = self._ask_manager(now)
        self._adapt_period(now, status)
        if status is not None:
            joined = _count(status, "workers_joined")
            if joined < self._joined:  # another manager on the same address: count afresh
                for job in self.jobs:
                    job.joined = min(job.joined, joined)
            self._joined = joined
        try:
            states = self.provider.status([j.id for j in self.jobs] + sorted(self._leaving))
        except BatchError as e:
            self._warn_once(f"factory: warning: cannot ask {self.provider.name} about the workers: {e}")
            return
        self._leaving = {i for i in self._leaving if states.get(i, JobState.DONE) not in ENDED}
        self._forget(now, states)
        target = self.target(status)
        if len(self.jobs) < target:
            self._grow(now, target)
        elif status is None:  # no answer is no reason to drop waiting workers; the maximum still holds
            self._shrink(max(target, min(len(self.jobs), self.config.max_workers)))
        elif len(self.jobs) > target:
            self._shrink(target)

    def _adapt_period(self, now: float, status: Mapping[str, Any] | None) -> None:
        interval = self.config.interval
        if status is None:
            self._answer = None
            fast = self._unreachable_since is not None and now - self._unreachable_since < UNREACHABLE_FAST
            self.period = FAST_PERIOD if fast else interval
        else:
            wanted = _count(status, "workers_wanted") if "workers_wanted" in status else None
            answer = (_count(status, "tasks_waiting"), wanted)
            self.period = FAST_PERIOD if answer != self._answer else self.period * 2
            self._answer = answer
        self.period = min(self.period, interval)

    def _forget(self, now: float, states: Mapping[str, JobState]) -> None:
        """Drop ended jobs; count the ones that ended at once (a crash loop pauses submission)."""
        kept = []
        for job in self.jobs:
            state = states.get(job.id, JobState.DONE)
            if state is JobState.RUNNING and job.started is None:
                job.started = now
            if state not in ENDED:
                job.state, job.seen = state, now
                kept.append(job)
                continue
            began = job.started if job.started is not None else max(job.seen, job.submitted)
            if now - began < QUICK_EXIT and self._joined <= job.joined:
                self._quick += 1
                if self._quick >= QUICK_EXITS and now >= self._paused_until:
                    self._pause_submission(now, job)
            else:  # a worker that served: a later loop starts again with a short pause
                self._quick, self._pause = 0, PAUSE_FIRST
        self.jobs = kept

    def _pause_submission(self, now: float, last: _Job) -> None:
        where = self.provider.log_path(last.id) or f"job {last.id}"
        _warn(f"factory: worker jobs exit at once; see {where} (no new workers for {self._pause:g} s)")
        self._paused_until = now + self._pause
        self._pause = min(PAUSE_MAX, self._pause * 2)
        self._quick = 0

    def _grow(self, now: float, target: int) -> None:
        if now < self._paused_until:
            return
        have = len(self.jobs)
        count = min(target - have, self.config.workers_per_cycle)
        try:
            ids = self.provider.submit(self._spec, count)
        except BatchError as e:
            self._submit_backoff = min(SUBMIT_BACKOFF_MAX, max(1.0, self._submit_backoff * 2))
            self._warn_once(f"factory: warning: could not submit workers: {e}")
            self._paused_until = now + self._submit_backoff
            return
        self._submit_backoff = 0.0
        self._said = None
        self.jobs += [_Job(i, now, self._joined, seen=now) for i in ids]
        self.started += len(ids)
        _say(f"factory: submitted {len(ids)} workers as {_ids_text(ids)} ({len(self.jobs)}/{target})")

    def _shrink(self, target: int) -> None:
        """Cancel waiting jobs, newest first, down to the target; above the maximum, running ones too."""
        excess = len(self.jobs) - target
        newest_first = self.jobs[::-1]
        waiting = [j for j in newest_first if j.state in WAITING][:excess]
        over_max = len(self.jobs) - len(waiting) - self.config.max_workers
        running = [j for j in newest_first if j.state not in WAITING][:max(0, over_max)]
        going = waiting + running
        if not going:
            return
        try:
            self.provider.cancel([j.id for j in going])
        except BatchError as e:
            self._warn_once(f"factory: warning: cannot cancel workers: {e}")
            return
        self._leaving.update(j.id for j in going)
        ids = {j.id for j in going}
        self.jobs = [j for j in self.jobs if j.id not in ids]
        if waiting:
            _say(f"factory: cancelled {len(waiting)} pending workers (target {target})")
        if running:
            _say(f"factory: cancelled {len(running)} workers above the maximum "
                 f"({self.config.max_workers})")

    def _warn_once(self, line: str) -> None:
        """A warning that repeats every round is printed once, until another one replaces it."""
        if self._said != line:
            _warn(line)
            self._said = line

    # ---------------------------------------------------------------- the loop
    def wake(self) -> None:
        """Start a round now (a manager in this process calls it when tasks are submitted).

        A full pool cannot grow, so then the call does nothing: a run submitting
        thousands of tasks does not turn into thousands of scheduler queries.
        """
        if len(self.jobs) < self.config.max_workers:
            self._wake.set()

    def stop(self) -> None:
        """Make :meth:`run` cancel the pool and return (safe from a signal handler or another thread)."""
        self._stop.set()
        self._wake.set()

    def run(self) -> None:
        """Rounds until :meth:`stop`; then cancel every job, wait until they are gone, close the provider."""
        try:
            while not self._stop.is_set():
                began = self._clock()
                self.step()
                self._wake.wait(self.period)
                self._wake.clear()
                rest = MIN_GAP - (self._clock() - began)
                if rest > 0 and not self._stop.is_set():
                    self._stop.wait(rest)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        ids = [j.id for j in self.jobs] + sorted(self._leaving)
        if ids:
            try:
                self.provider.cancel(ids)
            except BatchError as e:  # close() below cancels by name once more
                _warn(f"factory: warning: cannot cancel the workers: {e}")
            _say(f"factory: stopping, cancelled {len(self.jobs)} workers")
        deadline = self._clock() + STOP_WAIT
        while ids and self._clock() < deadline:
            try:
                states = self.provider.status(ids)
            except BatchError:
                states = {}
            ids = [i for i in ids if states.get(i) not in ENDED]
            if ids:
                time.sleep(0.2)
        if ids:
            _warn(f"factory: warning: {len(ids)} worker jobs still listed after {STOP_WAIT:g} s: "
                  f"{_ids_text(ids)}")
        self.jobs, self._leaving = [], set()
        try:
            self.provider.close()
        except BatchError as e:
            _warn(f"factory: warning: {self.provider.name} did not cancel the last workers: {e}")


# ------------------------------------------------------------------ --factory
# `treadle run -T wq --factory KIND:key=value,...`: key -> (FactoryConfig field, type)
FACTORY_KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "min": ("min_workers", int), "max": ("max_workers", int),
    "per-cycle": ("workers_per_cycle", int), "tasks-per-worker": ("tasks_per_worker", int),
    "cores": ("cores", int), "memory": ("memory", int), "disk": ("disk", int),
    "gpus": ("gpus", int), "wall": ("wall_time", int), "timeout": ("worker_timeout", float),
    "interval": ("interval", float), "host": ("manager_host", str),
    "command": ("worker_command", str), "python": ("worker_python", str),
    "batch-dir": ("batch_dir", str),
}
KINDS = ("local", "slurm", "condor")


def parse_factory_option(text: str) -> tuple[str, dict[str, Any]]:
    """``slurm:max=20,cores=4`` -> ``("slurm", {"max_workers": 20, "cores": 4})``.

    The values are :class:`FactoryConfig` fields; ``loopback`` (no value)
    sets ``allow_loopback``. A mistake raises :class:`UsageError` naming it.
    """
    kind, _, rest = text.partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise UsageError(f"--factory {text!r}: the batch type must be one of {', '.join(KINDS)}")
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, raw = (s.strip() for s in item.partition("="))
        if key == "loopback" and not eq:
            values["allow_loopback"] = True
            continue
        if key not in FACTORY_KEYS or not eq or not raw:
            known = ", ".join([*FACTORY_KEYS, "loopback"])
            raise UsageError(f"--factory {text!r}: {item!r} is not KEY=VALUE with a key among {known}")
        field, kind_of = FACTORY_KEYS[key]
        try:
            value = kind_of(raw)
        except ValueError:
            raise UsageError(f"--factory {text!r}: {key} wants a number, not {raw!r}") from None
        if kind_of is not str and value < 0:
            raise UsageError(f"--factory {text!r}: {key} cannot be negative")
        values[field] = value
    return kind, values


# ------------------------------------------------------------------ helpers
def _count(status: Mapping[str, Any], key: str) -> int:
    try:
        return max(0, int(status.get(key, 0)))
    except (TypeError, ValueError):
        return 0


def _ids_text(ids: list[str]) -> str:
    """``1234`` for the elements of one array (``1234_0 1234_1``), else the ids joined by commas."""
    arrays = {i.partition("_")[0] for i in ids}
    if len(arrays) == 1 and all("_" in i for i in ids):
        return arrays.pop()
    return ",".join(ids)


def _say(line: str) -> None:
    print(line, flush=True)


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


