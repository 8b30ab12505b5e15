"""Workers as HTCondor jobs: the factory's provider for ``-T condor``.

One ``condor_submit`` per submission queues ``count`` identical workers as one
cluster (``queue <count>``). The worker zipapp is the job's executable (it
starts with ``#!/usr/bin/env python3``) and the password file travels in
``transfer_input_files``, so nothing is installed on the nodes and nothing
secret is written into a description. Each worker offers the manager what its
slot really has: ``--cores $$([TARGET.Cpus])`` and the like are filled in by
HTCondor when the job is matched, since a slot may be larger than asked.

Worker states come from the provider's user log, which costs no scheduler
query; ``condor_q`` (then ``condor_history``) is asked only about jobs the log
has said nothing of for a while (docs/batch.md). HTCondor pools run workers
on other machines, so a loopback manager address is refused unless the user
says otherwise (``allow_loopback``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Sequence

from treadle.batch.base import Observation, State
from treadle.batch.condor import (
    CondorSystem,
    Runner,
    batch_name,
    check_options,
    validate,
    wall_hold_lines,
)
from treadle.errors import UsageError
from treadle.queue.bundle import write_bundle
from treadle.queue.providers.base import WALL_MARGIN, JobState, WorkerSpec, is_loopback

DEFAULT_CORES = 1
DEFAULT_MEMORY = 512  # MB, as the reference's condor workers
DEFAULT_DISK = 1024  # MB

SLOT_OPTIONS = ("--cores", "$$([TARGET.Cpus])", "--memory", "$$([TARGET.Memory])",
                "--disk", "$$([TARGET.Disk/1024])")
"""What the worker offers: the matched slot's cores, memory (MB) and disk (KB in the slot ad, MB here)."""

_LIVE = (JobState.PENDING, JobState.RUNNING, JobState.HELD)

QUIET_AFTER = 30.0
"""Seconds a live job may go unmentioned in the user log before ``condor_q`` is asked about it."""


def quote_arguments(args: Iterable[str]) -> str:
    """``args`` in the submit language's quoted form: ``"a 'b c' 'it''s'"``.

    Each argument with a space or a quote is put in single quotes (a single
    quote doubled inside); double quotes are doubled; the whole is in double
    quotes. No shell is involved.
    """
    words = []
    for arg in args:
        text = arg.replace('"', '""')
        if not arg or any(c in arg for c in " \t'\""):
            text = "'" + text.replace("'", "''") + "'"
        words.append(text)
    return '"' + " ".join(words) + '"'


def render_worker_description(spec: WorkerSpec, *, executable: str, transfer_executable: bool,
                              program_args: Sequence[str], inputs: Sequence[str], user_log: str,
                              name: str, log_dir: str, requirements: str | None, count: int) -> str:
    """The description that queues ``count`` workers of ``spec`` as one cluster.

    ``program_args`` come before the worker's own options (the zipapp's name
    when an interpreter runs it); ``inputs`` are transferred to the sandbox,
    and the arguments name them by their base names.
    """
    moved = {path: os.path.basename(path) for path in spec.files}
    args = [*program_args, *SLOT_OPTIONS]
    if spec.gpus:
        args += ["--gpus", str(spec.gpus)]
    if spec.wall is not None:
        args += ["--wall-time", str(max(1, spec.wall - WALL_MARGIN))]
    args += [moved.get(a, a) for a in spec.args]
    lines = [
        "universe = vanilla",
        f"executable = {executable}",
        f"transfer_executable = {'true' if transfer_executable else 'false'}",
        f"arguments = {quote_arguments(args)}",
        "should_transfer_files = YES",
        "when_to_transfer_output = ON_EXIT",
    ]
    if inputs:
        lines.append(f"transfer_input_files = {','.join(inputs)}")
    lines += [
        f"log = {user_log}",
        f"batch_name = {name}",
        f"output = {log_dir}/$(Cluster).$(Process).out",
        f"error = {log_dir}/$(Cluster).$(Process).err",
        f"request_cpus = {spec.cores or DEFAULT_CORES}",
        f"request_memory = {spec.memory or DEFAULT_MEMORY}",
        f"request_disk = {(spec.disk or DEFAULT_DISK) * 1024}",
    ]
    if spec.gpus:
        lines.append(f"request_gpus = {spec.gpus}")
    if spec.wall is not None:
        lines += wall_hold_lines(str(spec.wall))
    lines += ["notification = never", "getenv = false"]
    if requirements:
        lines.append(f"requirements = {requirements}")
    lines += [line.strip() for line in spec.options if line.strip()]
    lines.append(f"queue {count}")
    return "\n".join(lines) + "\n"


def _job_state(seen: Observation, cancelled: bool) -> JobState:
    if seen.state is State.ENDED:
        if seen.word == "COMPLETED" or (cancelled and seen.word in ("ABORTED", "REMOVED")):
            return JobState.DONE
        return JobState.FAILED
    return {State.PENDING: JobState.PENDING, State.RUNNING: JobState.RUNNING,
            State.HELD: JobState.HELD}.get(seen.state, JobState.DONE)


class CondorProvider:
    """Starts workers as HTCondor clusters; ``batch_dir`` holds descriptions, the user log and job logs."""

    name = "condor"

    def __init__(self, batch_dir: str, *, manager_host: str | None = None, allow_loopback: bool = False,
                 requirements: str | None = None, runner: Runner | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if manager_host and not allow_loopback and is_loopback(manager_host):
            raise UsageError(f"HTCondor runs workers on other machines, which cannot reach a manager at "
                             f"{manager_host} (a loopback address): give --manager-host with an address "
                             "the pool reaches, or --allow-loopback")
        self._dir = os.path.abspath(batch_dir)
        os.makedirs(os.path.join(self._dir, "logs"), exist_ok=True)
        self._tag = f"workers-{uuid.uuid4().hex[:8]}"
        self._requirements = requirements
        self._system = CondorSystem(self._dir, os.path.join(self._dir, "workers.log"),
                                    requirements=requirements, getenv="none", runner=runner)
        self._clock = clock
        self._states: dict[str, JobState] = {}
        self._heard: dict[str, float] = {}  # id -> when the log (or condor_q) last said something of it
        self._cancelled: set[str] = set()
        self._checked: set[WorkerSpec] = set()
        self._bundle: str | None = None
        self._submissions = 0

    @property
    def batch_name(self) -> str:
        """The ``JobBatchName`` of this provider's jobs (``condor_q -batch`` shows it)."""
        return batch_name(self._tag)

    def description(self, spec: WorkerSpec, count: int) -> str:
        """The description one :meth:`submit` of ``count`` workers of ``spec`` hands to condor_submit."""
        inputs = [os.path.abspath(f) for f in spec.files]
        program = shlex.split(spec.command) if spec.command != "bundle" else []
        if spec.command == "bundle" and spec.python == "python3":
            executable, transfer, program_args = self._bundle_path(), True, []
        elif spec.command == "bundle":  # another interpreter on the nodes runs the transferred zipapp
            inputs.append(self._bundle_path())
            executable, transfer = "/usr/bin/env", False
            program_args = [*shlex.split(spec.python), os.path.basename(self._bundle_path())]
        elif shutil.which(program[0]):  # a program here, such as work_queue_worker: it travels too
            executable, transfer, program_args = str(shutil.which(program[0])), True, program[1:]
        else:  # a program only the nodes have
            executable, transfer, program_args = "/usr/bin/env", False, program
        return render_worker_description(
            spec, executable=executable, transfer_executable=transfer, program_args=program_args,
            inputs=inputs, user_log=self._system.user_log, name=self.batch_name,
            log_dir=self._system.log_dir, requirements=self._requirements, count=count)

    def _bundle_path(self) -> str:
        if self._bundle is None:
            self._bundle = str(write_bundle(os.path.join(self._dir, "treadle-worker.pyz")))
        return self._bundle

    def submit(self, spec: WorkerSpec, count: int) -> list[str]:
        """One ``condor_submit`` queueing ``count`` workers; their ids ``C.0`` ... ``C.<count-1>``.

        A ``-B`` line that sets a key treadle owns, or that HTCondor's bindings
        cannot parse, raises :class:`UsageError` before anything is submitted;
        a refusal by condor_submit raises :class:`~treadle.errors.BatchError`.
        """
        text = self.description(spec, count)
        if spec not in self._checked:
            check_options(spec.options)
            validate(text, [])
            self._checked.add(spec)
        self._submissions += 1
        path = os.path.join(self._dir, f"workers-{self._submissions}.sub")
        with open(path, "w") as f:
            f.write(text)
        ids = self._system.submit_file(path, self._dir, count)
        now = self._clock()
        for native in ids:
            self._states[native] = JobState.PENDING
            self._heard[native] = now
        return ids

    def status(self, ids: Iterable[str]) -> dict[str, JobState]:
        """From the user log; ``condor_q`` (and ``condor_history``) only for live jobs it is quiet about."""
        wanted = list(ids)
        now = self._clock()
        for seen in self._system.harvest():
            self._note(seen, now)
        quiet = [i for i in wanted if self._states.get(i) in _LIVE and now - self._heard[i] > QUIET_AFTER]
        if quiet:
            self._ask_scheduler(quiet, now)
        return {i: self._states.get(i, JobState.DONE) for i in wanted}

    def _ask_scheduler(self, quiet: list[str], now: float) -> None:
        listed = {o.native: o for o in self._system.poll(self._tag)}
        for seen in listed.values():
            self._note(seen, now)
        gone = [i for i in quiet if i not in listed]
        for seen in self._system.final(gone):
            self._note(seen, now)

    def _note(self, seen: Observation, now: float) -> None:
        if seen.native not in self._states:
            return  # another provider's job, or one submitted before a restart
        self._states[seen.native] = _job_state(seen, seen.native in self._cancelled)
        self._heard[seen.native] = now

    def cancel(self, ids: Iterable[str]) -> None:
        """One ``condor_rm`` for all these jobs; does not wait."""
        wanted = list(ids)
        self._cancelled.update(wanted)
        self._system.cancel(wanted)

    def close(self) -> None:
        """Remove every job of this provider (one ``condor_rm -constraint``)."""
        live = [i for i, state in self._states.items() if state in _LIVE]
        self._cancelled.update(live)
        if live:
            self._system.cancel_tag(self._tag)

    def log_path(self, id: str) -> str | None:  # noqa: A002 - the contract's name
        """The job's stderr file, where the worker writes why it stopped."""
        return self._system.log_paths(id)[1]

