"""Run a workflow's rules as Slurm jobs (``treadle run -T slurm``).

Each rule attempt is one job script (``jobs/<handle>.sh`` under the batch
directory) run by the run's ``wrapper.sh``, which leaves a status file when the
command ends; rules of one shape ready together go as one array. The engine's
per-rule log files are written by the job itself, so the workflow directory
and the batch directory must be visible at the same path on the nodes (a
shared filesystem, as for the reference's ``-T slurm``). Without one, use
``-T wq --factory slurm``.

Everything about watching the jobs (rounds, polling, cancels, recovery) is the
shared :class:`~treadle.backends.batch_shell.BatchShell`; this module says how
a rule becomes an ``sbatch`` job (docs/batch.md, "Slurm").
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

from treadle.backends.base import BackendConfig, Job, own_options
from treadle.backends.batch_shell import (
    BatchOptions,
    BatchShell,
    refused,
    request_of,
    tracker_for,
)
from treadle.batch.base import BatchJob, Observation, Request
from treadle.batch.slurm import (
    SlurmConfig,
    SlurmSettings,
    SlurmSystem,
    check_options,
    render_job_script,
    resource_args,
    split_options,
)
from treadle.batch.tracker import BatchTracker
from treadle.errors import BatchError, UsageError

HINT = ("most rules here take under a minute, and Slurm starts about one job per freed CPU per second: "
        "`treadle run -T wq --factory slurm` starts workers once and runs the rules on them")


@dataclass(frozen=True, slots=True)
class SlurmOptions(BatchOptions):
    """The ``-T slurm`` options, named as ``treadle run``'s option table names them (docs/batch.md)."""

    slurm_array: str = "auto"
    slurm_status: str = "auto"
    slurm_disk: str = "off"
    slurm_gpu_flag: str = "gres"
    safe_submit_mode: bool = False
    ignore_memory_spec: bool = False

    def settings(self) -> SlurmSettings:
        """The Slurm layer's view of these options; ``UsageError`` for a value it does not know."""
        return SlurmSettings(array=self.slurm_array, disk=self.slurm_disk, gpu_flag=self.slurm_gpu_flag,
                             status=self.slurm_status, safe_submit=self.safe_submit_mode,
                             ignore_memory=self.ignore_memory_spec)


class SlurmBackend(BatchShell):
    """The ``slurm`` backend: rules as jobs named ``treadle-<tag>``, watched with one ``squeue`` per interval."""

    name = "slurm"
    sandboxed = False
    runs_in_place = False
    default_max_remote = 100
    log_suffix = "batchlog"  # the reference's name for every batch type without a log of its own
    options_type = SlurmOptions
    submit_command = "sbatch"

    @classmethod
    def from_options(cls, config: BackendConfig) -> SlurmBackend:
        """The backend for one run; a bad ``-B`` or option, or an unreachable Slurm, is one line before any job."""
        options = own_options(SlurmOptions, config.settings)
        options.check()
        settings = options.settings()
        global_text = config.batch_options
        global_options = split_options(global_text)
        check_options(global_options)
        batch_dir = os.path.join(config.workdir, options.batch_dir or f"{config.dagfile}.batch")
        try:
            system = SlurmSystem(batch_dir, settings=settings)
            slurm = system.config
        except OSError as e:
            raise UsageError(f"-T slurm: cannot make the batch directory {batch_dir}: {e.strerror}") from None
        except BatchError as e:
            raise UsageError(f"-T slurm: cannot read Slurm's configuration: {e}") from None
        return cls(system, tracker_for(options), config=config, options=options, settings=settings,
                   slurm=slurm, batch_dir=batch_dir, checked=(global_text, global_options))

    def __init__(self, system: SlurmSystem, tracker: BatchTracker, *, config: BackendConfig,
                 options: SlurmOptions, settings: SlurmSettings, slurm: SlurmConfig, batch_dir: str,
                 checked: tuple[str | None, tuple[str, ...]] = (None, ())) -> None:
        super().__init__(system, tracker, tag=config.tag, first_handle=config.first_handle, notify=config.notify,
                         rule_count=config.rule_count,
                         options=options)
        # A job that ends is visible to squeue for MinJobAge seconds: poll often enough never to miss one.
        self.poll_max = min(options.poll_max, max(options.poll_min, slurm.min_job_age / 3))
        self.workdir = os.path.abspath(config.workdir)
        self.batch_dir = os.path.abspath(batch_dir)
        self.settings = settings
        self._jobs_dir = os.path.join(self.batch_dir, "jobs")
        self._options: dict[str | None, tuple[str, ...]] = dict([checked])  # -B, checked before the run
        self._requests_checked: set[Request] = set()
        self._chunk_maps: dict[str, dict[str, int]] = {}

    def greeting(self) -> str | None:
        return f"Slurm jobs are named treadle-{self.tag}; their scripts and logs are in {self.batch_dir}"

    def render(self, handle: int, job: Job, attempt: int) -> BatchJob:
        """Write ``jobs/<handle>.sh`` for this attempt; a rule's refused options or resources refuse the job."""
        request = request_of(job)
        options = self._options_of(job.batch_options)
        if request not in self._requests_checked:
            try:
                resource_args(request, self.settings)
            except UsageError as e:
                raise refused(str(e)) from None
            self._requests_checked.add(request)
        try:
            text = render_job_script(workdir=self.workdir, command=job.command, environment=job.environment,
                                     handle=str(handle), rule=str(job.rule_id), attempt=attempt,
                                     cores=job.resources.cores, stdout=self._absolute(job.stdout),
                                     stderr=self._absolute(job.stderr))
        except UsageError as e:
            raise refused(str(e)) from None
        path = os.path.join(self._jobs_dir, f"{handle}.sh")
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
        return BatchJob(tag=self.tag, script=path, workdir=self.workdir, request=request, options=options,
                        comment=str(handle))

    def log_of(self, native: str) -> str | None:
        """``logs/<id>.out``: the wrapper's output (the command's own goes to the rule's log files)."""
        return os.path.join(self.batch_dir, "logs", f"{native}.out")

    def handle_of(self, observation: Observation) -> int | None:
        """From the job's comment: a handle, or an array chunk whose ``map`` names each element's handle."""
        label = observation.label
        if label.isdigit():
            return int(label)
        if not label.startswith("c") or "_" not in observation.native:
            return None
        element = observation.native.rsplit("_", 1)[1]
        return self._chunk_map(label).get(element)

    def hint_line(self) -> str | None:
        return HINT

    def recover(self, previous: Mapping[int, str]) -> set[int]:
        """Adopt the previous engine's jobs, status files it had read but not yet journalled included.

        An engine killed with endings harvested but not yet handed over left
        their status files in ``status/seen/``; they go back to ``status/`` to
        be read again (a file of an older attempt names another job id and is
        ignored).
        """
        status = os.path.join(self.batch_dir, "status")
        wanted = {str(handle) for handle in previous}
        try:
            with os.scandir(os.path.join(status, "seen")) as entries:
                seen = [e.name for e in entries if e.name.split(".", 1)[0] in wanted]
        except FileNotFoundError:
            seen = []
        for name in seen:  # <handle>.<job id>.json
            if not os.path.exists(os.path.join(status, name)):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(os.path.join(status, "seen", name), os.path.join(status, name))
        return super().recover(previous)

    # --- internals -----------------------------------------------------------------------

    def _options_of(self, text: str | None) -> tuple[str, ...]:
        """A rule's ``BATCH_OPTIONS`` split and checked once per distinct text; refused ones fail the rule."""
        known = self._options.get(text)
        if known is not None:
            return known
        try:
            options = split_options(text)
            check_options(options)
        except UsageError as e:
            raise refused(str(e)) from None
        self._options[text] = options
        return options

    def _absolute(self, path: str | None) -> str | None:
        return None if path is None else os.path.join(self.workdir, path)

    def _chunk_map(self, chunk: str) -> dict[str, int]:
        """Element index -> handle of an array chunk, from its ``map`` file (``i handle`` lines)."""
        known = self._chunk_maps.get(chunk)
        if known is not None:
            return known
        mapping: dict[str, int] = {}
        try:
            with open(os.path.join(self._jobs_dir, chunk, "map"), encoding="utf-8") as f:
                for line in f:
                    index, _, handle = line.strip().partition(" ")
                    if handle.isdigit():
                        mapping[index] = int(handle)
        except OSError:
            pass
        self._chunk_maps[chunk] = mapping
        return mapping

