"""The dry run (``-T dryrun`` / ``--dry-run``; docs/makeflow.md, 'Dry run'): nothing runs, a script says what would.

The engine drives this executor exactly as it drives a real one, so the
script lists the rules that would run in the order they would be submitted.
Every job "succeeds" at once. The real log is never written [F-k]; the
engine is given a null journal for that.
"""

from __future__ import annotations

import collections
import re

from treadle import __version__
from treadle.backends.base import BackendConfig, Job, JobResult

_SPECIAL = re.compile(r'(["\\$`])')


def _quote(text: str) -> str:
    return '"' + _SPECIAL.sub(r"\\\1", text) + '"'


class DryRunBackend:
    """Writes each submitted job to a shell script instead of running it."""

    name = "dryrun"
    sandboxed = False
    runs_in_place = False  # the engine hands it whole jobs, so the script can test their outputs
    default_max_remote = 100
    log_suffix = "sh"
    options_type = None

    @classmethod
    def from_options(cls, config: BackendConfig) -> DryRunBackend:
        """The script is the run's batch log (``DAGFILE.sh`` unless ``-L`` names another)."""
        return cls(script_path=config.log_path)

    def greeting(self) -> str | None:
        return None

    def __init__(self, *, script_path: str):
        self._f = open(script_path, "w", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        self._f.write(f"#!/bin/sh\nset -x\nset -e\n\n# treadle version {__version__}\n\n")
        self._done: collections.deque[int] = collections.deque()
        self._next = 1

    def submit(self, job: Job) -> int:
        env = " ".join(_quote(f"{k}={v}") for k, v in job.environment.items())
        prefix = f"env {env} " if env else ""
        lines = [f"{prefix}sh -c {_quote(job.command)}\n"]
        lines += [f"test -e {_quote(o.dag_name)}\n" for o in job.outputs]
        self._f.writelines(lines)
        job_id = self._next
        self._next += 1
        self._done.append(job_id)
        return job_id

    def wait(self, timeout: float | None) -> JobResult | None:
        if not self._done:
            return None
        return JobResult(self._done.popleft(), exit_code=0)

    def cancel(self, job_id: int) -> None:
        if job_id in self._done:
            self._done.remove(job_id)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
