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
import tempfile
import time
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

from treadle.allpairs import runner as runner_module
from treadle.allpairs.blocks_wq import WORKER_PYTHON, BlockDriver, Key, function_spec, outcome
from treadle.allpairs.functions import Resolved
from treadle.allpairs.progress import WaveProgress
from treadle.allpairs.wavefront_bitmap import BITMAP_INTERVAL, write_bitmap
from treadle.allpairs.wavefront_model import WavePlan, best_workers
from treadle.errors import AllPairsError

if TYPE_CHECKING:
    from treadle.queue import Manager, Stats, Task


def _span(index: int, b: int, size: int) -> tuple[int, int]:
    return index * b + 1, min(size, (index + 1) * b)


class _Blocks:
    """Wavefront as ``BlockDriver`` sees it: a block is ready once its three lower
    neighbours are complete; among ready blocks the smallest bx + by, then bx, goes first."""

    def __init__(self, resolved: Resolved, known: dict, xsize: int, ysize: int, plan: WavePlan,
                 journal, *, priority: int, tmp: str, progress: WaveProgress,
                 bitmap: str | None):
        self.spec, self.f_files = function_spec(resolved)
        self.known, self.xsize, self.ysize, self.plan = known, xsize, ysize, plan
        self.b = plan.block
        self.nx, self.ny = -(-xsize // self.b), -(-ysize // self.b)
        self.journal, self.priority, self.tmp = journal, priority, tmp
        self.progress, self.bitmap = progress, bitmap
        self.last_bitmap = time.monotonic()
        self.done = {(bx, by) for bx in range(self.nx) for by in range(self.ny)
                     if self._complete(bx, by)}
        self.ready: list[tuple[int, int, int]] = []
        self.offered: set[Key] = set()
        for bx in range(self.nx):
            for by in range(self.ny):
                self._offer(bx, by)

    def _complete(self, bx: int, by: int) -> bool:
        return all(cell in self.known for cell in self.cells_of([(bx, by)]))

    def cells_of(self, blocks: Iterable[Key]) -> set[Key]:
        out: set[Key] = set()
        for bx, by in blocks:
            x0, x1 = _span(bx, self.b, self.xsize)
            y0, y1 = _span(by, self.b, self.ysize)
            out.update((x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1))
        return out

    def _offer(self, bx: int, by: int) -> None:
        key = (bx, by)
        if bx >= self.nx or by >= self.ny or key in self.done or key in self.offered:
            return
        if all(n in self.done or n[0] < 0 or n[1] < 0
               for n in ((bx - 1, by), (bx, by - 1), (bx - 1, by - 1))):
            self.offered.add(key)
            heapq.heappush(self.ready, (bx + by, bx, by))

    def pop_ready(self) -> Key | None:
        if not self.ready:
            return None
        _, bx, by = heapq.heappop(self.ready)
        return bx, by

    def requeue(self, key: Key) -> None:
        self.offered.discard(key)
        self._offer(*key)

    def blocks_left(self) -> int:
        return self.nx * self.ny - len(self.done)

    def _output(self, key: Key) -> str:
        return os.path.join(self.tmp, f"{key[0]}-{key[1]}.txt")

    def task(self, key: Key) -> Task:
        from treadle.queue import Task

        known, b = self.known, self.b
        x0, x1 = _span(key[0], b, self.xsize)
        y0, y1 = _span(key[1], b, self.ysize)
        edge = {f"{x0 - 1} {y}": known[(x0 - 1, y)] for y in range(y0 - 1, y1 + 1)}
        edge.update({f"{x} {y0 - 1}": known[(x, y0 - 1)] for x in range(x0, x1 + 1)})
        block = {"wavefront": True, "function": self.spec, "cells": [x0, x1, y0, y1],
                 "edge": edge}
        task = Task(f"{WORKER_PYTHON} runner.py block.json out.txt",
                    tag=f"wave {key[0]} {key[1]}", priority=self.priority)
        task.add_input(runner_module.__file__, "runner.py", cache=True)
        for local, remote in self.f_files:
            task.add_input(local, remote, cache=True)
        task.add_input_buffer(json.dumps(block).encode(), "block.json", cache=False)
        task.add_output(self._output(key), "out.txt")
        return task

    def finished(self, key: Key, task: Task, report: dict) -> None:
        with open(self._output(key), encoding="utf-8") as f:
            for line in f:
                x, y, value = line.rstrip("\n").split(" ", 2)
                self.known[(int(x), int(y))] = value
                self.journal.write(line)
                self.progress.cells += 1
        self.journal.flush()
        os.fsync(self.journal.fileno())
        self.done.add(key)
        for n in ((key[0] + 1, key[1]), (key[0], key[1] + 1), (key[0] + 1, key[1] + 1)):
            self._offer(*n)

    def failure(self, key: Key, task: Task, report: dict, attempts: int) -> AllPairsError:
        failed = report.get("failed")
        if failed:
            tail = " ".join(report.get("stderr", "").strip().splitlines()[-5:])
            return AllPairsError(f"F failed on cell ({failed[0]}, {failed[1]}): "
                                 f"{report.get('message')}" + (f"; stderr: {tail}" if tail else ""))
        return AllPairsError(f"block {key} failed {attempts} times on workers ({outcome(task)})")

    def workers_wanted(self, k: int | None, d_task: float) -> int:
        plan = self.plan
        return best_workers(self.xsize, self.ysize, self.b, k or plan.k, plan.t, plan.h_max,
                            d_task)[1]

    def watch(self, stats: Stats, running: Collection[Key]) -> None:
        progress = self.progress
        progress.workers = stats.workers_connected
        progress.running = stats.tasks_running
        progress.ready = stats.tasks_waiting + len(self.ready)
        if self.bitmap and time.monotonic() - self.last_bitmap >= BITMAP_INTERVAL:
            self.last_bitmap = time.monotonic()
            write_bitmap(self.bitmap, self.xsize, self.ysize, self.known, self.cells_of(running),
                         self.cells_of((bx, by) for _, bx, by in self.ready))


def run_blocks(manager: Manager, resolved: Resolved, known: dict, xsize: int, ysize: int,
               plan: WavePlan, journal, *, priority: int, retries: int, quiet: bool = False,
               bitmap: str | None = None) -> int:
    """Run every block that still lacks cells; add their values to ``known`` and the journal.

    The plan's h is published as the manager's ``workers_wanted``, and recomputed as
    finished tasks measure d_task and a worker reports its cores. Returns F's calls."""
    tmp = tempfile.mkdtemp(prefix="treadle-wfq-")
    progress = WaveProgress(xsize * ysize, quiet)
    progress.unit = "block"
    progress.cells = sum(1 for c in known if c[0] >= 1 and c[1] >= 1)
    driver = BlockDriver(manager, retries, plan.workers)
    try:
        job = _Blocks(resolved, known, xsize, ysize, plan, journal, priority=priority, tmp=tmp,
                      progress=progress, bitmap=bitmap)
        driver.run(job)
        if bitmap:
            write_bitmap(bitmap, xsize, ysize, known, set(), set())
    finally:
        progress.stop()
        for name in os.listdir(tmp):
            os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)
    return driver.calls
