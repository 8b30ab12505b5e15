"""Local multicore mode (``-T local``): k pool processes take whole blocks in band order,
each running the runner in-process on one core; executables are spawned directly."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from dataclasses import dataclass

from treadle.allpairs.functions import pair_error
from treadle.allpairs.progress import Progress
from treadle.allpairs.runner import Function, PairFailure, compute_pairs
from treadle.allpairs.sets import ItemSet
from treadle.allpairs.state import State, write_block_file


@dataclass
class Job:
    """What a pool process needs to run blocks; inherited through fork, never pickled,
    so callables given as objects work as they are."""

    fn: Function
    a: ItemSet
    b: ItemSet
    x: int
    y: int
    symmetric: bool
    state: State


_JOB: Job | None = None


def block_items(job_paths_a, job_paths_b, x: int, y: int, bx: int, by: int):
    rows = [(i, job_paths_a[i]) for i in range(bx * x, min(len(job_paths_a), (bx + 1) * x))]
    cols = [(j, job_paths_b[j]) for j in range(by * y, min(len(job_paths_b), (by + 1) * y))]
    return rows, cols


def _run_block(bx: int, by: int):
    """In a pool process: compute one block into its temporary file."""
    job = _JOB
    assert job is not None
    rows, cols = block_items(job.a.paths, job.b.paths, job.x, job.y, bx, by)
    try:
        lines, calls = compute_pairs(job.fn, rows, cols, job.symmetric)
    except PairFailure as e:
        return ("fail", bx, by, e.i, e.j, e.message, e.stderr)
    digest = write_block_file(job.state.temp_path(bx, by), lines)
    return ("ok", bx, by, digest, calls, len(lines))


@dataclass
class LocalStats:
    calls: int = 0
    retries: int = 0
    blocks: int = 0


def run_local(job: Job, todo: list[tuple[int, int]], cores: int, retries: int,
              progress: Progress) -> LocalStats:
    """Run the blocks in ``todo`` (band order) on ``cores`` processes, journalling each.

    A block whose F fails is run again up to ``retries`` attempts in all; then the
    run stops with an error naming the pair, and finished blocks stay in the state.
    """
    global _JOB
    stats = LocalStats()
    if not todo:
        return stats
    _JOB = job
    attempts: dict[tuple[int, int], int] = {}

    def settle(result) -> tuple[int, int] | None:
        if result[0] == "ok":
            _, bx, by, digest, calls, pairs = result
            job.state.commit(bx, by, digest)
            stats.calls += calls
            stats.blocks += 1
            progress.advance(1, pairs)
            return None
        _, bx, by, i, j, message, stderr = result
        stats.calls += 1
        tries = attempts[(bx, by)] = attempts.get((bx, by), 0) + 1
        if tries >= retries:
            raise pair_error(job.a.names, job.b.names, i, j, message, stderr, tries)
        stats.retries += 1
        return bx, by

    progress.worker_kind = "process"
    if cores <= 1 or len(todo) == 1:
        progress.workers = 1
        queue = list(todo)
        while queue:
            progress.submitted()
            again = settle(_run_block(*queue.pop(0)))
            if again:
                queue.insert(0, again)
        return stats
    context = multiprocessing.get_context("fork")
    pending = list(reversed(todo))
    window = 2 * cores
    progress.workers = cores
    with concurrent.futures.ProcessPoolExecutor(cores, mp_context=context) as pool:
        running: set[concurrent.futures.Future] = set()
        try:
            while pending or running:
                while pending and len(running) < window:
                    progress.submitted()
                    running.add(pool.submit(_run_block, *pending.pop()))
                finished, running = concurrent.futures.wait(
                    running, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    again = settle(future.result())
                    if again:
                        pending.append(again)
        except BaseException:
            for future in running:
                future.cancel()
            raise
    return stats
