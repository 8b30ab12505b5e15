"""One task on the worker, from its sandbox to its result, as an object with a named state.

A ``TaskRunner`` is in exactly one ``State`` and changes it only through ``_to``,
which refuses a change the table ``_NEXT`` does not list and frees the task's
resources when it leaves the states that hold them. Each outside event has one
method: ``kill`` (the manager's kill, or the connection's end), a limit's timer
(``_over_limit``), the process's end, a failure (``_fail``), the result
(``_report``). Whatever happens, a task ends REPORTED (its result is with the
others to send) or DISCARDED (killed: no result, sandbox gone), with its
resources freed and its process group killed. The changes ``_NEXT`` allows::

    STAGING    -> RUNNING | KILLED | FAILED
    RUNNING    -> OVER_LIMIT | KILLED | DONE | FAILED
    OVER_LIMIT -> KILLED | DONE | FAILED       (a kill after a limit: no result)
    KILLED     -> DISCARDED
    DONE       -> REPORTED | FAILED            (FAILED: the worker broke keeping outputs)
    FAILED     -> REPORTED

Standard library only and Python 3.8 syntax: the worker zipapp ships this module.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import signal
import sys
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from . import protocol as p
from . import sandbox as sb
from . import spawn

log = logging.getLogger("treadle.worker")

# the protocol's numbers as plain ints, formatted alike on python 3.8
SUCCESS = int(p.ResultCode.SUCCESS)
INPUT_MISSING = int(p.ResultCode.INPUT_MISSING)
SIGNAL = int(p.ResultCode.SIGNAL)
TASK_TIMEOUT = int(p.ResultCode.TASK_TIMEOUT)
TASK_MAX_RUN_TIME = int(p.ResultCode.TASK_MAX_RUN_TIME)
WATCH = int(p.FileFlag.WATCH)  # stream this output while the task runs


class State(enum.Enum):
    """Where a task is on the worker (see the module's picture)."""

    STAGING = "staging"  # its sandbox is being made; no process yet
    RUNNING = "running"  # its process group runs
    OVER_LIMIT = "over limit"  # killed by its wall time or end time: ends with that result
    KILLED = "killed"  # killed by the manager or the connection's end: no result
    DONE = "done"  # its process ended; its outputs are being kept
    FAILED = "failed"  # the worker could not run it: INPUT_MISSING and the reason as output
    REPORTED = "reported"  # its result is with the others to send
    DISCARDED = "discarded"  # killed: its sandbox and stdout are gone


# the states in which a task holds its cores, memory, disk and GPUs
HOLDING = frozenset({State.STAGING, State.RUNNING, State.OVER_LIMIT, State.KILLED})

_NEXT = {
    State.STAGING: {State.RUNNING, State.KILLED, State.FAILED},
    State.RUNNING: {State.OVER_LIMIT, State.KILLED, State.DONE, State.FAILED},
    State.OVER_LIMIT: {State.KILLED, State.DONE, State.FAILED},
    State.KILLED: {State.DISCARDED},
    State.DONE: {State.REPORTED, State.FAILED},
    State.FAILED: {State.REPORTED},
    State.REPORTED: set(),
    State.DISCARDED: set(),
}


@dataclass
class Finished:
    """A task's result, waiting for `send_results`."""

    task_id: int
    status: int
    exit_code: int
    usec: int
    stdout: str | None  # path of the combined stdout/stderr file


class Host(Protocol):
    """What a runner needs from the connection that received its task (``worker._Session``)."""

    ws: sb.Workspace
    base_env: dict  # the worker's environment for tasks, before the task's own entries
    use_symlinks: bool  # inputs may be symlinked into the sandbox (not --disable-symlinks)

    @property
    def connected(self) -> bool:
        """Whether the connection still serves its manager."""

    def inside(self, directory: str) -> AbstractContextManager[None]:
        """Run a block with ``directory`` as the working directory (for a spawn)."""

    def guard(self, pgid: int) -> None:
        """Have process group ``pgid`` killed if the worker dies."""

    def unguard(self, pgid: int) -> None:
        """Process group ``pgid`` is over."""

    def release(self, runner: TaskRunner) -> None:
        """The task's resources are free again."""

    def finish(self, done: Finished) -> None:
        """Queue a result for `send_results`."""

    def discard(self, task_id: int) -> None:
        """Delete a killed task's sandbox and stdout."""

    def notice_start(self) -> None:
        """A task started: tell the manager how many run, soon."""


class TaskRunner:
    """One task received from the manager, until its result is queued or it is discarded."""

    def __init__(self, task: p.Task, alloc: dict, gpu_ids: list, host: Host) -> None:
        self.task = task
        self.alloc = alloc  # resources held while in HOLDING
        self.gpu_ids = gpu_ids
        self.host = host
        self.state = State.STAGING
        self.started = time.monotonic()
        self.pid = 0  # also its process group; 0 until it has started
        self.limit: int | None = None  # result code of the limit that killed it (OVER_LIMIT)
        self.box = ""
        self.watched: dict = {}  # WATCH outputs: sandbox name -> bytes sent
        self._timers: list = []

    @property
    def task_id(self) -> int:
        return self.task.task_id

    @property
    def counted(self) -> bool:
        """Whether the manager counts it as running (a killed one may still be dying)."""
        return self.state in HOLDING and self.state is not State.KILLED

    # -- transitions -------------------------------------------------------------------

    def _to(self, new: State) -> None:
        """The one place a state changes; leaving HOLDING frees the task's resources."""
        if new not in _NEXT[self.state]:
            raise RuntimeError(f"task {self.task_id}: {self.state.value} -> {new.value}")
        old, self.state = self.state, new
        if old in HOLDING and new not in HOLDING:
            self.host.release(self)

    def kill(self) -> None:
        """The manager killed it (or its connection ended): no result, sandbox removed.

        The process group dies now; ``run`` discards the task once its process is gone.
        """
        if self.state in (State.STAGING, State.RUNNING, State.OVER_LIMIT):
            self._to(State.KILLED)
        self.kill_processes()

    def kill_processes(self) -> None:
        """SIGKILL its process group (no state change: the process's end says what follows)."""
        if self.pid:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _over_limit(self, status: int) -> None:
        """A limit's timer: the task ends with result ``status`` (the first limit wins)."""
        if self.state is State.RUNNING:
            self.limit = status
            self._to(State.OVER_LIMIT)
        self.kill_processes()

    def _discard(self) -> None:
        self._to(State.DISCARDED)
        self.host.discard(self.task_id)

    def _report(self, done: Finished) -> None:
        self._to(State.REPORTED)
        self.host.finish(done)

    def _fail(self, message: str, out: int | None = None) -> None:
        """End a task that could not run: INPUT_MISSING, with ``message`` as its output
        (written through ``out`` when the stdout file is already open)."""
        if self.state is State.KILLED:
            self._discard()
            return
        if self.state is not State.FAILED:
            self._to(State.FAILED)
        out_path = self.host.ws.stdout_path(self.task_id)
        line = f"{message}\n".encode("utf-8", "replace")
        if out is not None:
            os.write(out, line)
        else:
            try:
                fd = sb.fresh_file(out_path, 0o644)
            except OSError:
                pass
            else:
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)
        self._report(Finished(self.task_id, INPUT_MISSING, 1, 0, out_path))

    # -- the run -----------------------------------------------------------------------

    async def run(self) -> None:
        """Run the task to its end, which is always a result or a discard, its resources
        freed.

        Whatever goes wrong on the worker's side fails this task, not the worker: a
        task left without a result would keep its cores allocated for ever, and its
        manager waiting.
        """
        try:
            await self._run()
        except Exception as e:  # noqa: BLE001 - anything here is this task's failure
            log.warning("task %d: failed on the worker: %r", self.task_id, e)
            for timer in self._timers:
                timer.cancel()
            if self.pid:
                self.kill_processes()
                self.host.unguard(self.pid)
            if self.state not in (State.REPORTED, State.DISCARDED):
                self._fail(f"worker: cannot run the task: {e}")

    async def _run(self) -> None:
        task, host = self.task, self.host
        loop = asyncio.get_running_loop()
        try:
            if self._heavy_setup():  # a big tree must not stall replies to the manager
                box, tmpdir = await loop.run_in_executor(None, self._setup_sandbox)
            else:
                box, tmpdir = self._setup_sandbox()
            self.box = box
            self.watched = {o.sandbox_name: 0 for o in task.outputs if o.flags & WATCH}
        except (sb.SandboxError, OSError) as e:
            log.warning("task %d: sandbox set-up failed: %s", task.task_id, e)
            self._fail(f"worker: {e}")
            return
        if self.state is State.KILLED:  # killed while its sandbox was made: never starts
            self._discard()
            return
        # Kept open until the task is over: the shell's report of a signal death is
        # appended through it, whatever the task did to the file's name meanwhile.
        out = host.ws.open_stdout(task.task_id)
        try:
            env = self._environment(tmpdir)
            try:
                self.pid, direct = self._start(task.command, box, env, out)
            except (OSError, ValueError) as e:  # ValueError: a NUL byte in the command
                self._fail(f"worker: cannot start the task: {e}", out)
                return
            host.guard(self.pid)
            self._to(State.RUNNING)
            if task.wall_time:
                self._timers.append(loop.call_later(task.wall_time, self._over_limit,
                                                    TASK_MAX_RUN_TIME))
            if task.end_time:
                self._timers.append(loop.call_later(max(0.0, task.end_time - time.time()),
                                                    self._over_limit, TASK_TIMEOUT))
            host.notice_start()
            rc = await exited(self.pid)
            if rc < 0 and direct and self.state is State.RUNNING and host.connected:
                rc = await self._as_the_shell_reports(-rc, box, env, out)
        finally:
            os.close(out)
        for timer in self._timers:
            timer.cancel()
        self.kill_processes()  # background children of a finished task go too
        host.unguard(self.pid)
        usec = int((time.monotonic() - self.started) * 1e6)
        if self.state is State.KILLED:
            self._discard()
            return
        self._to(State.DONE)
        if self.limit is not None:
            status, code = self.limit, 9
        elif rc < 0:
            status, code = SIGNAL, -rc
        else:
            status, code = SUCCESS, rc
        for item in task.outputs:
            try:
                sb.collect_output(host.ws, box, item.sandbox_name, item.cache_name)
            except OSError as e:
                log.warning("task %d: cannot keep output %s: %s", task.task_id,
                            item.sandbox_name, e)
        self._report(Finished(task.task_id, status, code, usec,
                              host.ws.stdout_path(task.task_id)))

    def _environment(self, tmpdir: str) -> dict:
        env = dict(self.host.base_env)
        for entry in self.task.env:
            name, sep, value = entry.partition("=")
            if sep and name:
                env[name] = value
        a = self.alloc
        if a["cores"] > 0:
            env["CORES"] = env["OMP_NUM_THREADS"] = str(a["cores"])
        if a["memory"] > 0:
            env["MEMORY"] = str(a["memory"])
        if a["disk"] > 0:
            env["DISK"] = str(a["disk"])
        if a["gpus"] > 0:
            env["GPUS"] = str(a["gpus"])
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in self.gpu_ids)
        env["TMPDIR"] = env["TEMP"] = env["TMP"] = tmpdir
        return env

    def _setup_sandbox(self) -> tuple:
        """``(sandbox, tmpdir)`` of the task, its inputs linked in."""
        ws, task = self.host.ws, self.task
        box, tmpdir = ws.new_sandbox(task.task_id)
        for item in task.inputs:
            if isinstance(item, p.EmptyDir):
                sb.make_empty_dir(box, item.sandbox_name)
            else:
                sb.link_input(ws, box, item.cache_name, item.sandbox_name, self.host.use_symlinks)
        for out in task.outputs:
            if not sb.is_safe_relative_path(out.sandbox_name):
                raise sb.SandboxError(f"unsafe output name {out.sandbox_name!r}")
        return box, tmpdir

    def _heavy_setup(self) -> bool:
        """Whether linking the inputs may take long: directories, or many files."""
        inputs = self.task.inputs
        if len(inputs) > 16:
            return True
        cache = self.host.ws.cache
        return any(isinstance(i, p.TaskFile) and os.path.isdir(cache + "/" + i.cache_name)
                   for i in inputs)

    def _start(self, command: str, box: str, env: dict, out: int) -> tuple:
        """Start the task in ``box`` as the leader of a new session (so of a new process
        group); its pid, and whether it runs without a shell.

        stdin is /dev/null; stdout and stderr go to ``out``. A shell-free command
        starts its program directly; if that fails (no such program, no ``#!``, not
        executable), ``/bin/sh -c`` runs it after all, and the user sees the shell's
        message and exit status.
        """
        actions = _task_stdio(out)
        direct = spawn.direct_start(command, env.get("PATH"), box)
        with self.host.inside(box):
            if direct is not None:
                try:
                    return os.posix_spawn(direct[0], direct[1], env, file_actions=actions,
                                          setsid=True, setsigdef=spawn.RESET_SIGNALS), True
                except OSError:
                    pass
            return os.posix_spawn("/bin/sh", ["/bin/sh", "-c", command], env,
                                  file_actions=actions, setsid=True,
                                  setsigdef=spawn.RESET_SIGNALS), False

    async def _as_the_shell_reports(self, sig: int, box: str, env: dict, out: int) -> int:
        """The return code ``/bin/sh -c`` gives for a program that died of signal ``sig``.

        A shell that runs the program as its child outlives it and reports the death
        its own way (dash: a message such as "Segmentation fault" on stderr and exit
        status 128+N; bash execs the program and dies with it). So the shell is
        asked: it runs a stand-in that dies of the same signal, and its report is
        appended to the task's output. Only deaths nobody at the worker caused get
        here, which are rare; limits and kills are reported as before. The report
        goes through ``out``, the worker's own descriptor of the task's output: the
        file's name may lead elsewhere by now.
        """
        self.kill_processes()  # the program's background children, as after any task
        self.host.unguard(self.pid)
        stand_in = spawn.shell_report_argv(sig)
        os.lseek(out, 0, os.SEEK_END)
        try:
            with self.host.inside(box):
                self.pid = os.posix_spawn(
                    stand_in[0], stand_in, env,
                    file_actions=_task_stdio(out), setsid=True, setsigdef=spawn.RESET_SIGNALS)
        except OSError as e:
            log.warning("task %d: cannot ask the shell about signal %d: %s", self.task_id,
                        sig, e)
            return -sig
        self.host.guard(self.pid)
        return await exited(self.pid)


def _task_stdio(out: int) -> list:
    """posix_spawn file actions: stdin from /dev/null, stdout and stderr to ``out`` (> 2)."""
    return [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, out, 2)]


async def exited(pid: int) -> int:
    """Wait for a task's process without blocking the loop; its return code
    (negative: the signal that killed it).

    A pidfd in the event loop costs no thread; where there is none (Python 3.8,
    Linux before 5.3) a thread waits.
    """
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(pid)  # AttributeError on 3.8
    except (AttributeError, OSError):
        status = (await loop.run_in_executor(None, os.waitpid, pid, 0))[1]
    else:
        gone = loop.create_future()

        def readable() -> None:
            loop.remove_reader(fd)
            if not gone.done():
                gone.set_result(None)

        try:
            loop.add_reader(fd, readable)
            await gone
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        status = os.waitpid(pid, 0)[1]  # it has exited: this only reaps it
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def use_pidfd_child_watcher(loop: asyncio.AbstractEventLoop) -> None:
    """On Python 3.9-3.11, watch task processes with pidfds instead of a thread each.

    The default watcher there starts one thread per child, which costs about half a
    millisecond per task; 3.12 uses pidfds by itself, 3.8 has no pidfd watcher.
    """
    if not (3, 9) <= sys.version_info[:2] < (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # kernel older than 5.3
        return
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(loop)
    asyncio.set_child_watcher(watcher)
