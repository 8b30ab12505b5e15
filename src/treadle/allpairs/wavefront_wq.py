"""Distributed Wavefront: b×b blocks of cells, one Work Queue task each.

Block (X, Y) is ready once blocks (X−1, Y), (X, Y−1) and (X−1, Y−1) are complete.
Its only data input is a small buffer with the row below it and the column to
its left (corner included); the shipped runner sweeps the block anti-diagonal by
anti-diagonal on the worker's cores and returns its b² values.
"""

from __future__ import annotations

import heapq
import json
import os
import statistics
import tempfile
import time
from typing import TYPE_CHECKING

from treadle.allpairs import runner as runner_module
from treadle.allpairs.distributed import WORKER_PYTHON, _function_spec, _report, dispatch_cost
from treadle.allpairs.functions import Resolved
from treadle.allpairs.progress import WaveProgress
from treadle.allpairs.wavefront_bitmap import BITMAP_INTERVAL, write_bitmap
from treadle.allpairs.wavefront_model import WavePlan, best_workers
from treadle.errors import AllPairsError

if TYPE_CHECKING:
    from treadle.queue import Manager


def _span(index: int, b: int, size: int) -> tuple[int, int]:
    return index * b + 1, min(size, (index + 1) * b)


def run_blocks(manager: Manager, resolved: Resolved, known: dict, xsize: int, ysize: int,
               plan: WavePlan, journal, *, priority: int, retries: int, quiet: bool = False,
               bitmap: str | None = None) -> int:
    """Run every block that still lacks cells; add their values to ``known`` and the journal.

    The plan's h is published as the manager's ``workers_wanted``, and recomputed as
    finished tasks measure d_task and a worker reports its cores."""
    from treadle.queue import Result, Task

    spec, f_files = _function_spec(resolved)
    b = plan.block
    nx, ny = -(-xsize // b), -(-ysize // b)
    costs: list[float] = []  # dispatch cost of each finished block task
    k_seen: int | None = None
    h_now = plan.workers

    def complete(bx: int, by: int) -> bool:
        if bx < 0 or by < 0:
            return True
        x0, x1 = _span(bx, b, xsize)
        y0, y1 = _span(by, b, ysize)
        return all((x, y) in known for x in range(x0, x1 + 1) for y in range(y0, y1 + 1))

    done = {(bx, by) for bx in range(nx) for by in range(ny) if complete(bx, by)}
    ready: list[tuple[int, int, int]] = []
    offered: set[tuple[int, int]] = set()

    def offer(bx: int, by: int) -> None:
        key = (bx, by)
        if bx >= nx or by >= ny or key in done or key in offered:
            return
        if all(n in done or n[0] < 0 or n[1] < 0
               for n in ((bx - 1, by), (bx, by - 1), (bx - 1, by - 1))):
            offered.add(key)
            heapq.heappush(ready, (bx + by, bx, by))

    for bx in range(nx):
        for by in range(ny):
            offer(bx, by)
    attempts: dict[tuple[int, int], int] = {}
    calls = 0
    tmp = tempfile.mkdtemp(prefix="treadle-wfq-")
    running: dict[int, tuple[int, int]] = {}
    last_bitmap = time.monotonic()
    progress = WaveProgress(xsize * ysize, quiet)
    progress.unit = "block"
    progress.cells = sum(1 for c in known if c[0] >= 1 and c[1] >= 1)

    def cells_of(blocks) -> set[tuple[int, int]]:
        out = set()
        for bx, by in blocks:
            x0, x1 = _span(bx, b, xsize)
            y0, y1 = _span(by, b, ysize)
            out.update((x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1))
        return out

    try:
        while ready or running:
            while ready:
                _, bx, by = heapq.heappop(ready)
                x0, x1 = _span(bx, b, xsize)
                y0, y1 = _span(by, b, ysize)
                edge = {f"{x0 - 1} {y}": known[(x0 - 1, y)] for y in range(y0 - 1, y1 + 1)}
                edge.update({f"{x} {y0 - 1}": known[(x, y0 - 1)] for x in range(x0, x1 + 1)})
                block = {"wavefront": True, "function": spec, "cells": [x0, x1, y0, y1],
                         "edge": edge}
                task = Task(f"{WORKER_PYTHON} runner.py block.json out.txt",
                            tag=f"wave {bx} {by}", priority=priority)
                task.add_input(runner_module.__file__, "runner.py", cache=True)
                for local, remote in f_files:
                    task.add_input(local, remote, cache=True)
                task.add_input_buffer(json.dumps(block).encode(), "block.json", cache=False)
                task.add_output(os.path.join(tmp, f"{bx}-{by}.txt"), "out.txt")
                running[manager.submit(task)] = (bx, by)
            # no point in more workers than blocks left
            manager.workers_wanted = min(h_now, nx * ny - len(done))
            task = manager.wait(timeout=1.0)
            queue = manager.stats
            progress.workers = queue.workers_connected
            progress.running, progress.ready = queue.tasks_running, queue.tasks_waiting
            if bitmap and time.monotonic() - last_bitmap >= BITMAP_INTERVAL:
                last_bitmap = time.monotonic()
                write_bitmap(bitmap, xsize, ysize, known, cells_of(running.values()),
                             cells_of((bx, by) for _, bx, by in ready))
            if task is None:
                continue
            key = running.pop(task.id)
            report = _report(task.output)
            path = os.path.join(tmp, f"{key[0]}-{key[1]}.txt")
            if task.result is Result.SUCCESS and task.exit_code == 0:
                costs.append(dispatch_cost(task))
                for info in manager.workers():
                    k_seen = k_seen or int(info.get("cores_total") or 0) or None
                h_now = best_workers(xsize, ysize, b, k_seen or plan.k, plan.t, plan.h_max,
                                     statistics.median(costs))[1]
                with open(path, encoding="utf-8") as f:
                    for line in f:
                        x, y, value = line.rstrip("\n").split(" ", 2)
                        known[(int(x), int(y))] = value
                        journal.write(line)
                        progress.cells += 1
                journal.flush()
                os.fsync(journal.fileno())
                calls += report.get("calls", 0)
                done.add(key)
                for n in ((key[0] + 1, key[1]), (key[0], key[1] + 1), (key[0] + 1, key[1] + 1)):
                    offer(*n)
                continue
            attempts[key] = attempts.get(key, 0) + 1
            if attempts[key] >= retries:
                for other in list(running):
                    manager.cancel(other)
                failed = report.get("failed")
                if failed:
                    tail = " ".join(report.get("stderr", "").strip().splitlines()[-5:])
                    raise AllPairsError(f"F failed on cell ({failed[0]}, {failed[1]}): "
                                        f"{report.get('message')}" + (f"; stderr: {tail}" if tail else ""))
                raise AllPairsError(f"block {key} failed {attempts[key]} times on workers "
                                    f"({task.result.name}, exit {task.exit_code})")
            offered.discard(key)
            offer(*key)
        if bitmap:
            write_bitmap(bitmap, xsize, ysize, known, set(), set())
    finally:
        progress.stop()
        for name in os.listdir(tmp):
            os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)
    return calls
