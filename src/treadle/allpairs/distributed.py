"""Distributed mode: one Work Queue task per block, through treadle.queue.

Every input of a block task is cached on the worker and named by content, so an
item crosses the network at most once per worker: ``runner.py``, F (or its
source file), the ``-f`` files, and the block's items staged as
``A/<i>/<basename>`` and ``B/<j>/<basename>``. The block description travels as
a small uncached buffer. Tasks declare no resources, so each takes a whole
worker and the runner uses all of its cores (the worker sets ``CORES``).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from treadle.allpairs import runner as runner_module
from treadle.allpairs.functions import Resolved, pair_error
from treadle.allpairs.local import block_items
from treadle.allpairs.plan import Plan, WorkerReport, optimise
from treadle.allpairs.progress import Progress
from treadle.allpairs.sets import ItemSet
from treadle.allpairs.state import State, sha256_file
from treadle.errors import AllPairsError

if TYPE_CHECKING:
    from treadle.queue import Manager, Task

log = logging.getLogger("treadle.allpairs")

DEFAULT_PORT = 9123
# Target: the first block is submitted at most 6 s after start, and sampling
# takes up to 5 s. Planning waits for the first worker's report until this many
# seconds after start, which leaves the rest for planning and the first submit.
FIRST_WORKER_WAIT = 5.5
# Outstanding tasks per connected worker: enough to keep a worker busy while its
# next block's inputs travel, few enough that band order keeps its meaning.
PER_WORKER = 2
# Directories where executables are system programs that every worker has.
SYSTEM_DIRS = ("/bin", "/usr/bin", "/sbin", "/usr/sbin", "/usr/local/bin")
WORKER_PYTHON = "python3"


def _function_spec(resolved: Resolved) -> tuple[dict, list[tuple[str, str]]]:
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


def _staged(index: int, path: str, side: str) -> str:
    return f"{side}/{index}/{os.path.basename(path)}"


def _extra_remote(path: str) -> str:
    return os.path.basename(path) if os.path.isabs(path) else os.path.normpath(path)


def open_manager(port: int | None, random_port_file: str | None, project: str | None,
                 host: str = "", *, password_file: str | None = None,
                 announce: str | None = None) -> Manager:
    """The run's Work Queue manager, listening at once so workers connect during sampling.

    ``announce`` names the command in the line that says which port workers must
    use (the only way to learn a port picked with ``-p 0``); None keeps quiet.
    """
    from treadle.queue import Manager

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


def workers_wanted(plan: Plan, n: int, m: int, symmetric: bool, k: int,
                   d_task: float) -> int:
    """h* of the cost model with what the run has measured: the worker's k and d_task."""
    return optimise(n, m, plan.t, plan.s, k=k, k_local=plan.k_local, d_task=d_task,
                    d_host=plan.d_host, bandwidth=plan.bandwidth, h_max=plan.h_max,
                    transfer=plan.transfer, symmetric=symmetric).h


def run_distributed(manager: Manager, resolved: Resolved, a: ItemSet, b: ItemSet, plan: Plan,
                    state: State, todo: list[tuple[int, int]], *, symmetric: bool,
                    priority: int, extra_files: tuple[str, ...] | list[str], retries: int,
                    progress: Progress) -> dict:
    """Run the blocks in ``todo`` on whatever workers connect to ``manager``; journal each.

    The plan's h* is published as the manager's ``workers_wanted`` and refreshed as
    finished tasks measure d_task and a worker reports its cores.
    """
    from treadle.queue import Result, Task

    spec, f_files = _function_spec(resolved)
    runner_path = runner_module.__file__
    side_b = "A" if symmetric else "B"
    costs: list[float] = []  # dispatch cost of each finished block task
    k_seen: int | None = None
    h_now = plan.h_star
    attempts: dict[tuple[int, int], int] = defaultdict(int)
    failed_on: dict[tuple[int, int], set[str]] = defaultdict(set)  # retried on another worker
    received: dict[str, int] = defaultdict(int)
    transferred: dict[str, int] = {}
    calls = retried = 0
    item_bytes = sum(os.path.getsize(p) for p in set(a.paths) | set(b.paths))
    item_bytes += sum(os.path.getsize(p) for p, _ in f_files) + os.path.getsize(runner_path)
    pending = list(reversed(todo))
    outstanding: dict[int, tuple[int, int]] = {}

    def make_task(bx: int, by: int):
        rows, cols = block_items(a.paths, b.paths, plan.x, plan.y, bx, by)
        block = {"function": spec, "symmetric": symmetric,
                 "rows": [[i, _staged(i, p, "A")] for i, p in rows],
                 "cols": [[j, _staged(j, p, side_b)] for j, p in cols]}
        task = Task(f"{WORKER_PYTHON} runner.py block.json out.tsv", tag=f"block {bx} {by}",
                    priority=priority)
        task.add_input(runner_path, "runner.py", cache=True)
        for local, remote in f_files:
            task.add_input(local, remote, cache=True)
        for path in extra_files:
            task.add_input(path, _extra_remote(path), cache=True)
        for i, p in rows:
            task.add_input(p, _staged(i, p, "A"), cache=True)
        for j, p in cols:
            if symmetric and plan.x * bx <= j < plan.x * (bx + 1):
                continue  # a diagonal block's columns are its rows
            task.add_input(p, _staged(j, p, side_b), cache=True)
        task.add_input_buffer(json.dumps(block).encode(), "block.json", cache=False)
        task.add_output(str(state.temp_path(bx, by)), "out.tsv")
        return task

    while pending or outstanding:
        workers = manager.stats.workers_connected
        progress.workers = workers
        # no point in more workers than blocks left
        manager.workers_wanted = min(h_now, len(pending) + len(outstanding))
        while pending and len(outstanding) < PER_WORKER * max(1, workers):
            key = pending.pop()
            progress.submitted()
            task = make_task(*key)
            task.avoid_workers = failed_on[key]
            outstanding[manager.submit(task)] = key
        task = manager.wait(timeout=1.0)
        if task is None:
            continue
        key = outstanding.pop(task.id)
        report = _report(task.output)
        path = state.temp_path(*key)
        received[task.host or "?"] += len(task.output) + (
            os.path.getsize(path) if os.path.exists(path) else 0)
        for info in manager.workers():
            transferred[info["address_port"]] = info["total_bytes_transferred"]
            k_seen = k_seen or int(info.get("cores_total") or 0) or None
        if task.result is Result.SUCCESS and task.exit_code == 0:
            costs.append(dispatch_cost(task))
            h_now = workers_wanted(plan, len(a), len(b), symmetric, k_seen or plan.k,
                                   statistics.median(costs))
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            state.commit(*key, sha256_file(Path(path)))
            calls += report.get("calls", 0)
            progress.advance(1, _count_lines(state.block_path(*key)))
            continue
        attempts[key] += 1
        failed = report.get("failed")
        if attempts[key] >= retries:
            for other in list(outstanding):
                manager.cancel(other)
            if failed:
                raise pair_error(a.names, b.names, failed[0], failed[1],
                                 report.get("message", "F failed"), report.get("stderr", ""),
                                 attempts[key])
            tail = task.output.decode("utf-8", "replace")[-500:].strip()
            raise AllPairsError(f"block {key[0]},{key[1]} failed {attempts[key]} times on "
                                f"workers ({task.result.name}, exit {task.exit_code}): {tail}")
        retried += 1
        if task.host:
            failed_on[key].add(task.host)
        pending.append(key)
    # bytes sent to a worker = all it transferred minus what came back from it
    sent = {w: max(0, total - received.get(w, 0)) for w, total in transferred.items()}
    used = max(1, len(sent))
    return {"calls": calls, "retries": retried, "bytes_sent": sent,
            "bytes_sent_ratio": sum(sent.values()) / (item_bytes * used),
            "workers": len(sent), "port": manager.port,
            "d_task": statistics.median(costs) if costs else None, "k_worker": k_seen,
            "workers_wanted": h_now}


def _report(output: bytes) -> dict:
    """The runner's last JSON line on stdout: its call count, or the failing pair."""
    for line in reversed(output.decode("utf-8", "replace").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    return {}


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)

