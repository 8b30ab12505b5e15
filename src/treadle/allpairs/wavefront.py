"""Wavefront: R[x][y] = F(R[x-1][y], R[x][y-1], R[x-1][y-1]) over a grid.

A cell starts as soon as its three neighbours are known (no barrier between
anti-diagonals); among ready cells the smallest x + y, then the smallest x, goes
first. Finished cells are appended to ``OUTPUT.partial`` so a restart recomputes
only what is missing; the sorted output replaces it at the end.
"""

from __future__ import annotations

import concurrent.futures
import functools
import heapq
import json
import multiprocessing
import os
import shlex
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from treadle.allpairs.blocks_wq import FIRST_WORKER_WAIT, first_worker, open_manager
from treadle.allpairs.functions import resolve
from treadle.allpairs.progress import WaveProgress
from treadle.allpairs.runner import Function, PairFailure, Spawner, wave_cell
from treadle.allpairs.wavefront_bitmap import BITMAP_INTERVAL, write_bitmap
from treadle.allpairs.wavefront_model import WavePlan, choose
from treadle.allpairs.wavefront_wq import run_blocks
from treadle.errors import AllPairsError

if TYPE_CHECKING:
    from treadle.queue import Manager

SAMPLE_CELLS = 4
SAMPLE_SECONDS = 5.0
FSYNC_INTERVAL = 1.0


def read_boundary(boundary: str | os.PathLike | dict, xsize: int, ysize: int) -> dict:
    """The boundary values, checked: every R[x][0] and R[0][y], and no interior cell."""
    values: dict[tuple[int, int], str] = {}
    if isinstance(boundary, dict):
        for (x, y), value in boundary.items():
            values[(int(x), int(y))] = _value(str(value))
        where = "boundary"
    else:
        where = os.fspath(boundary)
        try:
            text = Path(boundary).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise AllPairsError(f"boundary file {where} does not exist") from None
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split(None, 2)
            try:
                x, y = int(parts[0]), int(parts[1])
            except (ValueError, IndexError):
                raise AllPairsError(f"{where}:{number}: expected 'x y value'") from None
            values[(x, y)] = parts[2].strip() if len(parts) > 2 else ""
    interior = sorted(c for c in values if 1 <= c[0] <= xsize and 1 <= c[1] <= ysize)
    if interior:
        raise AllPairsError(f"{where}: interior cell(s) in the boundary: "
                            + ", ".join(f"({x}, {y})" for x, y in interior[:5]))
    outside = sorted(c for c in values if not (0 <= c[0] <= xsize and 0 <= c[1] <= ysize))
    if outside:
        raise AllPairsError(f"{where}: cell(s) outside the {xsize} x {ysize} grid: "
                            + ", ".join(f"({x}, {y})" for x, y in outside[:5]))
    needed = [(x, 0) for x in range(xsize + 1)] + [(0, y) for y in range(1, ysize + 1)]
    missing = [c for c in needed if c not in values]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise AllPairsError(f"{where}: missing boundary cell(s) "
                            + ", ".join(f"({x}, {y})" for x, y in missing[:5]) + more)
    return values


def _value(text: str) -> str:
    return text.strip()


# Pool-process state, inherited through fork (callables given as objects work as they are).
_FN: Function | None = None
_LOCAL = threading.local()


def compute_cell(fn: Function, x: int, y: int, left: str, bottom: str, diag: str) -> str:
    """R[x][y] from its neighbours; raises AllPairsError naming the cell when F fails."""
    spawner = None
    if fn.kind == "exec":
        spawner = getattr(_LOCAL, "spawner", None)
        if spawner is None:
            spawner = _LOCAL.spawner = Spawner()
    try:
        return wave_cell(fn, x, y, left, bottom, diag, spawner)
    except PairFailure as e:
        raise cell_error(e) from None


def release_thread_spawner() -> None:
    """Close this thread's spawner (and its reused shell) now. Pool threads need
    not: their spawners close when the pool's threads end and are collected."""
    spawner = getattr(_LOCAL, "spawner", None)
    if spawner is not None:
        del _LOCAL.spawner
        spawner.close()


def cell_error(failure: PairFailure) -> AllPairsError:
    tail = " ".join(failure.stderr.strip().splitlines()[-5:])
    return AllPairsError(f"F failed on cell ({failure.i}, {failure.j}): {failure.message}"
                         + (f"; stderr: {tail}" if tail else ""))


def _pool_cell(x: int, y: int, left: str, bottom: str, diag: str) -> str:
    assert _FN is not None
    return compute_cell(_FN, x, y, left, bottom, diag)


def _load_partial(path: Path, xsize: int, ysize: int) -> dict:
    values: dict[tuple[int, int], str] = {}
    if not path.exists():
        return values
    data = path.read_text(encoding="utf-8", errors="replace")
    lines = data.split("\n")
    if not data.endswith("\n"):
        lines = lines[:-1]  # a line cut short by a crash is not a result
    for line in lines:
        parts = line.split(" ", 2)
        if len(parts) < 2:
            continue
        try:
            x, y = int(parts[0]), int(parts[1])
        except ValueError:
            continue
        if 1 <= x <= xsize and 1 <= y <= ysize:
            values[(x, y)] = parts[2] if len(parts) > 2 else ""
    return values


def wavefront(function: object, boundary: str | os.PathLike | dict, xsize: int, ysize: int, *,
              output: str | os.PathLike, mode: str = "auto", block: int | None = None,
              cores: int | None = None, extra_args: str | Sequence[str] = (),
              port: int | None = None, random_port_file: str | None = None,
              project: str | None = None, priority: int = 0, password_file: str | None = None,
              comparison_time: float | None = None, bitmap: str | None = None,
              restart: bool = False, stats_file: str | None = None,
              plan_only: bool = False, max_workers: int = 400, retries: int = 3,
              host: str = "", quiet: bool = False, exec_each: bool = False,
              plan_stream=None) -> dict:
    """Compute every interior cell and write ``x y value`` lines sorted by x, then y.

    ``exec_each`` starts an executable F afresh for every cell; by default a
    ``#!/bin/sh`` script F runs in a reused shell, in a subshell per cell.
    In wq mode the manager listens on ``host`` (every interface when empty) and,
    with ``password_file``, takes only workers that know the password.
    """
    started = time.perf_counter()
    if xsize < 1 or ysize < 1:
        raise AllPairsError("XSIZE and YSIZE must be at least 1")
    if mode not in ("auto", "local", "wq"):
        raise AllPairsError(f"mode must be auto, local or wq, not {mode!r}")
    args = shlex.split(extra_args) if isinstance(extra_args, str) else [str(a) for a in extra_args]
    if isinstance(function, str) and function == "BITWISE":
        raise AllPairsError("built-in functions do not apply to Wavefront")
    resolved = resolve(function, args, exec_each=exec_each)
    fn = resolved.function
    if fn.batched:
        raise AllPairsError("batched functions do not apply to Wavefront")
    known = read_boundary(boundary, xsize, ysize)
    output = Path(output)
    partial = output.with_name(output.name + ".partial")
    if restart and partial.exists():
        partial.unlink()
    computed = _load_partial(partial, xsize, ysize)
    resumed = len(computed)
    known.update(computed)
    k_local = cores or os.cpu_count() or 1
    workers_possible = port is not None or bool(project) or random_port_file is not None
    manager = None
    start_manager = functools.partial(open_manager, port, random_port_file, project, host,
                                      password_file=password_file,
                                      announce=None if quiet else "wavefront")
    if not plan_only and (mode == "wq" or mode == "auto" and workers_possible):
        manager = start_manager()  # workers join while F is timed
    journal = open(partial, "a", encoding="utf-8")
    sampled = 0
    try:
        t = comparison_time
        if t is None:
            t, sampled = _sample(fn, known, xsize, ysize, journal)
        plan = _plan(xsize, ysize, t, sampled, manager, started, cores=cores, k_local=k_local,
                     h_max=max_workers, workers_possible=workers_possible, mode=mode, block=block)
        if plan_only:
            print(plan.describe(xsize, ysize), file=plan_stream or sys.stdout)
            return {"plan": asdict(plan)}
        if plan.mode == "wq":
            manager = manager or start_manager()
            calls = run_blocks(manager, resolved, known, xsize, ysize, plan, journal,
                               priority=priority, retries=retries, quiet=quiet, bitmap=bitmap)
        else:
            if manager is not None:
                manager.close()  # let connected workers go at once (closing twice is harmless)
            calls = _run_local(fn, known, xsize, ysize, k_local, journal, bitmap, quiet)
    finally:
        journal.close()
        if manager is not None:
            manager.close()
    tmp = output.with_name(output.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(f"{x} {y} {known[(x, y)]}\n" for x in range(1, xsize + 1)
                     for y in range(1, ysize + 1))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, output)
    partial.unlink()
    stats = {"xsize": xsize, "ysize": ysize, "cells": xsize * ysize, "resumed_cells": resumed,
             "calls": calls + sampled, "plan": asdict(plan),
             "wall": time.perf_counter() - started}
    if stats_file:
        Path(stats_file).write_text(json.dumps(stats, indent=1) + "\n")
    return stats


def _plan(xsize: int, ysize: int, t: float, sampled: int, manager: Manager | None,
          started: float, *, cores: int | None, k_local: int, h_max: int,
          workers_possible: bool, mode: str, block: int | None) -> WavePlan:
    """choose() with k from ``-c`` or this host, then, once a worker has reported (waited
    for until the first block is due when the plan leans distributed), with its cores."""
    k_source = "-c" if cores else "this host's cores; no worker had reported"

    def plan_for(k: int, source: str) -> WavePlan:
        plan = choose(xsize, ysize, t, k=k, k_local=k_local, h_max=h_max,
                      workers_possible=workers_possible, mode=mode, block=block,
                      k_source=source)
        return WavePlan(**{**asdict(plan), "sampled": sampled})

    plan = plan_for(cores or k_local, k_source)
    if manager is not None:
        worker = first_worker(manager, started + FIRST_WORKER_WAIT, plan.mode == "wq")
        if worker is not None:
            plan = plan_for(worker.cores, "first worker's report")
    return plan


def _sample(fn: Function, known: dict, xsize: int, ysize: int, journal) -> tuple[float, int]:
    """Time up to 4 cells from the boundary corner (at most 5 s); keep their values."""
    corner = [(1, 1), (2, 1), (1, 2), (2, 2)]
    done, start = 0, time.perf_counter()
    try:
        for x, y in corner:
            if x > xsize or y > ysize or (x, y) in known:
                continue
            if done and time.perf_counter() - start >= SAMPLE_SECONDS or done >= SAMPLE_CELLS:
                break
            known[(x, y)] = compute_cell(fn, x, y, known[(x - 1, y)], known[(x, y - 1)],
                                         known[(x - 1, y - 1)])
            journal.write(f"{x} {y} {known[(x, y)]}\n")
            journal.flush()
            done += 1
    finally:
        release_thread_spawner()  # the caller's thread may live long (Python API)
    if not done:
        return 0.0, 0
    return (time.perf_counter() - start) / done, done


def _run_local(fn: Function, known: dict, xsize: int, ysize: int, k: int, journal,
               bitmap: str | None, quiet: bool) -> int:
    """k workers, one cell each; a cell is submitted as soon as it is ready."""
    global _FN

    def is_ready(x: int, y: int) -> bool:
        return ((x - 1, y) in known and (x, y - 1) in known and (x - 1, y - 1) in known
                and (x, y) not in known)

    ready: list[tuple[int, int, int]] = []
    queued: set[tuple[int, int]] = set()

    def offer(x: int, y: int) -> None:
        if x <= xsize and y <= ysize and (x, y) not in queued and is_ready(x, y):
            queued.add((x, y))
            heapq.heappush(ready, (x + y, x, y))

    for x in range(1, xsize + 1):
        for y in range(1, ysize + 1):
            offer(x, y)
    total = xsize * ysize
    todo = total - sum(1 for c in known if c[0] >= 1 and c[1] >= 1)
    if todo == 0:
        return 0
    pool: concurrent.futures.Executor
    if fn.kind == "exec":
        pool = concurrent.futures.ThreadPoolExecutor(k)
    else:
        _FN = fn
        pool = concurrent.futures.ProcessPoolExecutor(k, mp_context=multiprocessing.get_context("fork"))
    running: dict[concurrent.futures.Future, tuple[int, int]] = {}
    calls = 0
    progress = WaveProgress(total, quiet)
    progress.workers, progress.worker_kind = k, "process"
    progress.cells = total - todo
    last_sync = last_bitmap = time.monotonic()
    try:
        while ready or running:
            while ready and len(running) < k:
                _, x, y = heapq.heappop(ready)
                args = (x, y, known[(x - 1, y)], known[(x, y - 1)], known[(x - 1, y - 1)])
                future = (pool.submit(compute_cell, fn, *args) if fn.kind == "exec"
                          else pool.submit(_pool_cell, *args))
                running[future] = (x, y)
            finished, _ = concurrent.futures.wait(
                running, timeout=1.0, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                x, y = running.pop(future)
                known[(x, y)] = future.result()
                calls += 1
                progress.cells += 1
                journal.write(f"{x} {y} {known[(x, y)]}\n")
                journal.flush()
                for nx, ny in ((x + 1, y), (x, y + 1), (x + 1, y + 1)):
                    offer(nx, ny)
            progress.running, progress.ready = len(running), len(ready)
            now = time.monotonic()
            if now - last_sync >= FSYNC_INTERVAL:
                os.fsync(journal.fileno())
                last_sync = now
            if bitmap and now - last_bitmap >= BITMAP_INTERVAL:
                write_bitmap(bitmap, xsize, ysize, known, set(running.values()),
                             {(x, y) for _, x, y in ready})
                last_bitmap = now
    except BaseException:
        for future in running:
            future.cancel()
        raise
    finally:
        progress.stop()
        os.fsync(journal.fileno())
        pool.shutdown(wait=True, cancel_futures=True)
    if bitmap:
        write_bitmap(bitmap, xsize, ysize, known, set(), set())
    return calls
