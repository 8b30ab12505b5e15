"""Run jobs as processes on this machine.

Every job is started with ``posix_spawn`` (vfork + exec: the engine, which
may hold a million rules in memory, is never copied) as the leader of its own
process group, so that cancelling a job stops everything it started.

Two promises the engine relies on:

* **No orphans.** A small watchdog process (:class:`treadle.queue.spawn.Watchdog`,
  which the worker uses too) is started with the first job. The engine tells
  it, through a pipe, which process groups are alive. When that pipe closes,
  because the engine exited or was killed with SIGKILL, the watchdog kills the
  groups still recorded. (The reference uses the parent-death signal, which
  ``posix_spawn`` cannot set up.) The only gap is
  the few microseconds between the spawn and the write to the pipe.
* **Same results as ``/bin/sh -c``.** A command runs as
  ``/bin/sh -c "<command>"``, except when it is provably free of shell syntax
  (see :func:`treadle.queue.spawn.shell_free_argv`): then the program is started directly, found
  on the job's ``PATH`` the way the shell finds it. That skips one exec per job
  (about 40 % of the cost of a trivial rule) and changes nothing the command
  can observe. When the direct start fails for any reason (not found, not
  executable, a script without ``#!``), the command goes through the shell
  after all, so the user sees the shell's message and exit status.

A job's stdout and stderr are the files ``Job.stdout`` and ``Job.stderr``
(``/dev/null`` when not given), opened here and handed to the process as its
fd 1 and 2: its output goes straight to disk, never through the engine nor to
the engine's terminal. When the job ends, the files are capped
(:mod:`treadle.backends.logs`); a log that cannot be kept (a full disk) fails
the job with the reason.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import select
import signal
import time
from collections.abc import Mapping

from treadle.backends.base import BackendConfig, Job, JobResult
from treadle.backends.logs import cap_file
from treadle.queue.spawn import RESET_SIGNALS, SHELL, Watchdog, direct_start, shell_report_argv

CANCEL_GRACE = 0.4  # seconds between SIGTERM and SIGKILL when stopping jobs


class LocalBackend:
    """Runs each job as ``/bin/sh -c COMMAND`` (or directly, see the module doc) in the cwd."""

    name = "local"
    sandboxed = False
    runs_in_place = True
    default_max_remote = 100
    log_suffix = "batchlog"
    options_type = None

    @classmethod
    def from_options(cls, config: BackendConfig) -> LocalBackend:
        """Jobs inherit the engine's environment and directory: nothing to configure."""
        return cls()

    def greeting(self) -> str | None:
        return None

    def __init__(self, *, environ: Mapping[str, str] | None = None, direct_exec: bool = True):
        self._environ = dict(os.environ if environ is None else environ)
        self._direct = direct_exec
        self._env_cache: dict[int, tuple[Mapping[str, str], dict[str, str]]] = {}
        self._epoll = select.epoll()
        self._by_fd: dict[int, int] = {}  # pidfd -> pid
        self._jobs: dict[int, tuple[int, float]] = {}  # pid -> (pidfd, start time)
        self._started_directly: set[int] = set()  # pids started without /bin/sh
        self._logs: dict[int, tuple[str | None, str | None]] = {}  # pid -> (stdout, stderr) files
        self._cancelled: set[int] = set()
        self._ready: collections.deque[JobResult] = collections.deque()
        self._watchdog: Watchdog | None = None

    # --- Backend protocol ----------------------------------------------------------------

    def submit(self, job: Job) -> int:
        """Start the job with its log files as fd 1 and 2; ``OSError`` if they cannot be opened."""
        env = self._environment(job.environment)
        out = _open_log(job.stdout)
        try:
            err = _open_log(job.stderr)
            try:
                pid = self._spawn(job.command, env, [(os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, err, 2)])
            finally:
                os.close(err)
        finally:
            os.close(out)
        self._logs[pid] = (job.stdout, job.stderr)
        if self._watchdog is None:
            self._watchdog = Watchdog()
        self._watchdog.add(pid)
        fd = os.pidfd_open(pid)
        self._epoll.register(fd, select.EPOLLIN)
        self._by_fd[fd] = pid
        self._jobs[pid] = (fd, time.time())
        return pid

    def wait(self, timeout: float | None) -> JobResult | None:
        """The next finished job; ``timeout`` ``None`` blocks while jobs run."""
        while not self._ready:
            if not self._jobs:
                return None
            events = self._epoll.poll(-1 if timeout is None else timeout)
            if not events:
                return None
            for fd, _ in events:
                self._reap(fd)
            if timeout is not None and not self._ready:
                return None
        return self._ready.popleft()

    def cancel(self, job_id: int) -> None:
        """Stop a job's whole process group; its result is never reported."""
        if job_id not in self._jobs:
            return
        self._cancelled.add(job_id)
        _killpg(job_id, signal.SIGTERM)

    def close(self) -> None:
        """Stop everything still running (SIGTERM, then SIGKILL after a short grace)."""
        for pid in list(self._jobs):
            self.cancel(pid)
        deadline = time.monotonic() + CANCEL_GRACE
        while self._jobs and time.monotonic() < deadline:
            for fd, _ in self._epoll.poll(max(0.0, deadline - time.monotonic())):
                self._reap(fd)
        for pid in list(self._jobs):
            _killpg(pid, signal.SIGKILL)
        while self._jobs:
            for fd, _ in self._epoll.poll(1.0):
                self._reap(fd)
        self._ready.clear()
        if self._watchdog is not None:
            self._watchdog.close()
            self._watchdog = None
        self._epoll.close()

    @property
    def running(self) -> int:
        return len(self._jobs) - len(self._cancelled)

    # --- internals -----------------------------------------------------------------------

    def _environment(self, extra: Mapping[str, str]) -> dict[str, str]:
        """The engine's environment plus the job's variables, built once per distinct mapping."""
        key = id(extra)
        hit = self._env_cache.get(key)
        if hit is not None and hit[0] is extra:
            return hit[1]
        env = dict(self._environ)
        env.update(extra)
        if "PWD" in env:
            env["PWD"] = os.getcwd()  # what the shell would export
        self._env_cache[key] = (extra, env)  # keeps `extra` alive so its id stays unique
        return env

    def _spawn(self, command: str, env: dict[str, str], file_actions: list[tuple]) -> int:
        if self._direct:
            direct = direct_start(command, env.get("PATH"))
            if direct is not None:
                try:
                    pid = os.posix_spawn(direct[0], direct[1], env, file_actions=file_actions, setpgroup=0,
                                         setsigdef=RESET_SIGNALS)
                    self._started_directly.add(pid)
                    return pid
                except OSError:
                    pass  # let the shell report it
        return os.posix_spawn(SHELL, ["sh", "-c", command], env, file_actions=file_actions, setpgroup=0,
                              setsigdef=RESET_SIGNALS)

    def _reap(self, fd: int) -> None:
        pid = self._by_fd.pop(fd, None)
        if pid is None:
            return
        self._epoll.unregister(fd)
        os.close(fd)
        _, status = os.waitpid(pid, 0)
        _, started = self._jobs.pop(pid)
        if self._watchdog is not None:
            self._watchdog.remove(pid)
        direct = pid in self._started_directly
        self._started_directly.discard(pid)
        stdout, stderr = self._logs.pop(pid)
        if pid in self._cancelled:
            self._cancelled.discard(pid)
            return
        if direct and os.WIFSIGNALED(status):
            status = _as_the_shell_reports(os.WTERMSIG(status), stderr)
        if os.WIFSIGNALED(status):
            result = JobResult(pid, signal=os.WTERMSIG(status), started=started, finished=time.time(),
                               stdout=stdout, stderr=stderr)
        else:
            result = JobResult(pid, exit_code=os.waitstatus_to_exitcode(status), started=started,
                               finished=time.time(), stdout=stdout, stderr=stderr)
        for path in (stdout, stderr):
            if path is not None:
                try:
                    cap_file(path)
                except OSError as e:
                    result = dataclasses.replace(result, error=f"could not keep its log {path}: {e.strerror}")
        self._ready.append(result)


def _open_log(path: str | None) -> int:
    """A descriptor for a job's stream: its log file, emptied, or ``/dev/null``."""
    if path is None:
        return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)


def _as_the_shell_reports(sig: int, stderr: str | None) -> int:
    """The wait status ``/bin/sh -c`` would have given for a program killed by ``sig``.

    Deaths the engine did not cause are rare, so the stand-in runs synchronously;
    its message goes to the end of the job's stderr log, as the shell's would have.
    """
    argv = shell_report_argv(sig)
    try:
        err = os.open(stderr, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC) if stderr else _open_log(None)
    except OSError:
        err = _open_log(None)
    try:
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, err, 2)])
    finally:
        os.close(err)
    _, status = os.waitpid(pid, 0)
    return status


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
