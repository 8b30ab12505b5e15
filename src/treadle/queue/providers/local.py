"""Workers as local processes: the factory's provider for ``-T local``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Sequence

from treadle.queue.providers.base import JobState


class LocalProvider:
    """Each job is a ``treadle worker`` child process; its id is the pid."""

    def __init__(self, python: str | None = None, log_dir: str | None = None) -> None:
        self._python = python or sys.executable
        self._log_dir = log_dir
        self._procs: dict[str, subprocess.Popen] = {}

    def submit(self, worker_args: Sequence[str]) -> str:
        log = None
        if self._log_dir:
            log = open(os.path.join(self._log_dir, f"worker-{len(self._procs)}.log"), "ab")
        try:
            proc = subprocess.Popen(
                [self._python, "-m", "treadle", "worker", *worker_args],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL if log is None else log, start_new_session=True)
        finally:
            if log is not None:
                log.close()
        job = str(proc.pid)
        self._procs[job] = proc
        return job

    def status(self, ids: Iterable[str]) -> dict[str, JobState]:
        out = {}
        for job in ids:
            proc = self._procs.get(job)
            if proc is None or proc.poll() is not None:
                out[job] = JobState.DONE
                self._procs.pop(job, None)
            else:
                out[job] = JobState.RUNNING
        return out

    def cancel(self, ids: Iterable[str]) -> None:
        for job in ids:
            proc = self._procs.get(job)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # the worker vacates and wipes its workspace
