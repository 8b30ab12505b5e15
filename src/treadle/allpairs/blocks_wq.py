"""The Work Queue block driver shared by All-Pairs and Wavefront.

Both abstractions cut their work into blocks, one Work Queue task each, that
the shipped ``runner.py`` computes on a worker. What is common lives here once:
starting the manager (bind address, password, the line that says where workers
must connect), waiting for the first worker's report, keeping the manager fed,
retrying a failed block on another worker, measuring d_task, publishing h as
the manager's ``workers_wanted``, and cancelling what is left when a block has
failed every attempt. What differs (which blocks are ready, a block's task, where
its results go, the cost model and the error naming a failed pair or cell) is the
``BlockJob`` each abstraction hands to ``BlockDriver``.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Collection
from typing import TYPE_CHECKING, Protocol

from treadle.allpairs.functions import Resolved
from treadle.allpairs.plan import WorkerReport
from treadle.errors import AllPairsError

if TYPE_CHECKING:
    from treadle.queue import Manager, Stats, Task

log = logging.getLogger("treadle.allpairs")

# Target: the first block is submitted at most 6 s after start, and sampling
# takes up to 5 s. Planning waits for the first worker's report until this many
# seconds after start, which leaves the rest for planning and the first submit.
FIRST_WORKER_WAIT = 5.5
# Outstanding tasks per connected worker: enough to keep a worker busy while its
# next block's inputs travel, few enough that the job's order keeps its meaning.
PER_WORKER = 2
# Directories where executables are system programs that every worker has.
SYSTEM_DIRS = ("/bin", "/usr/bin", "/sbin", "/usr/sbin", "/usr/local/bin")
WORKER_PYTHON = "python3"

Key = tuple[int, int]


def function_spec(resolved: Resolved) -> tuple[dict, list[tuple[str, str]]]:
    """The runner's description of F on a worker, and the files to ship for it."""
    fn = resolved.function
    spec = fn.spec()
    files: list[tuple[str, str]] = []
    if fn.kind == "exec":
        if os.path.dirname(fn.executable) in SYSTEM_DIRS:
            spec["executable"] = fn.executable
        else:
            remote = "F/" + os.path.basename(fn.executable)
            files.append((fn.executable, remote))
            spec["executable"] = remote
    elif fn.kind == "callable":
        if not resolved.ship:
            raise AllPairsError(f"F {resolved.label} has no source file to ship to workers")
        source = resolved.ship[0]
        remote = "F/" + os.path.basename(source)
        files.append((source, remote))
        spec.update(source=remote, module=False, name=fn.name)
    return spec, files


def open_manager(port: int | None, random_port_file: str | None, project: str | None,
                 host: str = "", *, password_file: str | None = None,
                 announce: str | None = None) -> Manager:
    """The run's Work Queue manager, listening at once so workers connect during sampling.

    ``announce`` names the command in the line that says which port workers must
    use (the only way to learn a port picked with ``-p 0``); None keeps quiet.
    """
    from treadle.queue import DEFAULT_PORT, Manager

    if port is None:
        port = 0 if random_port_file else DEFAULT_PORT
    manager = Manager(port, name=project, host=host, password_file=password_file,
                      port_file=random_port_file)
    log.debug("manager listening on port %s", manager.port)
    if announce is not None:
        print(f"{announce}: {manager.listening}", file=sys.stderr, flush=True)
    return manager


def first_worker(manager: Manager, until: float, wait: bool = True) -> WorkerReport | None:
    """The resources of the first worker that reported, waiting for one (if ``wait``)
    until ``time.perf_counter()`` reaches ``until``; None if none did by then."""
    if not wait:
        until = 0.0
    while True:
        for info in manager.workers():
            if info.get("cores_total"):
                return WorkerReport(cores=int(info["cores_total"]),
                                    memory_bytes=int(info.get("memory_total") or 0) << 20,
                                    disk_bytes=int(info.get("disk_total") or 0) << 20)
        if time.perf_counter() >= until:
            return None
        time.sleep(0.05)


def dispatch_cost(task: Task) -> float:
    """One task's round trip less the time its command ran: sending inputs, dispatch,
    reporting and fetching the output. The median of these is d_task of the cost model."""
    return max(0.0, task.time_finished - task.time_started - task.execute_usec / 1e6)


def runner_report(output: bytes) -> dict:
    """The runner's last JSON line on stdout: its call count, or the failing pair or cell."""
    for line in reversed(output.decode("utf-8", "replace").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    return {}


def outcome(task: Task) -> str:
    """How a block's task ended, for the error that names it: 'RESULT, exit N'."""
    result = task.result.name if task.result is not None else "no result"
    return f"{result}, exit {task.exit_code}"


class BlockJob(Protocol):
    """A computation cut into blocks, as ``BlockDriver`` sees it."""

    def pop_ready(self) -> Key | None:
        """The next block whose inputs are all known, in the job's order; None if none is."""

    def requeue(self, key: Key) -> None:
        """Make a block that failed ready again."""

    def blocks_left(self) -> int:
        """Blocks not finished yet: ready, running, or waiting for others."""

    def task(self, key: Key) -> Task:
        """The Work Queue task that computes block ``key``."""

    def finished(self, key: Key, task: Task, report: dict) -> None:
        """Keep a block that succeeded (journalled before this returns)."""

    def failure(self, key: Key, task: Task, report: dict, attempts: int) -> AllPairsError:
        """The error that ends the run: block ``key`` failed ``attempts`` times."""

    def workers_wanted(self, k: int | None, d_task: float) -> int:
        """h of the cost model, with the worker's cores (None: none reported) and d_task."""

    def watch(self, stats: Stats, running: Collection[Key]) -> None:
        """Show the queue's counters (progress, picture); called once per turn."""


class BlockDriver:
    """Runs a ``BlockJob``'s blocks on whatever workers connect to ``manager``.

    At most ``PER_WORKER`` tasks per connected worker sit in the manager; the rest
    wait in the job, in its order. A block that fails is retried, up to ``retries``
    attempts in all, away from every worker it failed on (``Task.avoid_workers``),
    so a broken host cannot use up its attempts although it holds its inputs.
    """

    def __init__(self, manager: Manager, retries: int, workers_wanted: int):
        self.manager = manager
        self.retries = retries
        self.workers_wanted = workers_wanted  # h, published while blocks run
        self.calls = 0  # calls of F the runners reported
        self.retried = 0
        self.k_seen: int | None = None  # cores of a worker that reported
        self.costs: list[float] = []  # dispatch cost of each finished block task
        self.attempts: dict[Key, int] = defaultdict(int)
        self.failed_on: dict[Key, set[str]] = defaultdict(set)
        self.outstanding: dict[int, Key] = {}
        self.received: dict[str, int] = defaultdict(int)  # bytes back from each worker
        self.transferred: dict[str, int] = {}  # bytes each worker moved, both ways

    def run(self, job: BlockJob) -> None:
        """Until every block is finished; raises the job's failure when one fails every attempt."""
        manager = self.manager
        while True:
            stats = manager.stats
            job.watch(stats, self.outstanding.values())
            # no point in more workers than blocks left
            manager.workers_wanted = min(self.workers_wanted, job.blocks_left())
            while len(self.outstanding) < PER_WORKER * max(1, stats.workers_connected):
                key = job.pop_ready()
                if key is None:
                    break
                block = job.task(key)
                block.avoid_workers = self.failed_on[key]
                self.outstanding[manager.submit(block)] = key
            if not self.outstanding:
                return
            done = manager.wait(timeout=1.0)
            if done is not None:
                self._result(job, done)

    def _result(self, job: BlockJob, task: Task) -> None:
        from treadle.queue import Result

        key = self.outstanding.pop(task.id)
        report = runner_report(task.output)
        self._measure(task)
        if task.result is Result.SUCCESS and task.exit_code == 0:
            self.costs.append(dispatch_cost(task))
            self.workers_wanted = job.workers_wanted(self.k_seen, statistics.median(self.costs))
            job.finished(key, task, report)
            self.calls += report.get("calls", 0)
            return
        self.attempts[key] += 1
        if self.attempts[key] >= self.retries:
            self.abort()
            raise job.failure(key, task, report, self.attempts[key])
        self.retried += 1
        if task.host:
            self.failed_on[key].add(task.host)
        job.requeue(key)

    def _measure(self, task: Task) -> None:
        """Count what came back from the task's worker; note every worker's bytes and cores."""
        back = len(task.output)
        for f in task.outputs:
            if f.local and os.path.exists(f.local):
                back += os.path.getsize(f.local)
        self.received[task.host or "?"] += back
        for info in self.manager.workers():
            self.transferred[info["address_port"]] = info["total_bytes_transferred"]
            self.k_seen = self.k_seen or int(info.get("cores_total") or 0) or None

    def abort(self) -> None:
        """Cancel every block still in the manager."""
        for task_id in list(self.outstanding):
            self.manager.cancel(task_id)

    def d_task(self) -> float | None:
        """The measured d_task: the median dispatch cost of the finished blocks."""
        return statistics.median(self.costs) if self.costs else None

    def bytes_sent(self) -> dict[str, int]:
        """Bytes sent to each worker: all it transferred less what came back from it."""
        return {w: max(0, total - self.received.get(w, 0)) for w, total in self.transferred.items()}
