"""The Work Queue worker (see docs/workqueue.md): serves a manager and runs its tasks.

An asyncio shell around ``protocol.WorkerConnection``: the protocol module turns
bytes into events, this module turns events into files, processes and replies.
Standard library only and Python 3.8 syntax, because ``treadle worker-bundle``
ships this module (with the others ``bundle.WORKER_MODULES`` names) as a zipapp to
batch nodes where nothing else is installed.

A task runs as ``/bin/sh -c COMMAND``, or, when ``spawn`` proves the shell would
only split the command into words, as the program itself (one exec instead of two,
with the same observable results).

What treadle's worker does better than the reference (section 2.4): time limits
are timers (not loop wake-ups), a kill takes the task's whole process group, a
kill never stalls the worker, and sandbox names that leave the sandbox are refused.
No file operation made for a task follows a symlink out of the workspace
(``sandbox.resolve_beneath``), and a task's processes die with the worker, even
when it is killed with SIGKILL (``spawn.Watchdog``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator

from . import protocol as p
from . import sandbox as sb
from . import spawn
from .task_runner import Finished, TaskRunner, use_pidfd_child_watcher
from .worker_link import READ_SIZE, Dialer, Link, recv_to_file
from .worker_options import (
    RESOURCE_NAMES,
    WorkerOptions,
    WorkerUsageError,
    build_parser,
    parse_address,
    parse_options,
    treadle_version,
)

# what ``treadle worker``, ``treadle factory`` and the zipapp take from here
__all__ = ["WorkerOptions", "WorkerUsageError", "build_parser", "main", "parse_address",
           "parse_options", "run"]

log = logging.getLogger("treadle.worker")

# The cctools version the greeting reports: protocol-9 managers know this one.
CCTOOLS_VERSION = "8.0.0"

FORSAKEN = int(p.ResultCode.FORSAKEN)  # a plain int: formatted alike on python 3.8

BULK_MIN = 4 << 20  # a put with more than this still to come is read in a thread
WATCH_INTERVAL = 0.5  # seconds between two looks at WATCH outputs of running tasks
USAGE_INTERVAL = 1.0  # seconds between two checks of disk and memory use (running tasks only)
START_NOTICE_DELAY = 0.005  # seconds `info tasks_running` may wait for company after a start


def main(argv: list | None = None, prog: str = "treadle worker") -> int:
    """Entry point of the zipapp and of ``treadle worker``; returns the exit status."""
    try:
        opts = parse_options(sys.argv[1:] if argv is None else argv, prog)
    except WorkerUsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    return run(opts)


def run(opts: WorkerOptions) -> int:
    """Run a worker until it is told to stop; returns the exit status."""
    setup_logging(opts)
    try:
        return asyncio.run(Worker(opts).run())
    except KeyboardInterrupt:
        return 130


def setup_logging(opts: WorkerOptions) -> None:
    handler: logging.Handler
    if opts.debug_file:
        handler = logging.FileHandler(opts.debug_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s worker[%(process)d] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if opts.debug else logging.WARNING)


# --- resources ----------------------------------------------------------------------------


def detect_resources(opts: WorkerOptions, workspace_parent: str) -> dict:
    """What the worker offers: options, else all CPUs, physical memory, free disk, GPUs."""
    cores = opts.cores if opts.cores is not None else (os.cpu_count() or 1)
    if opts.memory is not None:
        memory = opts.memory
    else:
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
        except (ValueError, OSError):
            memory = 1024
    disk = opts.disk if opts.disk is not None else sb.free_disk_mb(workspace_parent)
    if opts.gpus is not None:
        gpus = opts.gpus
    else:
        try:
            gpus = sum(1 for n in os.listdir("/dev") if n[:6] == "nvidia" and n[6:].isdigit())
        except OSError:
            gpus = 0
    return {"cores": cores, "memory": memory, "disk": disk, "gpus": gpus}


def request_of(task: p.Task) -> dict:
    """A task's request; unset values ask for one core and nothing else."""
    return {
        "cores": task.cores if task.cores is not None else 1,
        "memory": task.memory or 0,
        "disk": task.disk or 0,
        "gpus": task.gpus or 0,
    }


# --- the worker -----------------------------------------------------------------------------


class _Stop(Exception):
    """Leave the current connection for the reason given."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Worker:
    """One worker process: connects, serves, reconnects, until told to stop."""

    def __init__(self, opts: WorkerOptions) -> None:
        self.opts = opts
        self.ws = sb.Workspace(sb.workspace_parent(opts.workdir))
        self.total: dict = {}
        self.end_time = time.time() + opts.wall_time if opts.wall_time else 0.0
        self.worker_id = "worker-" + secrets.token_hex(16)
        self._stopping: str | None = None  # a signal or the wall time ends the worker
        self._session: _Session | None = None
        self._home = -1  # our own working directory, to come back to after a spawn
        self._wake: asyncio.Event | None = None  # set by signals and the lifetime watch
        self._trash = 0
        self._watchdog: spawn.Watchdog | None = None  # kills our tasks if we die

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        use_pidfd_child_watcher(loop)
        wake = self._wake = asyncio.Event()
        for stale in sb.remove_stale_workspaces(os.path.dirname(self.ws.root)):
            log.info("removed %s, left by a worker that died", stale)
        try:
            self.ws.create()
        except OSError as e:
            log.error("cannot create workspace %s: %s", self.ws.root, e)
            print(f"worker: cannot create workspace {self.ws.root}: {e.strerror}",
                  file=sys.stderr)
            return 1
        self.total = detect_resources(self.opts, os.path.dirname(self.ws.root))
        for fd in (0, 1, 2):  # keep task output files off 0-2: the spawn rewires those
            try:
                os.fstat(fd)
            except OSError:
                os.open(os.devnull, os.O_RDWR)
        home_flags = getattr(os, "O_PATH", os.O_RDONLY) | getattr(os, "O_DIRECTORY", 0)
        try:
            self._home = os.open(".", home_flags)  # O_PATH: no read permission needed
        except OSError:  # a directory we may not even look at: the workspace will do
            self._home = os.open(self.ws.root, home_flags)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        watchers = [asyncio.ensure_future(self._watch_lifetime())]
        try:
            return await Dialer(self.opts, wake).keep_serving(
                self._serve, lambda: self._stopping)
        finally:
            for w in watchers:
                w.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            os.close(self._home)
            self.ws.destroy()
            if self._watchdog is not None:
                self._watchdog.close()

    async def _serve(self, link: Link) -> str:
        """Serve one connection; why it ended. The workspace is wiped after it."""
        session = _Session(self, link)
        self._session = session
        try:
            return await session.serve()
        finally:
            self._session = None
            await session.shutdown()
            self.ws.wipe()

    def _on_signal(self, sig: int) -> None:
        self._stopping = "vacate"
        if self._session is not None:
            self._session.stop("vacate", p.Info("vacating", str(int(sig))))
        if self._wake is not None:
            self._wake.set()

    async def _watch_lifetime(self) -> None:
        """--wall-time and --parent-death, checked once a second."""
        parent = os.getppid()
        while True:
            await asyncio.sleep(0.2 if self.end_time else 1.0)
            if self.end_time and time.time() >= self.end_time:
                self._stopping = "wall_time"
                if self._session is not None:
                    self._session.stop("wall_time", p.Info("wall_time_exhausted",
                                                           str(int(self.opts.wall_time or 0))))
                if self._wake is not None:
                    self._wake.set()
                return
            if self.opts.parent_death and os.getppid() != parent:
                self._stopping = "parent"
                if self._session is not None:
                    self._session.stop("parent", None)
                if self._wake is not None:
                    self._wake.set()
                return

    @contextlib.contextmanager
    def inside(self, directory: str) -> Iterator[None]:
        """Run the block with ``directory`` as the process's working directory.

        ``posix_spawn`` cannot set a child's directory, so the worker moves there
        for the length of the call. This is safe because the event loop does not
        yield inside the block and every path the worker's threads use is absolute.
        """
        os.chdir(directory)
        try:
            yield
        finally:
            os.fchdir(self._home)

    def guard(self, pgid: int) -> None:
        """Have process group ``pgid`` killed if this worker dies, even of SIGKILL."""
        if self._watchdog is None:
            self._watchdog = spawn.Watchdog()
        self._watchdog.add(pgid)

    def unguard(self, pgid: int) -> None:
        """Process group ``pgid`` is over: the watchdog forgets it."""
        if self._watchdog is not None:
            self._watchdog.remove(pgid)

    def trash(self, path: str) -> None:
        """Delete a path without stalling: small ones now, big trees in a thread."""
        try:
            if sb.remove_if_small(path):
                return
        except OSError:  # e.g. a read-only directory made by the task: the thread tries
            pass
        self._trash += 1
        spare = os.path.join(self.ws.root, f".trash.{self._trash}")
        try:
            os.rename(path, spare)
        except OSError:
            sb.remove(path)
            return
        asyncio.get_running_loop().run_in_executor(None, sb.remove, spare)


def memory_mb(groups: list) -> int:
    """Resident memory of every process in these process groups, in MB (Linux /proc)."""
    wanted = set(groups)
    if not wanted:
        return 0
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    try:
        pids = [d for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in wanted:  # fields after the name: state ppid pgrp ...
            total += int(fields[21]) * page  # rss in pages
    return total // (1 << 20)


class _Session:
    """One connection to a manager: its protocol state, tasks and watchdogs."""

    def __init__(self, worker: Worker, link: Link) -> None:
        self.w = worker
        self.ws = worker.ws
        self.link = link
        self.conn = p.WorkerConnection()
        self.lock = asyncio.Lock()
        self.waiting: list = []
        self.running: dict = {}
        self.finished: list = []
        self.announced = False
        self._watch_grew = False
        self.allocated = {name: 0 for name in RESOURCE_NAMES}
        self.free_gpus = list(range(worker.total["gpus"]))
        self.last_task_id = 0
        self.last_busy = time.monotonic()
        self.reason: str | None = None
        self._dirs: list = []  # descriptors of the dir stream's directories (-1: failed)
        self._put_fd: int | None = None
        self._put_at: tuple = (None, "")  # (dir_fd, name) of the file being received
        self._put_mode = 0
        self._children: set = set()
        # the worker's environment minus DISPLAY, read once: os.environ decodes on each read
        self.base_env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
        self.base_env["WORKER_TMPDIR"] = self.ws.tmp
        self.base_env["WORK_QUEUE_SANDBOX"] = self.ws.root
        self.use_symlinks = not worker.opts.disable_symlinks
        self.inside = worker.inside  # the TaskRunner's Host: process set-up lives with the worker
        self.guard = worker.guard
        self.unguard = worker.unguard

    # -- the connection ----------------------------------------------------------------

    async def serve(self) -> str:
        watchdogs = [asyncio.ensure_future(self._watch_idle()),
                     asyncio.ensure_future(self._watch_usage()),
                     asyncio.ensure_future(self._watch_outputs())]
        try:
            if self.w.opts.password is not None:
                await self._authenticate(self.w.opts.password)
            if self.w.opts.project:
                await self._check_project()
            await self._send(*self._greeting())
            while self.reason is None:
                try:
                    data = await self.link.read()
                except (ConnectionError, OSError):
                    data = b""
                if self.reason is not None:
                    break
                self.conn.receive_data(data)
                await self._handle_all()
                if self._put_fd is not None and not self.w.opts.tls and \
                        self.conn.payload_left >= BULK_MIN:  # TLS bytes need decrypting
                    await self._receive_bulk()
        except _Stop as stop:
            self.reason = self.reason or stop.reason
        except (p.ProtocolError, sb.SandboxError) as e:
            log.warning("protocol error from manager: %s", e)
            self.reason = "protocol error"
        except p.LocalProtocolError as e:  # a reply we cannot express: drop this connection
            log.error("cannot answer the manager: %s", e)
            self.reason = "internal error"
        except (ConnectionError, OSError) as e:
            self.reason = self.reason or f"connection lost ({e})"
        finally:
            for watchdog in watchdogs:
                watchdog.cancel()
        return self.reason or "eof"

    async def _handle_all(self) -> None:
        for event in self.conn.events():
            if isinstance(event, p.ConnectionClosed):
                raise _Stop("eof")
            await self._handle(event)

    async def _receive_bulk(self) -> None:
        """Read the rest of a big ``put`` from the socket into its file, in a thread.

        The event loop keeps serving timers and finished tasks meanwhile; the bytes
        skip asyncio's buffers and the protocol's events, which halves the cost of
        receiving a large input.
        """
        self.link.transport.pause_reading()
        try:
            for chunk in self.link.take_all():  # what arrived before the pause
                self.conn.receive_data(chunk)
                await self._handle_all()
            left = self.conn.payload_left
            if self._put_fd is None or left < BULK_MIN:
                return
            sock = self.link.transport.get_extra_info("socket")
            loop = asyncio.get_running_loop()
            got = await loop.run_in_executor(None, recv_to_file, sock.fileno(),
                                             self._put_fd, left)
            self.conn.payload_received(left)
            if not got:
                self._drop_put("write error")
            await self._handle_all()
        finally:
            if not self.link.transport.is_closing():
                self.link.transport.resume_reading()

    def stop(self, reason: str, farewell: p.Info | None) -> None:
        """End the connection from outside the reader (signal, idle, wall time)."""
        if self.reason is not None:
            return
        self.reason = reason
        for run in self.running.values():
            run.kill_processes()
        if farewell is not None and not self.lock.locked() and not self.conn.payload_owed:
            try:
                self.link.write(self.conn.send(farewell))
            except (p.LocalProtocolError, OSError):
                pass
        self.link.close()

    async def shutdown(self) -> None:
        """Kill every task and close the socket; the caller wipes the workspace."""
        for run in list(self.running.values()):
            run.kill()
        if self._children:
            await asyncio.wait(list(self._children), timeout=5)
        if self._put_fd is not None:
            os.close(self._put_fd)
            self._put_fd = None
        for fd in self._dirs:
            if fd >= 0:
                os.close(fd)
        self._dirs.clear()
        try:
            self.link.close()
        except OSError:
            pass

    async def _send(self, *events: p.Event) -> None:
        async with self.lock:
            self.link.write(b"".join(self.conn.send(e) for e in events))
            await self.link.drain()

    async def _read_events(self) -> list:
        while True:
            events = list(self.conn.events())
            if events:
                return events
            data = await asyncio.wait_for(self.link.read(), 30)
            self.conn.receive_data(data)

    async def _authenticate(self, password: bytes) -> None:
        """The password step in the worker's role: our answer leaves only after the
        manager proved the password, so a fake manager cannot reflect it (issue 9)."""
        hs = p.PasswordHandshake(password, p.WORKER)
        try:
            await self._send(*hs.start())
            while hs.succeeded is None:
                # one event at a time: what follows the step in the same read stays queued
                event = self.conn.next_event()
                if not isinstance(event, p.Event):  # NEED_DATA
                    self.conn.receive_data(await asyncio.wait_for(self.link.read(), 30))
                    continue
                if isinstance(event, p.ConnectionClosed):
                    raise ConnectionResetError("closed")
                await self._send(*hs.receive(event))
        except asyncio.TimeoutError:  # noqa: UP041 - 3.8
            # a manager that never proves the password (we answer only after it did)
            log.warning("the manager did not complete the password step in time")
            raise _Stop("password") from None
        except (ConnectionError, OSError):
            log.warning("the manager closed the connection during the password step "
                        "(wrong password, or a manager without one?)")
            raise _Stop("password") from None
        except p.ProtocolError as e:
            log.warning("the manager broke the password step: %s", e)
            raise _Stop("password") from None
        if not hs.succeeded:
            log.warning("password authentication with the manager failed: %s", hs.failure)
            raise _Stop("password")

    async def _check_project(self) -> None:
        import re

        await self._send(p.NameQuery())
        for event in await self._read_events():
            if isinstance(event, p.ProjectName):
                if re.fullmatch(self.w.opts.project or "", event.name):
                    return
                log.info("manager project %r does not match", event.name)
            raise _Stop("project mismatch")

    def _greeting(self) -> list:
        opts = self.w.opts
        events: list = [
            p.Greeting(socket.gethostname().split()[0] or "localhost",
                       opts.os_name or platform.system() or "Linux",
                       opts.arch or platform.machine() or "unknown", CCTOOLS_VERSION),
            p.Info("worker-id", self.w.worker_id),
            p.Info("treadle-version", treadle_version()),
            p.Info(p.PREFETCH_INFO, "1"),  # tasks beyond our room wait here (_schedule)
        ]
        events += [p.Feature(f) for f in opts.features]
        events.append(p.Alive())
        events += self._resources()
        events += [p.Info("tasks_running", "0"),
                   p.Info("worker-end-time", str(int(self.w.end_time)))]
        return events

    def _resources(self) -> list:
        t = self.w.total
        out = [p.Resource("workers", 1, 1, 1)]
        out += [p.Resource(n, t[n], t[n], t[n]) for n in ("disk", "memory", "gpus", "cores")]
        return out + [p.ResourceTag(self.last_task_id), p.Info("end_of_resource_update", "0")]

    async def _watch_idle(self) -> None:
        timeout = self.w.opts.idle_timeout
        while True:
            await asyncio.sleep(min(1.0, max(0.05, timeout / 4)))
            if self.waiting or self.running or self.finished:
                self.last_busy = time.monotonic()
            elif time.monotonic() - self.last_busy >= timeout:
                self.stop("idle", p.Info("idle-disconnecting", str(int(timeout))))
                return

    async def _watch_usage(self) -> None:
        """--disk and --memory are promises: break one and the worker leaves (section 2.4)."""
        loop = asyncio.get_running_loop()
        total = self.w.total
        while True:
            await asyncio.sleep(USAGE_INTERVAL)
            if not self.running:
                continue
            disk = await loop.run_in_executor(None, sb.used_disk_mb, self.ws.root)
            memory = await loop.run_in_executor(
                None, memory_mb, [r.pid for r in self.running.values() if r.pid])
            if disk > total["disk"]:
                log.warning("workspace uses %d MB, more than --disk %d", disk, total["disk"])
                self.stop("exhausted", p.Info("disk_exhausted", str(disk)))
                return
            if memory > total["memory"]:
                log.warning("tasks use %d MB, more than --memory %d", memory, total["memory"])
                self.stop("exhausted", p.Info("memory_exhausted", str(memory)))
                return

    # -- events ------------------------------------------------------------------------

    async def _handle(self, ev: p.Event) -> None:
        if isinstance(ev, p.Data):
            if self._put_fd is not None:
                try:
                    view = memoryview(ev.data)
                    while view:
                        view = view[os.write(self._put_fd, view):]
                except OSError as e:
                    self._drop_put(str(e))
        elif isinstance(ev, p.EndOfData):
            if self._put_fd is not None:  # by descriptor: the name may be a symlink by now
                os.fchmod(self._put_fd, self._put_mode | 0o600)
                os.close(self._put_fd)
                self._put_fd = None
        elif isinstance(ev, p.Put):
            self._open_put(ev)
        elif isinstance(ev, p.Task):
            self._receive_task(ev)
        elif isinstance(ev, p.SendResults):
            await self._send_results()
        elif isinstance(ev, p.Get):
            await self._send_get(ev.name)
        elif isinstance(ev, p.Kill):
            self._kill(ev.task_id)
        elif isinstance(ev, p.Unlink):
            self.w.trash(self.ws.cache_path(ev.name))
        elif isinstance(ev, p.Dir):
            self._open_dir(ev.name)
        elif isinstance(ev, p.End):
            fd = self._dirs.pop()
            if fd >= 0:
                os.close(fd)
        elif isinstance(ev, p.Symlink):
            self._symlink(ev)
        elif isinstance(ev, p.Check):
            await self._send(p.Alive(), p.Info("tasks_running", str(self._n_running())))
        elif isinstance(ev, p.Release):
            raise _Stop("release")
        elif isinstance(ev, p.Exit):
            raise _Stop("exit")
        elif isinstance(ev, p.Url):
            await self._fetch_url(ev)
        elif isinstance(ev, p.ThirdGet):
            await self._third_get(ev)
        elif isinstance(ev, p.ThirdPut):
            ok = await self._third_put(ev)
            await self._send(p.ThirdPutComplete(ok))
        elif isinstance(ev, p.Auth):
            log.warning("this manager requires a password (use -P FILE)")
            raise _Stop("password")
        # InvalidateFile (foreman only) and Tlq are ignored, as the reference worker ignores them.

    def _target(self, name: str) -> tuple:
        """``(dir_fd, name)`` of a received item: in the directory being received, by
        its descriptor (a task that swaps a path for a symlink meanwhile cannot send
        it elsewhere), or else in the cache (``dir_fd`` None)."""
        if self._dirs:
            return self._dirs[-1], name
        return None, self.ws.cache_path(name)

    def _open_put(self, ev: p.Put) -> None:
        self._put_at, self._put_mode = self._target(ev.name), ev.mode
        try:
            self._put_fd = sb.fresh_file(self._put_at[1], ev.mode, self._put_at[0])
        except OSError as e:
            log.warning("cannot create %s: %s", ev.name, e)
            self._put_fd = None

    def _drop_put(self, why: str) -> None:
        """Give up the file being received (its bytes are still read, to keep the framing)."""
        log.warning("cannot write %s: %s", self._put_at[1], why)
        if self._put_fd is not None:
            os.close(self._put_fd)
            self._put_fd = None
        with contextlib.suppress(OSError):
            sb.remove_at(*self._put_at)

    def _open_dir(self, name: str) -> None:
        dir_fd, target = self._target(name)
        try:
            fd = sb.fresh_dir(target, dir_fd)
        except OSError as e:
            log.warning("cannot create directory %s: %s", name, e)
            fd = -1
        self._dirs.append(fd)

    def _symlink(self, ev: p.Symlink) -> None:
        dir_fd, target = self._target(ev.name)
        try:
            sb.remove_at(dir_fd, target)
            os.symlink(os.fsdecode(ev.target_path), target, dir_fd=dir_fd)
        except (OSError, ValueError) as e:
            log.warning("cannot create symlink %s: %s", ev.name, e)

    # -- tasks -------------------------------------------------------------------------

    def _receive_task(self, task: p.Task) -> None:
        self.last_task_id = task.task_id
        self.last_busy = time.monotonic()
        if task.task_id in self.running or any(t.task_id == task.task_id for t in self.waiting):
            log.warning("task %d is already here; the second copy is ignored", task.task_id)
            return
        request = request_of(task)
        if any(request[n] > self.w.total[n] for n in RESOURCE_NAMES):
            log.info("task %d asks for more than this worker has: forsaken", task.task_id)
            self._post(*self._resources())
            self.finish(Finished(task.task_id, FORSAKEN, 0, 0, None))
            return
        self.waiting.append(task)
        self._schedule()

    def _schedule(self) -> None:
        still = []
        for task in self.waiting:
            request = request_of(task)
            if self.reason is None and all(
                    self.allocated[n] + request[n] <= self.w.total[n] for n in RESOURCE_NAMES):
                for n in RESOURCE_NAMES:
                    self.allocated[n] += request[n]
                gpu_ids, self.free_gpus = (self.free_gpus[: request["gpus"]],
                                           self.free_gpus[request["gpus"]:])
                run = TaskRunner(task, request, gpu_ids, self)
                self.running[task.task_id] = run
                child = asyncio.ensure_future(run.run())
                self._children.add(child)
                child.add_done_callback(self._children.discard)
            else:
                still.append(task)
        self.waiting = still

    def _n_running(self) -> int:
        """Tasks running for the manager (killed ones may still be dying)."""
        return sum(1 for run in self.running.values() if run.counted)

    @property
    def connected(self) -> bool:
        """Whether this connection still serves its manager (a TaskRunner asks)."""
        return self.reason is None

    def notice_start(self) -> None:
        """`info tasks_running` after a start. Not urgent: a short task's end usually
        carries it along (one segment, and one wake-up of the manager, instead of two)."""
        self._post(p.Info("tasks_running", str(self._n_running())), delay=START_NOTICE_DELAY)

    def release(self, run: TaskRunner) -> None:
        """A task's resources are free again (its runner left the states that hold them)."""
        if self.running.pop(run.task.task_id, None) is run:
            for n in RESOURCE_NAMES:
                self.allocated[n] -= run.alloc[n]
            self.free_gpus = sorted(self.free_gpus + run.gpu_ids)
        self.last_busy = time.monotonic()
        self._schedule()

    def finish(self, done: Finished) -> None:
        self.finished.append(done)
        self.last_busy = time.monotonic()
        self._announce()

    def _announce(self) -> None:
        """`available_results`, once until served (tasks_running goes with each result)."""
        if not self.announced and (self.finished or self._watch_grew):
            self.announced = True
            self._watch_grew = False
            self._post(p.AvailableResults())

    def _post(self, *events: p.Event, delay: float = 0.0) -> None:
        """Send asynchronous lines at the end of this loop turn, or after the reply being written."""
        if self.reason is not None:
            return
        if self.lock.locked():  # never inside a reply: queue behind it
            asyncio.ensure_future(self._send_quietly(*events))
            return
        try:
            self.link.write(b"".join(self.conn.send(e) for e in events))
            self.link.flush_soon(delay)
        except (ConnectionError, OSError):
            pass  # the reader notices a dead connection

    async def _send_quietly(self, *events: p.Event) -> None:
        """Asynchronous lines: a dead connection is noticed by the reader instead."""
        if self.reason is not None:
            return
        try:
            await self._send(*events)
        except (ConnectionError, OSError):
            pass

    def _kill(self, task_id: int) -> None:
        if task_id == -1:
            ids = [t.task_id for t in self.waiting] + list(self.running) + [
                f.task_id for f in self.finished]
            for tid in set(ids):
                self._kill(tid)
            return
        self.waiting = [t for t in self.waiting if t.task_id != task_id]
        self.finished = [f for f in self.finished if f.task_id != task_id]
        run = self.running.get(task_id)
        if run is not None:
            run.kill()  # its runner discards it once the process is gone
            return
        self.discard(task_id)

    def discard(self, task_id: int) -> None:
        """Delete a task's sandbox (kept as a spare when it is empty) and its stdout."""
        box = self.ws.sandbox_path(task_id)
        if not self.ws.recycle(box):
            self.w.trash(box)
        out = self.ws.stdout_path(task_id)
        if not self.ws.recycle_stdout(out):
            self.w.trash(out)

    # -- replies -----------------------------------------------------------------------

    async def _send_results(self) -> None:
        async with self.lock:
            batch, self.finished = self.finished, []
            self.announced = False
            for run in list(self.running.values()):
                await self._send_updates(run)
            for done in batch:
                fd, size = -1, 0
                if done.status != FORSAKEN and done.stdout:  # never through a planted symlink
                    fd, size = sb.open_regular(self.ws.root, os.path.basename(done.stdout),
                                               follow=False)
                try:
                    self.link.write(self.conn.send(
                        p.Result(done.status, done.exit_code, size, done.usec, done.task_id)))
                    if size:
                        await self._stream_file(fd, size)
                finally:
                    if fd >= 0:
                        os.close(fd)
                self.link.write(self.conn.send(
                    p.Info("tasks_running", str(self._n_running()))))
            self.link.write(self.conn.send(p.End()))
            await self.link.drain()

    async def _send_updates(self, run: TaskRunner) -> None:
        """`update` blocks for the new bytes of a running task's WATCH outputs (3.7)."""
        for name, offset in run.watched.items():
            if " " in name or "\n" in name:
                continue
            fd, size = sb.open_regular(run.box, name)
            if fd < 0:
                continue
            try:
                if size > offset:
                    self.link.write(self.conn.send(
                        p.Update(run.task.task_id, name, offset, size - offset)))
                    await self._stream_file(fd, size - offset, offset)
                    run.watched[name] = size
            finally:
                os.close(fd)

    async def _watch_outputs(self) -> None:
        """Ask for `send_results` when a WATCH output of a running task grows."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            for run in list(self.running.values()):
                for name, offset in run.watched.items():
                    fd, size = sb.open_regular(run.box, name)
                    if fd >= 0:
                        os.close(fd)
                    if size > offset and not self.announced:
                        self._watch_grew = True
                        self._announce()

    async def _stream_file(self, fd: int, size: int, offset: int = 0) -> None:
        """Send exactly ``size`` bytes of open file ``fd`` from ``offset`` (zero-padded if
        it shrank meanwhile). Callers open files with ``sb.open_beneath``, never by a
        plain path, which a task could have turned into a symlink to elsewhere."""
        sent = 0
        try:
            with os.fdopen(fd, "rb", closefd=False) as f:
                await self.link.drain()
                loop = asyncio.get_running_loop()
                try:
                    sent = await loop.sendfile(self.link.transport, f, offset, size)
                except (NotImplementedError, RuntimeError):
                    f.seek(offset)
                    while sent < size:
                        chunk = f.read(min(READ_SIZE, size - sent))
                        if not chunk:
                            break
                        self.link.write(chunk)
                        sent += len(chunk)
                        await self.link.drain()
        except OSError as e:
            if isinstance(e, ConnectionError):
                raise
            log.warning("cannot read a file to send: %s", e)
        while sent < size:  # keep the framing: the header promised ``size`` bytes
            pad = min(READ_SIZE, size - sent)
            self.link.write(bytes(pad))
            sent += pad
            await self.link.drain()
        self.conn.payload_streamed(size)

    async def _send_get(self, name: str) -> None:
        self.ws.cache_path(name)  # a name that is no cache entry's is a protocol error
        async with self.lock:
            await self._send_tree(name, name, set())
            self.link.write(self.conn.send(p.End()))
            await self.link.drain()

    async def _send_tree(self, rel: str, wire: str, ancestors: set) -> None:
        """A get reply item for ``rel`` in the cache: symlinks are followed while they
        stay in the cache; a dangling one is `missing`, and so is one leading outside
        (EXDEV), since an output can be a symlink its task planted."""
        try:
            fd = sb.open_beneath(self.ws.cache, rel)
        except OSError as e:
            self.link.write(self.conn.send(p.Missing(wire, e.errno or 2)))
            return
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    self.link.write(self.conn.send(p.Missing(wire, 40)))  # ELOOP
                    return
                self.link.write(self.conn.send(p.DirReply(wire)))
                try:
                    entries = os.listdir(fd)
                except OSError:
                    entries = []
                for entry in entries:
                    if "\n" in entry:
                        log.warning("skipping output entry with a newline in its name: %r", entry)
                        continue
                    await self._send_tree(f"{rel}/{entry}", f"{wire}/{entry}", ancestors | {key})
                await self.link.drain()
            elif stat.S_ISREG(st.st_mode):
                self.link.write(self.conn.send(p.FileReply(wire, st.st_size)))
                if st.st_size:
                    await self._stream_file(fd, st.st_size)
            else:
                self.link.write(self.conn.send(p.Missing(wire, 22)))  # EINVAL: not a file
        finally:
            os.close(fd)

    # -- other inputs ------------------------------------------------------------------

    def _refused(self, what: str) -> bool:
        """Whether --disable-third-party refuses ``what`` (said in the log if so).

        Refused inputs never reach the cache, so the task that needs them fails
        with INPUT_MISSING; a refused thirdput replies failure.
        """
        if self.w.opts.disable_third_party:
            log.warning("refused (--disable-third-party): %s", what)
        return self.w.opts.disable_third_party

    async def _fetch_url(self, ev: p.Url) -> None:
        path = self.ws.cache_path(ev.name)
        if urllib.parse.urlsplit(ev.url).scheme.lower() not in ("http", "https") and \
                self._refused(f"url {ev.url}"):
            return

        def fetch() -> None:
            with urllib.request.urlopen(ev.url, timeout=3600) as r:
                fd = sb.fresh_file(path, ev.mode)
                with os.fdopen(fd, "wb") as f:
                    shutil.copyfileobj(r, f, READ_SIZE)

        try:
            await asyncio.get_running_loop().run_in_executor(None, fetch)
        except (OSError, ValueError) as e:
            log.warning("cannot fetch %s: %s", ev.url, e)
            sb.remove(path)

    async def _third_get(self, ev: p.ThirdGet) -> None:
        path = self.ws.cache_path(ev.name)
        try:
            sb.remove(path)
            if self._refused(f"thirdget {ev.mode} {ev.path}"):
                return
            if ev.mode == 1:
                proc = await asyncio.create_subprocess_exec(
                    "/bin/sh", "-c", ev.path.replace("%%", path), cwd=self.ws.root,
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    start_new_session=True)
                self.w.guard(proc.pid)
                await proc.wait()
                self.w.unguard(proc.pid)
            elif ev.mode == 2:
                await asyncio.get_running_loop().run_in_executor(
                    None, _copy_any, os.path.abspath(ev.path), path)
            elif ev.mode == 3:
                os.symlink(ev.path, path)
        except OSError as e:
            log.warning("thirdget %s failed: %s", ev.name, e)

    async def _third_put(self, ev: p.ThirdPut) -> bool:
        path = self.ws.cache_path(ev.name)
        if self._refused(f"thirdput {ev.mode} {ev.path}"):
            return False
        try:
            if ev.mode == 1:
                with open(path, "rb") as f:
                    proc = await asyncio.create_subprocess_exec(
                        "/bin/sh", "-c", ev.path, cwd=self.ws.root, stdin=f,
                        stdout=subprocess.DEVNULL, start_new_session=True)
                self.w.guard(proc.pid)
                ok = await proc.wait() == 0
                self.w.unguard(proc.pid)
                return ok
            await asyncio.get_running_loop().run_in_executor(None, _copy_any, path, os.path.abspath(ev.path))
            return True
        except OSError as e:
            log.warning("thirdput %s failed: %s", ev.name, e)
            return False


def _copy_any(source: str, target: str) -> None:
    if os.path.isdir(source):
        shutil.copytree(source, target, symlinks=True)
    else:
        shutil.copyfile(source, target)


if __name__ == "__main__":
    sys.exit(main())
