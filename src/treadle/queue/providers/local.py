"""Workers as local process groups: the factory's provider for ``-T local``.

Built on :class:`treadle.batch.local.LocalSystem`. Each job runs a small script
that ``exec``s the worker, so a job's id is the worker's own pid and a
signal to the job reaches the worker. The "bundle" worker is this
installation's ``treadle worker``, run by this interpreter: the zipapp exists
for nodes where treadle is not installed, and here it is.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
import uuid
from collections.abc import Iterable

from treadle.batch.base import BatchJob, Observation, State
from treadle.batch.local import LocalSystem
from treadle.queue.providers.base import JobState, WorkerSpec, accepted, resource_options, states_of


class LocalProvider:
    """Starts workers on this machine; ``batch_dir`` (default: a fresh temporary directory) holds
    their scripts and logs."""

    name = "local"

    def __init__(self, batch_dir: str | None = None) -> None:
        self._dir = os.path.abspath(batch_dir or tempfile.mkdtemp(prefix="treadle-factory."))
        for sub in ("jobs", "logs"):
            os.makedirs(os.path.join(self._dir, sub), exist_ok=True)
        self._tag = f"workers-{uuid.uuid4().hex[:8]}"
        self._system = LocalSystem()
        self._scripts: dict[WorkerSpec, str] = {}
        self._logs: dict[str, str] = {}
        self._started = 0

    def submit(self, spec: WorkerSpec, count: int) -> list[str]:
        """Start ``count`` workers now; if one cannot start, the others are cancelled and the error raised."""
        script = self._script(spec)
        jobs = []
        for _ in range(count):
            self._started += 1
            log = os.path.join(self._dir, "logs", f"worker-{self._started}.log")
            jobs.append(BatchJob(tag=self._tag, script=script, workdir=self._dir, log=log))
        answers = self._system.submit(jobs)
        ids = accepted(self._system, answers)
        for job, answer in zip(jobs, answers, strict=True):
            if isinstance(answer, str) and job.log is not None:
                self._logs[answer] = job.log
        return ids

    def _script(self, spec: WorkerSpec) -> str:
        """The job script for ``spec``, written once."""
        if spec not in self._scripts:
            if spec.command == "bundle":
                program = [sys.executable, "-m", "treadle", "worker"]
            else:
                program = shlex.split(spec.command)
            argv = [*program, *resource_options(spec), *spec.args]
            path = os.path.join(self._dir, "jobs", f"worker-{len(self._scripts) + 1}.sh")
            with open(path, "w") as f:
                f.write(f"exec {shlex.join(argv)}\n")
            self._scripts[spec] = path
        return self._scripts[spec]

    def status(self, ids: Iterable[str]) -> dict[str, JobState]:
        """One look at every worker process (``waitpid``); ids never started here are DONE."""
        return states_of(ids, self._system.poll(self._tag), _state)

    def cancel(self, ids: Iterable[str]) -> None:
        """TERM to each worker's process group (the worker vacates), KILL a little later."""
        self._system.cancel(list(ids))

    def close(self) -> None:
        """Cancel every worker still running; scripts and logs stay for whoever looks."""
        self._system.cancel_tag(self._tag)

    def log_path(self, id: str) -> str | None:  # noqa: A002 - the contract's name
        return self._logs.get(id)


def _state(o: Observation) -> JobState:
    if o.state is State.RUNNING:
        return JobState.RUNNING
    if o.word == "CANCELLED" or o.exit == 0:
        return JobState.DONE
    return JobState.FAILED
