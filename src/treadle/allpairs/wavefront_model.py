"""Wavefront's cost model: how long a sweep takes locally and in b×b blocks on h workers.

Pure functions of the grid, the time t of one cell and the cores, so ``--plan``,
the distributed driver (which re-solves h as it measures d_task) and the benchmark
share one model, and none of them imports the engine that runs cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Defaults of the model until a run measures them: seconds per task, per host.
D_TASK = 0.1
D_HOST = 10.0


def sweep_time(x: int, y: int, p: int, t: float) -> float:
    """M(X, Y, p, t): anti-diagonal k holds L_k cells and p processors need ⌈L_k/p⌉ rounds."""
    if x <= 0 or y <= 0:
        return 0.0
    rounds = 0
    for k in range(1, x + y):
        rounds += math.ceil(min(k, x, y, x + y - k) / p)
    return t * rounds


def distributed_time(x: int, y: int, b: int, h: int, k: int, t: float,
                     d_task: float = D_TASK, d_host: float = D_HOST) -> float:
    """D(b): b×b blocks, each swept on one worker's k cores, over h workers."""
    return sweep_time(math.ceil(x / b), math.ceil(y / b), h,
                      sweep_time(b, b, k, t) + d_task) + d_host * h


@dataclass(frozen=True)
class WavePlan:
    """The decision printed by ``--plan``: t, the local time, the best block and mode."""

    t: float
    sampled: int
    mode: str
    block: int
    workers: int
    t_local: float
    t_dist: float
    k: int
    k_local: int
    h_max: int = 400
    k_source: str = "-c"  # or the first worker's report, or this host's cores

    def describe(self, xsize: int, ysize: int) -> str:
        how = f"sampled {self.sampled} cells" if self.sampled else "given by -t"
        return "\n".join([
            f"grid: {xsize} x {ysize} cells",
            f"t = {self.t:.6g} s per cell ({how})",
            f"M(local, k={self.k_local}) = {self.t_local:.6g} s; best D(b) = {self.t_dist:.6g} s "
            f"at b = {self.block}, h = {self.workers} (k = {self.k}, {self.k_source}; "
            f"d_task = {D_TASK:g} s until measured)",
            f"mode: {self.mode}",
        ])


def best_workers(xsize: int, ysize: int, b: int, k: int, t: float, h_max: int,
                 d_task: float = D_TASK) -> tuple[float, int]:
    """(D(b), h) at the h ≤ h_max that minimises D(b)."""
    return min((distributed_time(xsize, ysize, b, h, k, t, d_task), h)
               for h in range(1, max(1, h_max) + 1))


def choose(xsize: int, ysize: int, t: float, *, k: int, k_local: int, h_max: int,
           workers_possible: bool, mode: str, block: int | None,
           k_source: str = "-c") -> WavePlan:
    """Try b = 1, 2, … while D(b) falls (b ≤ min(X, Y)/4); compare with the local sweep."""
    t_local = sweep_time(xsize, ysize, k_local, t)
    best = (math.inf, 1, 1)
    sizes = [block] if block else range(1, max(1, min(xsize, ysize) // 4) + 1)
    for b in sizes:
        cost, h = best_workers(xsize, ysize, b, k, t, h_max)
        if cost < best[0]:
            best = (cost, b, h)
        elif not block:
            break
    if mode == "auto":
        mode = "wq" if workers_possible and best[0] < t_local else "local"
    return WavePlan(t=t, sampled=0, mode=mode, block=best[1], workers=best[2], t_local=t_local,
                    t_dist=best[0], k=k, k_local=k_local, h_max=h_max, k_source=k_source)
