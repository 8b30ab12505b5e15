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
import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from treadle.allpairs import runner as runner_module
from treadle.allpairs.blocks_wq import WORKER_PYTHON, BlockDriver, Key, function_spec, outcome
from treadle.allpairs.functions import Resolved, pair_error
from treadle.allpairs.local import block_items
from treadle.allpairs.plan import Plan, optimise
from treadle.allpairs.progress import Progress
from treadle.allpairs.sets import ItemSet
from treadle.allpairs.state import State, sha256_file
from treadle.errors import AllPairsError

if TYPE_CHECKING:
    from treadle.queue import Manager, Stats, Task


def workers_wanted(plan: Plan, n: int, m: int, symmetric: bool, k: int,
                   d_task: float) -> int:
    """h* of the cost model with what the run has measured: the worker's k and d_task."""
    return optimise(n, m, plan.t, plan.s, k=k, k_local=plan.k_local, d_task=d_task,
                    d_host=plan.d_host, bandwidth=plan.bandwidth, h_max=plan.h_max,
                    transfer=plan.transfer, symmetric=symmetric).h


def _staged(index: int, path: str, side: str) -> str:
    return f"{side}/{index}/{os.path.basename(path)}"


def _extra_remote(path: str) -> str:
    return os.path.basename(path) if os.path.isabs(path) else os.path.normpath(path)


class _Blocks:
    """All-Pairs as ``BlockDriver`` sees it: independent blocks, submitted in band order."""

    def __init__(self, resolved: Resolved, a: ItemSet, b: ItemSet, plan: Plan, state: State,
                 todo: list[Key], *, symmetric: bool, priority: int,
                 extra_files: Sequence[str], progress: Progress):
        self.spec, self.f_files = function_spec(resolved)
        self.a, self.b, self.plan, self.state = a, b, plan, state
        self.symmetric, self.priority, self.extra_files = symmetric, priority, extra_files
        self.progress = progress
        self.pending = list(reversed(todo))  # popped from the end: a retry goes next
        self.left = len(todo)

    def pop_ready(self) -> Key | None:
        return self.pending.pop() if self.pending else None

    def requeue(self, key: Key) -> None:
        self.pending.append(key)

    def blocks_left(self) -> int:
        return self.left

    def task(self, key: Key) -> Task:
        from treadle.queue import Task

        bx, by = key
        plan, symmetric = self.plan, self.symmetric
        side_b = "A" if symmetric else "B"
        rows, cols = block_items(self.a.paths, self.b.paths, plan.x, plan.y, bx, by)
        block = {"function": self.spec, "symmetric": symmetric,
                 "rows": [[i, _staged(i, p, "A")] for i, p in rows],
                 "cols": [[j, _staged(j, p, side_b)] for j, p in cols]}
        task = Task(f"{WORKER_PYTHON} runner.py block.json out.tsv", tag=f"block {bx} {by}",
                    priority=self.priority)
        task.add_input(runner_module.__file__, "runner.py", cache=True)
        for local, remote in self.f_files:
            task.add_input(local, remote, cache=True)
        for path in self.extra_files:
            task.add_input(path, _extra_remote(path), cache=True)
        for i, p in rows:
            task.add_input(p, _staged(i, p, "A"), cache=True)
        for j, p in cols:
            if symmetric and plan.x * bx <= j < plan.x * (bx + 1):
                continue  # a diagonal block's columns are its rows
            task.add_input(p, _staged(j, p, side_b), cache=True)
        task.add_input_buffer(json.dumps(block).encode(), "block.json", cache=False)
        task.add_output(str(self.state.temp_path(bx, by)), "out.tsv")
        self.progress.submitted()
        return task

    def finished(self, key: Key, task: Task, report: dict) -> None:
        with open(self.state.temp_path(*key), "rb") as f:
            os.fsync(f.fileno())
        self.state.commit(*key, sha256_file(self.state.temp_path(*key)))
        self.left -= 1
        self.progress.advance(1, _count_lines(self.state.block_path(*key)))

    def failure(self, key: Key, task: Task, report: dict, attempts: int) -> AllPairsError:
        failed = report.get("failed")
        if failed:
            return pair_error(self.a.names, self.b.names, failed[0], failed[1],
                              report.get("message", "F failed"), report.get("stderr", ""),
                              attempts)
        tail = task.output.decode("utf-8", "replace")[-500:].strip()
        return AllPairsError(f"block {key[0]},{key[1]} failed {attempts} times on "
                             f"workers ({outcome(task)}): {tail}")

    def workers_wanted(self, k: int | None, d_task: float) -> int:
        return workers_wanted(self.plan, len(self.a), len(self.b), self.symmetric,
                              k or self.plan.k, d_task)

    def watch(self, stats: Stats, running: Collection[Key]) -> None:
        self.progress.workers = stats.workers_connected


def run_distributed(manager: Manager, resolved: Resolved, a: ItemSet, b: ItemSet, plan: Plan,
                    state: State, todo: list[Key], *, symmetric: bool,
                    priority: int, extra_files: Sequence[str], retries: int,
                    progress: Progress) -> dict:
    """Run the blocks in ``todo`` on whatever workers connect to ``manager``; journal each.

    The plan's h* is published as the manager's ``workers_wanted`` and refreshed as
    finished tasks measure d_task and a worker reports its cores.
    """
    job = _Blocks(resolved, a, b, plan, state, todo, symmetric=symmetric, priority=priority,
                  extra_files=extra_files, progress=progress)
    driver = BlockDriver(manager, retries, plan.h_star)
    item_bytes = sum(os.path.getsize(p) for p in set(a.paths) | set(b.paths))
    item_bytes += sum(os.path.getsize(p) for p, _ in job.f_files)
    item_bytes += os.path.getsize(runner_module.__file__)
    driver.run(job)
    sent = driver.bytes_sent()
    used = max(1, len(sent))
    return {"calls": driver.calls, "retries": driver.retried, "bytes_sent": sent,
            "bytes_sent_ratio": sum(sent.values()) / (item_bytes * used),
            "workers": len(sent), "port": manager.port,
            "d_task": driver.d_task(), "k_worker": driver.k_seen,
            "workers_wanted": driver.workers_wanted}


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)
