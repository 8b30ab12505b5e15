"""Jobs as local process groups: a batch system with no scheduler.

Each job is its script run by ``/bin/sh`` in a session of its own (so one
``killpg`` reaches everything it started), stdout and stderr going to the job's
log. It is what the worker factory's ``-T local`` provider stands on, and it
lets the tracker be tested with real processes: a job killed with ``kill -9``
is observed ENDED with that signal, as a node loss would be on a cluster
(docs/batch.md).

Native ids are process ids. A pid cannot be reused before its parent reaps
it, and only this object reaps its children, so an id names one job for as
long as :meth:`LocalSystem.poll` reports it.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from treadle.batch.base import BatchJob, Observation, State, Submitted
from treadle.errors import BatchError

KILL_AFTER = 10.0
"""Seconds between the TERM and the KILL of a cancelled job: time for a worker to vacate."""


@dataclass
class _Process:
    """One job's process and what is known of it; ``ended`` is set once it is reaped."""

    tag: str
    comment: str
    popen: subprocess.Popen[bytes]
    start: float
    ended: Observation | None = None
    reported: bool = False  # harvest() has handed out its ending
    cancelled: bool = False
    kill_timer: threading.Timer | None = field(default=None, repr=False)


class LocalSystem:
    """Runs jobs as process groups on this machine (see the module docstring)."""

    name = "local"

    def __init__(self, *, kill_after: float = KILL_AFTER) -> None:
        self._kill_after = kill_after
        self._jobs: dict[str, _Process] = {}
        self._lock = threading.Lock()  # reaping and killing never race on a pid

    def submit(self, jobs: Sequence[BatchJob]) -> list[Submitted]:
        """Start every job now; a job whose script or log cannot be opened gets its error."""
        return [self._start(job) for job in jobs]

    def _start(self, job: BatchJob) -> Submitted:
        command = ("/bin/sh", job.script)
        try:
            log = open(job.log, "ab") if job.log else None  # noqa: SIM115 - closed once the child has it
            try:
                popen = subprocess.Popen(  # noqa: S603 - an argv list of our own
                    command, cwd=job.workdir, stdin=subprocess.DEVNULL,
                    stdout=log if log is not None else subprocess.DEVNULL,
                    stderr=subprocess.STDOUT, start_new_session=True)
            finally:
                if log is not None:
                    log.close()
        except OSError as e:
            return BatchError(f"cannot start {job.script}: {e.strerror or e}", kind="permanent",
                              command=command, stderr=str(e))
        native = str(popen.pid)
        with self._lock:
            self._jobs[native] = _Process(job.tag, job.comment, popen, time.time())
        return native

    def harvest(self) -> list[Observation]:
        """The jobs that ended since the last harvest, each reported once."""
        self._reap()
        news = []
        with self._lock:
            for p in self._jobs.values():
                if p.ended is not None and not p.reported:
                    p.reported = True
                    news.append(p.ended)
        return news

    def poll(self, tag: str) -> list[Observation]:
        """Every job of ``tag`` this object started: RUNNING, or ENDED with its exit or signal."""
        self._reap()
        with self._lock:
            return [self._observe(native, p) for native, p in self._jobs.items() if p.tag == tag]

    def final(self, ids: Sequence[str]) -> list[Observation]:
        """How these jobs ended; an id this object never started is GONE."""
        self._reap()
        with self._lock:
            return [self._observe(native, self._jobs[native]) if native in self._jobs
                    else Observation(native, State.GONE) for native in ids]

    def cancel(self, ids: Sequence[str]) -> None:
        """TERM to each job's process group now, KILL after ``kill_after`` seconds if it still runs."""
        with self._lock:
            for native in ids:
                p = self._jobs.get(native)
                if p is None or p.ended is not None or p.cancelled:
                    continue
                p.cancelled = True
                _signal_group(p.popen.pid, signal.SIGTERM)
                p.kill_timer = threading.Timer(self._kill_after, self._kill, (native,))
                p.kill_timer.daemon = True
                p.kill_timer.start()

    def cancel_tag(self, tag: str) -> None:
        """Cancel every job of ``tag`` that still runs."""
        with self._lock:
            ids = [native for native, p in self._jobs.items() if p.tag == tag]
        self.cancel(ids)

    def _kill(self, native: str) -> None:
        self._reap()
        with self._lock:
            p = self._jobs[native]
            if p.ended is None:  # not reaped, so the pid is still this job's
                _signal_group(p.popen.pid, signal.SIGKILL)

    def _reap(self) -> None:
        """Collect every child that has ended (waitpid without blocking), with its CPU time."""
        with self._lock:
            for native, p in self._jobs.items():
                if p.ended is not None:
                    continue
                try:
                    pid, status, usage = os.wait4(p.popen.pid, os.WNOHANG)
                except ChildProcessError:  # reaped elsewhere (a Popen.wait by mistake): exit unknown
                    pid, status, usage = p.popen.pid, None, None
                if pid == 0:
                    continue
                p.ended = self._ending(native, p, status, usage)
                p.popen.returncode = -1 if status is None else os.waitstatus_to_exitcode(status)
                if p.kill_timer is not None:
                    p.kill_timer.cancel()

    @staticmethod
    def _ending(native: str, p: _Process, status: int | None,
                usage: resource.struct_rusage | None) -> Observation:
        exit_code = sig = None
        if status is not None and os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
        elif status is not None:
            exit_code = os.WEXITSTATUS(status)
        cpu = {} if usage is None else {"cpu": usage.ru_utime + usage.ru_stime,
                                        "rss": usage.ru_maxrss / 1024}
        word = "CANCELLED" if p.cancelled else ("COMPLETED" if exit_code == 0 else "FAILED")
        return Observation(native, State.ENDED, word=word, label=p.comment, host=os.uname().nodename,
                           exit=exit_code, signal=sig, start=p.start, end=time.time(), usage=cpu)

    @staticmethod
    def _observe(native: str, p: _Process) -> Observation:
        if p.ended is not None:
            return p.ended
        return Observation(native, State.RUNNING, word="RUNNING", label=p.comment,
                           host=os.uname().nodename, start=p.start)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:  # the whole group is gone; the leader waits to be reaped
        pass
