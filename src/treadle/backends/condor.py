"""Run a workflow's rules as HTCondor jobs (``treadle run -T condor``).

Nothing is shared with the execute machines: each job's script and inputs are
transferred into its sandbox, and HTCondor brings back the new top-level
files, so this backend is ``sandboxed``. A dispatch round is one
``condor_submit`` of item rows (:mod:`treadle.batch.condor`); jobs are watched
through the run's user log, ``DAGFILE.condorlog``, which a resumed run reads
again from the start to adopt the jobs still queued or running.

The job's stdout and stderr come back as HTCondor's ``output`` and ``error``
files and are copied, capped, into the rule's log files when the job ends.
The rest (rounds, polling, held jobs, cancels) is the shared
:class:`~treadle.backends.batch_shell.BatchShell` (docs/batch.md, "HTCondor").
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from treadle.backends.base import BackendConfig, FileSpec, Job, own_options
from treadle.backends.batch_shell import (
    BatchOptions,
    BatchShell,
    refused,
    request_of,
    tracker_for,
)
from treadle.backends.logs import write_log
from treadle.batch.base import BatchJob, Observation
from treadle.batch.condor import CondorSystem, check_files, description_lines, job_script
from treadle.batch.tracker import BatchTracker
from treadle.errors import UsageError


@dataclass(frozen=True, slots=True)
class CondorOptions(BatchOptions):
    """The ``-T condor`` options, named as ``treadle run``'s option table names them (docs/batch.md)."""

    condor_requirements: str | None = None
    condor_autosize: bool = False
    condor_getenv: str = "all"  # all, none, or a comma-separated list of variable names


class CondorBackend(BatchShell):
    """The ``condor`` backend: rules as jobs of batch name ``treadle-<tag>``, watched through the user log."""

    name = "condor"
    sandboxed = True
    runs_in_place = False
    default_max_remote = 100
    log_suffix = "condorlog"  # the reference's name: this file is the run's HTCondor user log
    options_type = CondorOptions
    submit_command = "condor_submit"

    @classmethod
    def check_files(cls, rule: str, inputs: Sequence[FileSpec], outputs: Sequence[FileSpec]) -> None:
        """Before the run: names HTCondor's file transfer cannot carry (docs/batch.md, 'HTCondor')."""
        check_files(rule, [_spelled(f.dag_name, f.task_name) for f in inputs],
                    [_spelled(f.dag_name, f.task_name) for f in outputs])

    @classmethod
    def from_options(cls, config: BackendConfig) -> CondorBackend:
        """The backend for one run; ``-B`` lines and the description are checked before any job,
        and a machine without ``condor_submit`` is one line, not a failed rule per job."""
        options = own_options(CondorOptions, config.settings)
        options.check()
        batch_dir = os.path.join(config.workdir, options.batch_dir or f"{config.dagfile}.batch")
        system = CondorSystem(batch_dir, os.path.join(config.workdir, config.log_path),
                              requirements=options.condor_requirements, autosize=options.condor_autosize,
                              getenv=options.condor_getenv)
        global_text = config.batch_options
        checked = description_lines(global_text)
        system.check(checked)
        if shutil.which(cls.submit_command) is None:
            raise UsageError(f"{cls.submit_command} not found: -T condor needs HTCondor's tools on PATH "
                             "on this machine (a submit node of the pool)")
        return cls(system, tracker_for(options), config=config, options=options, batch_dir=batch_dir,
                   checked=(global_text, checked))

    def __init__(self, system: CondorSystem, tracker: BatchTracker, *, config: BackendConfig,
                 options: CondorOptions, batch_dir: str,
                 checked: tuple[str | None, tuple[str, ...]] = (None, ())) -> None:
        super().__init__(system, tracker, tag=config.tag, first_handle=config.first_handle, notify=config.notify,
                         rule_count=config.rule_count,
                         options=options)
        self.condor = system
        self.workdir = os.path.abspath(config.workdir)
        self.batch_dir = os.path.abspath(batch_dir)
        self._jobs_dir = os.path.join(self.batch_dir, "jobs")
        self._options: dict[str | None, tuple[str, ...]] = dict([checked])  # -B, checked before the run
        self._journalled: dict[str, int] = {}  # native -> handle, from the previous engine's journal

    def greeting(self) -> str | None:
        return f"HTCondor jobs have batch name treadle-{self.tag}; their scripts and logs are in {self.batch_dir}"

    def render(self, handle: int, job: Job, attempt: int) -> BatchJob:
        """Write ``jobs/<handle>.sh`` (exports and the command); inputs travel with it."""
        options = self._options_of(job.batch_options)
        inputs = tuple(f.dag_name for f in job.inputs)
        try:  # the files were checked before the run (check_files)
            text = job_script(job.command, job.environment)
        except ValueError as e:
            raise refused(str(e)) from None
        os.makedirs(self._jobs_dir, exist_ok=True)
        path = os.path.join(self._jobs_dir, f"{handle}.sh")
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
        return BatchJob(tag=self.tag, script=path, workdir=self.workdir, request=request_of(job), options=options,
                        inputs=inputs, comment=str(handle))

    def log_of(self, native: str) -> str | None:
        """HTCondor's ``error`` file of the job: what a failure's reason is usually in."""
        return self.condor.log_paths(native)[1]

    def keep_job_logs(self, job: Job, native: str) -> str | None:
        """Copy HTCondor's ``output`` and ``error`` files of the job into the rule's log files, capped."""
        if not native:
            return None
        for source, dest in zip(self.condor.log_paths(native), (job.stdout, job.stderr), strict=True):
            if dest is None:
                continue
            try:
                with open(source, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                data = b""
            except OSError as e:
                return f"could not read its log {source}: {e.strerror}"
            try:
                write_log(os.path.join(self.workdir, dest), data)
            except OSError as e:
                return f"could not keep its log {dest}: {e.strerror}"
        return None

    def handle_of(self, observation: Observation) -> int | None:
        """From ``+TreadleHandle`` when the source knows it, else from the id the previous engine journalled."""
        if observation.label.isdigit():
            return int(observation.label)
        return self._journalled.get(observation.native)

    def recover(self, previous: Mapping[int, str]) -> set[int]:
        """Replay the user log and ask the queue once; HTCondor's ids are never reused, so journalled ones count."""
        self._journalled = {native: handle for handle, native in previous.items() if native}
        return super().recover(previous)

    def _options_of(self, text: str | None) -> tuple[str, ...]:
        """A rule's ``BATCH_OPTIONS`` as description lines, checked once per distinct text."""
        known = self._options.get(text)
        if known is not None:
            return known
        lines = description_lines(text)
        try:
            self.condor.check(lines)
        except UsageError as e:
            raise refused(str(e)) from None
        self._options[text] = lines
        return lines


def _spelled(dag_name: str, task_name: str) -> str:
    """A file as the workflow wrote it: ``local->remote`` when the rule renames it."""
    return dag_name if dag_name == task_name else f"{dag_name}->{task_name}"

