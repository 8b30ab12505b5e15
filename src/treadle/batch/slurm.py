"""Slurm: jobs submitted in bulk (arrays), watched with one query per run, cancelled in one command.

::

    submit(jobs) ──▶ one sbatch per group of equal jobs (an array, or a plain job for one)
    harvest()    ◀── status/<handle>.json, written by wrapper.sh when a job ends (no query)
    poll(tag)    ◀── one squeue for every job of the run (named treadle-<tag>)
    final(ids)   ◀── one sacct, when the cluster keeps accounting
    cancel(ids)  ──▶ one scancel

Layout under the run's batch directory: ``wrapper.sh``; ``jobs/`` (job
scripts, and ``c<n>/`` for array chunk ``n``: ``<i>.sh`` links to element
``i``'s script, ``map`` lists ``i comment``); ``status/`` and ``status/seen/``;
``logs/``. The directory must be visible at the same path on the nodes
(docs/batch.md).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from treadle.batch.base import BatchJob, Observation, Request, Submitted
from treadle.batch.slurm_answers import (
    classify,
    job_id,
    parse_accounting,
    parse_config,
    parse_queue,
    status_observation,
)
from treadle.batch.slurm_args import (
    SLURM_OWNED,
    SlurmSettings,
    check_options,
    resource_args,
    sbatch_argv,
    split_options,
)
from treadle.batch.slurm_scripts import render_job_script, render_wrapper
from treadle.errors import BatchError, TreadleError

__all__ = ["SLURM_OWNED", "Runner", "SlurmConfig", "SlurmSettings", "SlurmSystem", "check_options",
           "classify", "node_names", "render_job_script", "render_wrapper", "resource_args",
           "split_options"]

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]

# A Slurm command that has not answered in this long is stuck (an overloaded controller);
# the caller treats that as a transient error and tries again later.
COMMAND_TIMEOUT = 60.0
QUEUE_FORMAT = "%i|%T|%r|%N|%k"


def run_command(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """The default runner: the argv as is (no shell), output captured as text."""
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                          stdin=subprocess.DEVNULL, check=False)


def _checked(run: Runner, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run one command; a failure, a hang or a missing program becomes a :class:`BatchError`."""
    name = os.path.basename(argv[0])
    try:
        done = run(argv)
    except subprocess.TimeoutExpired:
        raise BatchError(f"{name} did not answer within {COMMAND_TIMEOUT:g} s", kind="transient",
                         command=tuple(argv)) from None
    except OSError as error:
        raise BatchError(f"cannot run {name}: {error.strerror or error}; is Slurm's client "
                         "installed on this host?", kind="permanent", command=tuple(argv)) from None
    if done.returncode != 0:
        raise classify(done.stderr or "", done.returncode, argv)
    return done


@dataclass(frozen=True, slots=True)
class SlurmConfig:
    """The cluster settings treadle adapts to, read once from ``scontrol show config``.

    ``max_array_size`` bounds a chunk; ``min_job_age`` (seconds) is how long
    ``squeue`` still lists a finished job, which bounds the poll interval;
    ``accounting`` says whether ``sacct`` can tell how jobs ended.
    """

    max_array_size: int = 1001
    min_job_age: int = 300
    accounting: bool = False

    @classmethod
    def read(cls, run: Runner) -> SlurmConfig:
        """One ``scontrol show config``; a setting missing from the answer keeps Slurm's default."""
        config = parse_config(_checked(run, ["scontrol", "show", "config"]).stdout)

        def first_number(key: str, default: int) -> int:
            words = config.get(key, "").split()
            return int(words[0]) if words and words[0].isdigit() else default

        storage = config.get("AccountingStorageType", "accounting_storage/none")
        defaults = cls()
        return cls(max_array_size=first_number("MaxArraySize", defaults.max_array_size),
                   min_job_age=first_number("MinJobAge", defaults.min_job_age),
                   accounting=storage not in ("", "accounting_storage/none", "(null)"))


def node_names(run: Runner = run_command) -> list[str]:
    """The cluster's node names (``sinfo -h -N``), for the factory's check of a loopback manager."""
    answer = _checked(run, ["sinfo", "-h", "-N", "-o", "%N"]).stdout.split()
    return list(dict.fromkeys(answer))


# Jobs that may share one sbatch call: equal in everything sbatch is told once per call.
_GroupKey = tuple[str, str, str | None, Request, tuple[str, ...], str | None, str | None]


class SlurmSystem:
    """Slurm behind the :class:`~treadle.batch.base.BatchSystem` interface.

    ``wrapper=True`` (the engine) runs each job script under the run's
    ``wrapper.sh``, which leaves a status file per job; ``wrapper=False`` (the
    worker factory) submits each job's script itself. Every command goes
    through ``runner``, and :attr:`commands` counts them by program name.
    """

    name = "slurm"

    def __init__(self, batch_dir: str | None, *, settings: SlurmSettings = SlurmSettings(),
                 config: SlurmConfig | None = None, runner: Runner | None = None,
                 wrapper: bool = True) -> None:
        if wrapper and batch_dir is None:
            raise ValueError("the wrapper needs a batch directory for its status files")
        self.settings = settings
        self.wrapper = wrapper
        self.commands: collections.Counter[str] = collections.Counter()
        self._runner = runner or run_command
        self._config = config
        self._next_chunk: int | None = None
        self.batch_dir = os.path.abspath(batch_dir) if batch_dir is not None else None
        if self.batch_dir is not None:
            for sub in ("jobs", "logs", os.path.join("status", "seen")):
                os.makedirs(os.path.join(self.batch_dir, sub), exist_ok=True)
            if wrapper:
                self._write(os.path.join(self.batch_dir, "wrapper.sh"),
                            render_wrapper(os.path.join(self.batch_dir, "status")))

    @property
    def config(self) -> SlurmConfig:
        """The cluster's settings, asked on first use (one ``scontrol`` call per system)."""
        if self._config is None:
            self._config = SlurmConfig.read(self._run)
        return self._config

    def _run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.commands[os.path.basename(argv[0])] += 1
        return self._runner(argv)

    @staticmethod
    def _write(path: str, text: str) -> None:
        """Write a file whole: a reader (or a node) never sees half of it."""
        temp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}")
        with open(temp, "w") as f:
            f.write(text)
        os.replace(temp, path)

    # -- submission ----------------------------------------------------------------------------

    def submit(self, jobs: Sequence[BatchJob]) -> list[Submitted]:
        """Submit a round: one ``sbatch`` per chunk of equal jobs; ids (``1234``, ``1234_7``) in order.

        A group sbatch refuses gets that error for each of its jobs, and the
        other groups still go; a job whose options treadle refuses gets a
        permanent error without any command run.
        """
        outcomes: dict[int, Submitted] = {}
        groups: dict[_GroupKey, list[int]] = {}
        for index, job in enumerate(jobs):
            groups.setdefault(self._group_key(job), []).append(index)
        limit = 1
        if len(jobs) > 1 and self.settings.array != "off":
            try:
                limit = self.settings.chunk_limit(self.config.max_array_size)
            except BatchError as error:  # scontrol failed: no job can go this round
                return [error] * len(jobs)
        for members in groups.values():
            for start in range(0, len(members), limit):
                chunk = members[start:start + limit]
                for index, outcome in zip(chunk, self._submit_chunk([jobs[i] for i in chunk]),
                                          strict=True):
                    outcomes[index] = outcome
        return [outcomes[index] for index in range(len(jobs))]

    def _group_key(self, job: BatchJob) -> _GroupKey:
        # Without the wrapper each job's script is the batch script, and the comment cannot
        # differ within an array: both then part of the key.
        alone = None if self.wrapper else job.script
        comment = None if self.wrapper else job.comment
        return (job.tag, job.workdir, job.log, job.request, job.options, alone, comment)

    def _submit_chunk(self, chunk: Sequence[BatchJob]) -> list[Submitted]:
        first = chunk[0]
        try:
            check_options(first.options)
            resource_args(first.request, self.settings)
            comment, target = self._target(chunk)
        except TreadleError as error:
            return [BatchError(str(error), kind="permanent")] * len(chunk)
        except OSError as error:  # the batch directory: full, or not writable
            return [BatchError(f"cannot write the array's scripts: {error}")] * len(chunk)
        argv = sbatch_argv(tag=first.tag, comment=comment, workdir=first.workdir,
                           output=self._log(first, array=len(chunk) > 1), request=first.request,
                           options=first.options, settings=self.settings, elements=len(chunk),
                           target=target)
        try:
            answer = _checked(self._run, argv)
        except BatchError as error:
            return [error] * len(chunk)
        native = job_id(answer.stdout)
        if native is None:
            unreadable = BatchError(f"sbatch answered {answer.stdout.strip()!r}, not a job id",
                                    command=tuple(argv), stderr=answer.stderr)
            return [unreadable] * len(chunk)
        if len(chunk) == 1:
            return [native]
        return [f"{native}_{i}" for i in range(len(chunk))]

    def _target(self, chunk: Sequence[BatchJob]) -> tuple[str, list[str]]:
        """The comment and the batch script (with its argument) for a plain job or an array."""
        if not self.wrapper:
            return chunk[0].comment, [chunk[0].script]
        assert self.batch_dir is not None  # the constructor demands one with the wrapper
        wrapper = os.path.join(self.batch_dir, "wrapper.sh")
        if len(chunk) == 1:
            return chunk[0].comment, [wrapper, os.path.abspath(chunk[0].script)]
        name, directory = self._new_chunk_dir()
        for i, job in enumerate(chunk):
            os.symlink(os.path.abspath(job.script), os.path.join(directory, f"{i}.sh"))
        self._write(os.path.join(directory, "map"),
                    "".join(f"{i} {job.comment}\n" for i, job in enumerate(chunk)))
        return name, [wrapper, directory]

    def _new_chunk_dir(self) -> tuple[str, str]:
        """A fresh ``jobs/c<n>``, numbered after any a previous engine of this run left."""
        assert self.batch_dir is not None
        jobs = os.path.join(self.batch_dir, "jobs")
        if self._next_chunk is None:
            taken = [int(entry.name[1:]) for entry in os.scandir(jobs)
                     if entry.name[:1] == "c" and entry.name[1:].isdigit()]
            self._next_chunk = max(taken, default=0) + 1
        while True:
            name = f"c{self._next_chunk}"
            self._next_chunk += 1
            try:
                os.mkdir(os.path.join(jobs, name))
            except FileExistsError:
                continue
            return name, os.path.join(jobs, name)

    def _log(self, job: BatchJob, *, array: bool) -> str | None:
        if job.log is not None:
            return job.log
        if self.batch_dir is None:
            return None  # Slurm's own default, slurm-<id>.out in the working directory
        return os.path.join(self.batch_dir, "logs", "%A_%a.out" if array else "%j.out")

    # -- watching ------------------------------------------------------------------------------

    def harvest(self) -> list[Observation]:
        """Status files written since the last call, each read once and moved into ``status/seen/``."""
        if self.batch_dir is None or not self.wrapper:
            return []
        status = os.path.join(self.batch_dir, "status")
        found = []
        with os.scandir(status) as entries:
            fresh = [entry.name for entry in entries
                     if entry.name.endswith(".json") and not entry.name.startswith(".")]
        for name in fresh:
            path = os.path.join(status, name)
            try:
                with open(path) as f:
                    data = json.loads(f.read(), strict=False)
            except (OSError, ValueError):
                data = None  # unreadable: set aside below so it is not read again
            observation = status_observation(data) if isinstance(data, dict) else None
            if observation is not None:
                found.append(observation)
            with contextlib.suppress(FileNotFoundError):  # another reader took it meanwhile
                os.replace(path, os.path.join(status, "seen", name))
        return found

    def _queue(self, tag: str, every_state: bool) -> list[Observation]:
        states = ["-t", "all"] if every_state else []
        argv = ["squeue", "--me", "-h", "-r", *states, "-n", f"treadle-{tag}", "-o", QUEUE_FORMAT]
        return parse_queue(_checked(self._run, argv).stdout)

    def poll(self, tag: str) -> list[Observation]:
        """One ``squeue`` for every job of the run, finished ones included (kept ``MinJobAge``)."""
        return self._queue(tag, every_state=True)

    def recover(self, tag: str) -> list[Observation]:
        """The run's jobs still queued or running, for an engine that restarts to adopt them."""
        return self._queue(tag, every_state=False)

    def final(self, ids: Sequence[str]) -> list[Observation]:
        """How jobs gone from the queue ended, from accounting; [] where the cluster keeps none."""
        use_sacct = self.settings.status == "sacct" or (
            self.settings.status == "auto" and self.config.accounting)
        if not ids or not use_sacct:
            return []
        argv = ["sacct", "-n", "-P", "-j", ",".join(ids),
                "-o", "JobID,State,ExitCode,Start,End,TotalCPU,MaxRSS,NodeList"]
        return parse_accounting(_checked(self._run, argv).stdout, ids)

    # -- cancelling ----------------------------------------------------------------------------

    def cancel(self, ids: Sequence[str]) -> None:
        """One ``scancel`` for all these jobs (array elements as ``1234_7``); does not wait."""
        if ids:
            _checked(self._run, ["scancel", *ids])

    def cancel_tag(self, tag: str) -> None:
        """Cancel every job of the run, queued or running, in one command."""
        _checked(self._run, ["scancel", "--me", "-n", f"treadle-{tag}"])
