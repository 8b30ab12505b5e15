"""The ``allpairs()`` entry point: load, plan (or reuse the saved plan), run the missing
blocks locally or on workers, assemble the output atomically, then drop the state."""

from __future__ import annotations

import functools
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from treadle.allpairs import output as out
from treadle.allpairs.blocks_wq import FIRST_WORKER_WAIT, first_worker, open_manager
from treadle.allpairs.distributed import run_distributed
from treadle.allpairs.functions import resolve
from treadle.allpairs.plan import (
    BANDWIDTH_MBPS,
    D_HOST,
    D_TASK_UNMEASURED,
    MAX_WORKERS,
    Plan,
    block_grid,
    make_plan,
)
from treadle.allpairs.progress import Progress
from treadle.allpairs.sets import ItemSet, load_set
from treadle.allpairs.state import State, fingerprint
from treadle.errors import AllPairsError, require_extra

if TYPE_CHECKING:
    from treadle.queue import Manager

log = logging.getLogger("treadle.allpairs")

MODES = ("auto", "local", "wq")
TRANSFERS = ("manager", "tree")


@dataclass
class AllPairsResult:
    """The outcome of a run. Results live in memory when ``output`` is None, otherwise
    they are read back from the output file on first use."""

    output: str | None
    names_a: tuple[str, ...]
    names_b: tuple[str, ...]
    plan: Plan | None
    stats: dict = field(default_factory=dict)
    _table: list | None = None

    def _load(self) -> list:
        if self._table is None:
            assert self.output is not None
            if self.output.endswith(".npy"):
                import numpy

                self._table = [[repr(float(v)) for v in row] for row in numpy.load(self.output)]
            else:
                m = len(self.names_b)
                with open(self.output, encoding="utf-8", newline="\n") as f:
                    flat = [line.rstrip("\n").split("\t", 2)[2] for line in f]
                if len(flat) != len(self.names_a) * m:
                    raise AllPairsError(f"{self.output} holds {len(flat)} lines, not the full "
                                        "matrix (was it written with --half?)")
                self._table = [flat[k:k + m] for k in range(0, len(flat), m)]
        return self._table

    def text(self, i: int, j: int) -> str:
        """The result of pair (i, j) as F produced it (unescaped)."""
        return out.unescape(self._load()[i][j])

    def write_text(self, stream, half: bool = False) -> None:
        """The triples in row-major order (only i ≤ j with ``half``)."""
        a = ItemSet(self.names_a, self.names_a, "A")
        b = ItemSet(self.names_b, self.names_b, "B")
        out.write_text(stream, self._load(), a, b, half)

    def matrix(self):
        """The results as a float64 numpy array; ValueError on a non-numeric result."""
        require_extra("numpy", "allpairs")
        import numpy

        if self.output is not None and self.output.endswith(".npy") and self._table is None:
            return numpy.load(self.output)
        try:
            return numpy.array([[float(x) for x in row] for row in self._load()],
                               dtype=numpy.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"a result is not a number: {e}") from None


def _extra_args(extra_args: str | Sequence[str]) -> list[str]:
    if isinstance(extra_args, str):
        try:
            return shlex.split(extra_args)
        except ValueError as e:
            raise AllPairsError(f"-e {extra_args!r}: {e}") from None
    return [str(x) for x in extra_args]


def _block_shape(block: int | tuple[int, int] | None) -> tuple[int | None, int | None]:
    if block is None:
        return None, None
    if isinstance(block, int):
        return block, block
    x, y = block
    return x, y


def allpairs(set_a: object, set_b: object, function: object, *, output: str | os.PathLike | None = None,
             extra_args: str | Sequence[str] = (), extra_files: Sequence[str] = (),
             symmetric: bool = False, half: bool = False, batched: bool = False,
             takes_bytes: bool = False, exec_each: bool = False, mode: str = "auto",
             cores: int | None = None,
             block: int | tuple[int, int] | None = None, block_items: int | None = None,
             comparison_time: float | None = None, port: int | None = None,
             random_port_file: str | None = None, project: str | None = None, priority: int = 0,
             password_file: str | None = None,
             max_workers: int | None = None, dispatch_time: float | None = None,
             bandwidth: float | None = None, transfer: str = "manager", retries: int = 3,
             resume: bool = True, restart: bool = False, keep_state: bool = False,
             stats_file: str | None = None, plan_only: bool = False,
             from_triples: str | None = None, quiet: bool = False,
             host: str = "", plan_stream=None) -> AllPairsResult:
    """Compute M[i][j] = F(A[i], B[j]) for every pair (docs/allpairs.md, "From Python").

    ``exec_each`` starts an executable F afresh for every pair; by default a
    ``#!/bin/sh`` script F runs in a reused shell, in a subshell per pair.
    In wq mode the manager listens on ``host`` (every interface when empty) and,
    with ``password_file``, takes only workers that know the password.
    """
    started = time.perf_counter()
    if mode not in MODES:
        raise AllPairsError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if transfer not in TRANSFERS:
        raise AllPairsError(f"transfer must be one of {', '.join(TRANSFERS)}, not {transfer!r}")
    if half and not symmetric:
        raise AllPairsError("--half needs --symmetric")
    if retries < 1:
        raise AllPairsError("retries must be at least 1")
    a = load_set(set_a)
    b = load_set(set_b)
    if symmetric and a.names != b.names:
        raise AllPairsError("--symmetric needs the two sets to be the same list, entry for "
                            f"entry ({a.origin} and {b.origin} differ)")
    if output is not None:
        output = os.fspath(output)
        if output.endswith(".npy") and half:
            raise AllPairsError("--half applies to text output, not .npy")
        if output.endswith(".npy"):
            require_extra("numpy", "allpairs")
    if from_triples is not None:
        return _assemble_only(a, b, from_triples, output, symmetric, half)
    args = _extra_args(extra_args)
    for path in extra_files:
        if not os.path.exists(path):
            raise AllPairsError(f"input file {path} (-f) does not exist")
    resolved = resolve(function, args, batched=batched, takes_bytes=takes_bytes,
                       exec_each=exec_each)
    fn = resolved.function
    if fn.kind == "callable" and args:
        raise AllPairsError("-e ARGS applies to executables only")
    k_local = cores or os.cpu_count() or 1
    # wq mode with no port given listens on the default port (open_manager)
    workers_possible = (mode == "wq" or port is not None or bool(project)
                        or random_port_file is not None)
    fp = fingerprint(a, b, resolved.identity, args, extra_files, symmetric=symmetric,
                     batched=fn.batched, half=half)
    keep = output is not None and resume
    state_dir = Path(f"{output}.apstate") if keep else Path(tempfile.mkdtemp(prefix="treadle-ap-"))
    state = State(state_dir)
    plan = state.load(fp, restart) if keep and not plan_only else None
    resumed = plan is not None
    manager = None
    start_manager = functools.partial(open_manager, port, random_port_file, project, host,
                                      password_file=password_file,
                                      announce=None if quiet else "allpairs")
    if plan is None:
        if not plan_only and (mode == "wq" or mode == "auto" and workers_possible):
            manager = start_manager()
        try:
            plan = make_plan(fn, a, b, symmetric=symmetric, mode=mode,
                             workers_possible=workers_possible, cores=cores,
                             k_local=k_local, comparison_time=comparison_time,
                             width=_block_shape(block)[0], height=_block_shape(block)[1],
                             block_bytes=block_items,
                             d_task=D_TASK_UNMEASURED, d_host=dispatch_time or D_HOST,
                             bandwidth=bandwidth or BANDWIDTH_MBPS,
                             h_max=max_workers or MAX_WORKERS, transfer=transfer,
                             first_worker=None if manager is None else functools.partial(
                                 first_worker, manager, started + FIRST_WORKER_WAIT))
        except BaseException:
            _close(manager)
            raise
        if plan_only:
            if not keep:
                state.remove()
            print(plan.describe(len(a), len(b), symmetric), file=plan_stream or sys.stdout)
            return AllPairsResult(output, a.names, b.names, plan, {})
        state.create(fp, plan)
    elif mode != "auto" and mode != plan.mode:
        plan = Plan.from_dict({**plan.to_dict(), "mode": mode})
    if plan.mode != "wq":
        _close(manager)
        manager = None
    if not quiet:
        print(f"allpairs: {len(a)} x {len(b)}, mode {plan.mode}, blocks {plan.x} x {plan.y}"
              + (" (resumed)" if resumed else ""), file=sys.stderr, flush=True)
    grid = block_grid(len(a), len(b), plan.x, plan.y, symmetric)
    done = state.done_blocks() if resumed else set()
    todo = [key for key in grid if key not in done]
    log.debug("F %s; plan %s; state %s; %d of %d blocks to run", resolved.identity,
              plan.to_dict(), state_dir, len(todo), len(grid))
    computed = sum(_block_cells(len(a), len(b), plan.x, plan.y, bx, by, symmetric)
                   for bx, by in todo)
    progress = Progress(len(grid), computed, quiet, blocks_done=len(grid) - len(todo))
    run_stats: dict = {}
    try:
        if plan.mode == "wq" and todo:  # a resumed run with nothing left needs no port
            manager = manager or start_manager()
            run_stats = run_distributed(
                manager, resolved, a, b, plan, state, todo, symmetric=symmetric,
                priority=priority, extra_files=extra_files, retries=retries, progress=progress)
        else:
            from treadle.allpairs.local import Job, run_local

            job = Job(fn, a, b, plan.x, plan.y, symmetric, state)
            local = run_local(job, todo, k_local, retries, progress)
            run_stats = {"calls": local.calls, "retries": local.retries}
    except BaseException:
        if not keep:
            state.remove()  # a private temporary state: nothing can resume from it
        raise
    finally:
        progress.stop()
        _close(manager)
        state.close()
    blocks = [state.block_path(bx, by) for bx, by in grid]
    if output is not None:
        out.assemble(blocks, a, b, output, plan.y, symmetric, half)
    else:
        table = out.table_from_blocks(blocks, a, b, symmetric)
    if not keep or not keep_state:
        state.remove()
    stats = {
        "n": len(a), "m": len(b), "pairs": computed,
        "sample": {"t": plan.t, "s": plan.s, "pairs": plan.sampled_pairs},
        "plan": plan.to_dict(), "mode": plan.mode, "blocks": len(todo),
        "blocks_total": len(grid), "resumed": resumed,
        "retries": run_stats.get("retries", 0), "wall": time.perf_counter() - started,
        "calls": run_stats.get("calls", 0),
        "bytes_sent": run_stats.get("bytes_sent", {}),
        "bytes_sent_ratio": run_stats.get("bytes_sent_ratio"),
        "workers": run_stats.get("workers", 0),
        "d_task": run_stats.get("d_task"), "k_worker": run_stats.get("k_worker"),
        "workers_wanted": run_stats.get("workers_wanted"),
        "first_block_epoch": progress.first_block,
    }
    if stats_file:
        Path(stats_file).write_text(json.dumps(stats, indent=1) + "\n")
    result = AllPairsResult(output, a.names, b.names, plan, stats)
    if output is None:
        result._table = table
    return result


def _close(manager: Manager | None) -> None:
    """Close the run's manager, if it has one (it is released before assembly)."""
    if manager is not None:
        manager.close()


def _block_cells(n: int, m: int, x: int, y: int, bx: int, by: int, symmetric: bool) -> int:
    rows = range(bx * x, min(n, (bx + 1) * x))
    cols = range(by * y, min(m, (by + 1) * y))
    if not symmetric:
        return len(rows) * len(cols)
    return sum(max(0, cols.stop - max(cols.start, i)) for i in rows)  # the cells with j >= i


def _assemble_only(a: ItemSet, b: ItemSet, triples: str, output: str | None, symmetric: bool,
                   half: bool) -> AllPairsResult:
    """``--from TRIPLES``: sort the table into block files beside the output, then assemble
    them as a run's blocks are, so a large table never sits in memory either."""
    place = os.path.dirname(os.path.abspath(output)) if output is not None else None
    directory = Path(tempfile.mkdtemp(prefix=".treadle-from-", dir=place))
    try:
        blocks = out.triples_to_blocks(triples, a, b, symmetric, directory)
        table = None
        if output is not None:
            out.assemble(blocks, a, b, output, out.TRIPLES_BLOCK, symmetric, half)
        else:
            table = out.table_from_blocks(blocks, a, b, symmetric)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    result = AllPairsResult(output, a.names, b.names, None, {"n": len(a), "m": len(b)})
    result._table = table
    return result
