"""Planning an All-Pairs run: sampling F, the cost model, the block shape.

The model is a pure function so its test vectors can be checked exactly; the
sampler times F on this host; ``make_plan`` combines them into a frozen ``Plan``
that is saved with the run's state and reused on resume.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from treadle.allpairs.runner import Function, PairFailure, Spawner, compute_pairs
from treadle.allpairs.sets import ItemSet

# What --plan says about the numbers a distributed run learns as it goes.
DISTRIBUTED_NOTE = (
    "distributed: blocks are sized once, after sampling and after the first worker's report "
    "(waited for at most until the first block is due, 6 s after start); while blocks run, "
    "d_task becomes the median round trip of finished tasks less their run time, and h* is "
    "recomputed with it and the worker's cores and published as the manager's "
    "workers_wanted")

# Defaults of the cost model (each has a CLI option).
D_TASK_UNMEASURED = 0.1
D_HOST = 10.0
BANDWIDTH_MBPS = 1000.0
MAX_WORKERS = 400
LIMIT_START = 3600.0
# When sampling stops: (pairs, seconds), whichever comes first.
SAMPLE_EXEC = (16, 5.0)
SAMPLE_IN_PROCESS = (1000, 0.5)


@dataclass(frozen=True)
class Model:
    """The cost model's answer: best host count h and block area c, and the times."""

    h: int
    c: float
    t_dist: float
    t_local: float
    limit: float

    @property
    def prefers_local(self) -> bool:
        return self.t_local <= self.t_dist


def cell_count(n: int, m: int, symmetric: bool) -> int:
    return n * (n + 1) // 2 if symmetric else n * m


def transfer_time(n: int, m: int, s: float, bandwidth: float, h: int, transfer: str) -> float:
    """D(h): seconds to get every item to h hosts."""
    per_copy = (n + m) * s / bandwidth
    return per_copy * (math.log2(h) if transfer == "tree" else h)


def t_dist(n: int, m: int, t: float, s: float, h: int, c: float, *, k: int = 1,
           d_task: float = D_TASK_UNMEASURED, d_host: float = D_HOST,
           bandwidth: float = BANDWIDTH_MBPS, transfer: str = "manager",
           symmetric: bool = False) -> float:
    """T_dist(h, c): the modelled distributed time, with J(c) = cells / c blocks."""
    cells = cell_count(n, m, symmetric)
    work = cells * t
    jobs = cells / c
    return (jobs * d_task + work / k) / h + d_host * h + transfer_time(n, m, s, bandwidth, h,
                                                                        transfer)


def optimise(n: int, m: int, t: float, s: float, *, k: int = 1, k_local: int = 1,
             d_task: float = D_TASK_UNMEASURED, d_host: float = D_HOST,
             bandwidth: float = BANDWIDTH_MBPS, h_max: int = MAX_WORKERS,
             transfer: str = "manager", symmetric: bool = False) -> Model:
    """Search every h ≤ h_max; for each, the largest area c with c·t/k ≤ L and h·c ≤ cells.

    T_dist falls as c grows (fewer dispatches), so the largest feasible c is the
    optimum for a given h, which makes the exhaustive search over h complete.
    """
    cells = cell_count(n, m, symmetric)
    limit = LIMIT_START
    while t / k > limit:
        limit *= 2
    best: tuple[float, int, float] | None = None
    for h in range(1, max(1, h_max) + 1):
        c_cap = cells / h
        if c_cap < 1:
            break
        c = min(limit * k / t, c_cap) if t > 0 else c_cap
        c = max(1.0, c)
        cost = t_dist(n, m, t, s, h, c, k=k, d_task=d_task, d_host=d_host,
                      bandwidth=bandwidth, transfer=transfer, symmetric=symmetric)
        if best is None or cost < best[0]:
            best = (cost, h, c)
    assert best is not None
    return Model(h=best[1], c=best[2], t_dist=best[0], t_local=cells * t / k_local, limit=limit)


def block_target(mode: str, n: int, m: int, t: float, k: int, symmetric: bool,
                 d_task: float = D_TASK_UNMEASURED) -> float:
    """T_blk: one block's time, in wall seconds on the cores that run it."""
    if mode == "wq":
        return max(60.0, 10 * d_task)
    total = cell_count(n, m, symmetric) * t
    return min(60.0, max(1.0, total / (8 * k)))


def block_shape(n: int, m: int, t: float, target: float, *, cores_per_block: int = 1,
                max_area: float | None = None, max_side: int | None = None,
                symmetric: bool = False) -> tuple[int, int]:
    """Grow x×y from 1×1, one per side per step, until x·y·t/cores reaches the target.

    Sides are capped at n and m (and max_side, the memory cap); the area at max_area.
    Symmetric runs keep x = y so block edges meet the diagonal.
    """
    cap_x, cap_y = n, m
    if max_side is not None:
        cap_x, cap_y = min(cap_x, max_side), min(cap_y, max_side)
    if symmetric:
        cap_x = cap_y = min(cap_x, cap_y)
    x = y = 1
    while x * y * t / cores_per_block < target and (x < cap_x or y < cap_y):
        nx, ny = min(x + 1, cap_x), min(y + 1, cap_y)
        if max_area is not None and nx * ny > max_area:
            break
        x, y = nx, ny
    return x, y


@dataclass(frozen=True)
class WorkerReport:
    """What the first connected worker said it has: the model's k, and the room that
    caps a block's items in distributed mode (memory for bytes-mode F, disk always)."""

    cores: int
    memory_bytes: int
    disk_bytes: int


def side_cap(mean_bytes: float, capacity: float | None, concurrent: int) -> int | None:
    """Most items of one set per block so (x + y)·bytes stays in 50% of ``capacity``
    shared by ``concurrent`` blocks; None when nothing limits it."""
    if mean_bytes <= 0 or not capacity:
        return None
    return max(1, int(0.5 * capacity / max(1, concurrent) / (2 * mean_bytes)))


def local_ram() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def side_caps(mode: str, takes_bytes: bool, mean_bytes: float, k_local: int,
              worker: WorkerReport | None, override: int | None) -> tuple[int | None, str]:
    """The tightest cap on a block's side and what sets it.

    Memory counts for bytes-mode F only, on the machine that runs the block: this
    host's RAM over k_local blocks locally, a worker's RAM over its one block in wq
    mode; ``-b`` replaces it. In wq mode the worker's disk caps every F, since the
    block's items are staged there. Without a worker's report, wq mode has no cap.
    """
    caps: list[tuple[int, str]] = []
    if override:
        caps.append((override, "-b"))
    elif takes_bytes:
        ram = local_ram() if mode == "local" else worker.memory_bytes if worker else None
        cap = side_cap(mean_bytes, ram, k_local if mode == "local" else 1)
        if cap is not None:
            caps.append((cap, "memory"))
    if mode == "wq" and worker is not None:
        cap = side_cap(mean_bytes, worker.disk_bytes, 1)
        if cap is not None:
            caps.append((cap, "worker disk"))
    if not caps:
        return None, ""
    return min(caps)


def item_stats(items: ItemSet) -> float:
    """Mean size in bytes of the first 100 items."""
    sizes = [os.path.getsize(p) for p in items.paths[:100]]
    return sum(sizes) / len(sizes) if sizes else 0.0


def sample_pairs(rng: random.Random, n: int, m: int, symmetric: bool,
                 most: int) -> list[tuple[int, int]]:
    """Up to ``most`` distinct cells, the start of a seeded shuffle of the matrix (of its
    i ≤ j half when symmetric); the matrix is never listed, only its drawn cells."""
    want = min(most, cell_count(n, m, symmetric))
    # a symmetric draw keeps about half of the cells, so draw twice as many (at least)
    drawn = rng.sample(range(n * m), min(n * m, 2 * want if symmetric else want))
    cells = [divmod(k, m) for k in drawn]
    if symmetric:
        cells = [(i, j) for i, j in cells if j >= i]
    return cells[:want]


def sample(fn: Function, a: ItemSet, b: ItemSet, symmetric: bool,
           seed: int = 0) -> tuple[float, int]:
    """Time F on this host; returns (t seconds per pair, pairs run).

    Pairs come from a seeded shuffle of the whole matrix and run one after
    another; their results are discarded. A pair that fails is timed but not
    reported here: the blocks meet it again, with retries and a proper error.
    """
    rng = random.Random(seed)
    n, m = len(a), len(b)
    if fn.batched:
        rows = sorted(rng.sample(range(n), min(4, n)))
        cols = sorted(rng.sample(range(m), min(4, m)))
        start = time.perf_counter()
        try:
            compute_pairs(fn, [(i, a.paths[i]) for i in rows], [(j, b.paths[j]) for j in cols],
                          False)
        except PairFailure:
            pass
        return (time.perf_counter() - start) / (len(rows) * len(cols)), len(rows) * len(cols)
    most, seconds = SAMPLE_IN_PROCESS if fn.in_process else SAMPLE_EXEC
    pairs = sample_pairs(rng, n, m, symmetric, most)
    spawner = Spawner() if fn.kind == "exec" else None
    done = 0
    start = time.perf_counter()
    try:
        for i, j in pairs:
            if done and time.perf_counter() - start >= seconds:
                break
            try:
                compute_pairs(fn, [(i, a.paths[i])], [(j, b.paths[j])], False, spawner)
            except PairFailure:
                pass
            done += 1
    finally:
        if spawner is not None:
            spawner.close()
    return (time.perf_counter() - start) / done, done


@dataclass(frozen=True)
class Plan:
    """Everything decided before the blocks run; saved in plan.json and reused on resume."""

    t: float
    s: float
    sampled_pairs: int
    mode: str
    x: int
    y: int
    h_star: int
    c_star: float
    t_local: float
    t_dist: float
    k: int
    k_local: int
    d_task: float
    d_host: float
    bandwidth: float
    transfer: str
    target: float
    blocks: int
    h_max: int = MAX_WORKERS
    # where k came from: the first worker's report, -c, or this host (no report yet)
    k_source: str = "-c"
    side_cap: int | None = None
    side_cap_by: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})

    def describe(self, n: int, m: int, symmetric: bool) -> str:
        """The lines ``--plan`` prints."""
        sampled = f"sampled {self.sampled_pairs} pairs" if self.sampled_pairs else "given by -t"
        return "\n".join([
            f"matrix: {n} x {m}, {cell_count(n, m, symmetric)} cells"
            + (" (symmetric half)" if symmetric else ""),
            f"t = {self.t:.6g} s per pair ({sampled}); s = {self.s:.6g} Mb per item",
            f"model: k = {self.k} cores/worker ({self.k_source}), k_local = {self.k_local}, "
            f"d_task = {self.d_task:g} s (until measured), d_host = {self.d_host:g} s, "
            f"b = {self.bandwidth:g} Mb/s, transfer = {self.transfer}",
            f"T_local = {self.t_local:.6g} s; best T_dist = {self.t_dist:.6g} s at h* = "
            f"{self.h_star}, c* = {self.c_star:.6g}",
            f"mode: {self.mode}",
            f"block: {self.x} x {self.y} (target {self.target:g} s per block), "
            f"{self.blocks} blocks"
            + (f"; at most {self.side_cap} items per side ({self.side_cap_by})"
               if self.side_cap else ""),
        ] + ([DISTRIBUTED_NOTE] if self.mode == "wq" else []))


def block_grid(n: int, m: int, x: int, y: int, symmetric: bool) -> list[tuple[int, int]]:
    """Blocks in band order (bands of x rows, left to right); below-diagonal ones skipped."""
    grid = []
    for bx in range(math.ceil(n / x)):
        for by in range(math.ceil(m / y)):
            if symmetric and by < bx:
                continue
            grid.append((bx, by))
    return grid


def make_plan(fn: Function, a: ItemSet, b: ItemSet, *, symmetric: bool, mode: str,
              workers_possible: bool, cores: int | None, k_local: int,
              comparison_time: float | None,
              width: int | None, height: int | None, block_bytes: int | None,
              d_task: float = D_TASK_UNMEASURED, d_host: float = D_HOST,
              bandwidth: float = BANDWIDTH_MBPS, h_max: int = MAX_WORKERS,
              transfer: str = "manager",
              first_worker: Callable[[bool], WorkerReport | None] | None = None) -> Plan:
    """Sample (unless t is given), run the model, pick the mode and the block shape.

    ``first_worker(wait)`` is asked after sampling, so workers connect while F is
    timed; its report gives k (cores per worker) and the worker's caps. Without one, k is
    ``-c``, else this host's core count.
    """
    n, m = len(a), len(b)
    if comparison_time is not None:
        t, sampled = float(comparison_time), 0
    else:
        t, sampled = sample(fn, a, b, symmetric)
    mean_bytes = (item_stats(a) + item_stats(b)) / 2
    s = mean_bytes * 8 / 1e6

    def model_with(k: int) -> Model:
        return optimise(n, m, t, s, k=k, k_local=k_local, d_task=d_task, d_host=d_host,
                        bandwidth=bandwidth, h_max=h_max, transfer=transfer,
                        symmetric=symmetric)

    k = cores or k_local
    k_source = "-c" if cores else "this host's cores; no worker had reported"
    model = model_with(k)
    worker = None
    if first_worker is not None:
        # auto mode waits only when workers look worth it; a report already in counts anyway
        worker = first_worker(mode == "wq" or not model.prefers_local)
        if worker is not None:
            k, k_source = worker.cores, "first worker's report"
            model = model_with(k)
    if mode == "auto":
        mode = "local" if (not workers_possible or model.prefers_local) else "wq"
    cores_per_block = k if mode == "wq" else 1
    target = block_target(mode, n, m, t, k_local if mode == "local" else k, symmetric, d_task)
    side, side_by = side_caps(mode, fn.takes_bytes, mean_bytes, k_local, worker, block_bytes)
    if width or height:
        x = min(width or height or n, n)
        y = min(height or width or m, m)
        if symmetric:
            x = y = min(x, y)
        side, side_by = None, ""  # -x and -y are the user's choice, caps and all
    else:
        x, y = block_shape(n, m, t, target, cores_per_block=cores_per_block,
                           max_area=model.c, max_side=side, symmetric=symmetric)
    blocks = len(block_grid(n, m, x, y, symmetric))
    return Plan(t=t, s=s, sampled_pairs=sampled, mode=mode, x=x, y=y, h_star=model.h,
                c_star=model.c, t_local=model.t_local, t_dist=model.t_dist, k=k,
                k_local=k_local, d_task=d_task, d_host=d_host, bandwidth=bandwidth,
                transfer=transfer, target=target, blocks=blocks, h_max=h_max, k_source=k_source,
                side_cap=side, side_cap_by=side_by)
