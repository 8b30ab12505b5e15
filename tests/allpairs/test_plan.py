"""The cost model's test vectors (spec §2.7), block shapes, --plan output, -t."""

from __future__ import annotations

import random
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from treadle.allpairs.plan import (
    WorkerReport,
    block_grid,
    block_shape,
    block_target,
    optimise,
    sample_pairs,
    side_caps,
    t_dist,
)

from .conftest import TREADLE, write_list


def test_vector_large_tree():
    kw = dict(k=1, d_task=10, d_host=10, bandwidth=1000, transfer="tree")
    assert t_dist(4000, 4000, 1, 10, 400, 3600, **kw) == pytest.approx(44803, abs=1)
    model = optimise(4000, 4000, 1, 10, h_max=400, **kw)
    assert (model.h, model.c) == (400, 3600)
    assert model.t_dist == pytest.approx(44803, abs=1)
    assert model.t_local == 1.6e7 and not model.prefers_local


def test_vector_large_manager():
    kw = dict(k=1, d_task=10, d_host=10, bandwidth=1000, transfer="manager")
    assert t_dist(4000, 4000, 1, 10, 400, 3600, **kw) == pytest.approx(76111, abs=1)


def test_vector_small():
    kw = dict(k=1, d_task=10, d_host=10, bandwidth=1000, transfer="tree")
    one = optimise(200, 200, 0.002, 0.008192, k_local=1, **kw)
    assert one.h == 3 and one.c == pytest.approx(40000 / 3)
    assert one.t_dist == pytest.approx(66.7, abs=0.05)
    assert one.t_local == pytest.approx(80) and not one.prefers_local
    two = optimise(200, 200, 0.002, 0.008192, k_local=2, **kw)
    assert two.t_local == pytest.approx(40) and two.prefers_local


def test_block_shapes():
    # local: at least 8 blocks per process, each at least 1 s
    target = block_target("local", 200, 200, 0.004, 2, False)
    assert target == 10
    x, y = block_shape(200, 200, 0.004, target)
    assert x == y == 50
    assert len(block_grid(200, 200, x, y, False)) == 16
    # distributed: about a minute on a whole worker of 4 cores
    assert block_target("wq", 10, 10, 1, 4, False) == 60
    assert block_shape(1000, 1000, 1.0, 60, cores_per_block=4) == (16, 16)
    # caps: sides, area (c*), memory side cap
    assert block_shape(3, 500, 1.0, 1e9) == (3, 500)
    assert block_shape(100, 100, 1.0, 1e9, max_area=400) == (20, 20)
    assert block_shape(100, 100, 1.0, 1e9, max_side=7) == (7, 7)
    assert block_shape(4, 9, 1.0, 1e9, symmetric=True) == (4, 4)
    assert block_grid(5, 5, 2, 2, True) == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]


def test_plan_option_prints_model_and_skips_run(items, tmp_path):
    listed = write_list(tmp_path / "set.list", items)
    run = subprocess.run(TREADLE + ["allpairs", listed, listed, "BITWISE", "--plan", "-o", "o.txt"],
                         capture_output=True, text=True, check=True)
    for word in ("sampled", "T_local", "h* =", "c* =", "mode: local", "block:"):
        assert word in run.stderr
    assert run.stdout == ""
    assert not (tmp_path / "o.txt").exists() and not (tmp_path / "o.txt.apstate").exists()
    run = subprocess.run(TREADLE + ["allpairs", listed, listed, "BITWISE", "--explain", "-t",
                                    "50", "-p", "9123"], capture_output=True, text=True, check=True)
    assert "given by -t" in run.stderr and "t = 50 s" in run.stderr
    assert "mode: wq" in run.stderr


def test_estimated_time_skips_sampling(items, tmp_path):
    """With -t, F never runs before the blocks: a counter shows exactly n·m calls."""
    from .conftest import make_script

    counter = tmp_path / "n"
    f = make_script(tmp_path / "f.sh", f'#!/bin/sh\necho >> "{counter}"\necho 0\n')
    listed = write_list(tmp_path / "set.list", items)
    subprocess.run(TREADLE + ["allpairs", listed, listed, f, "-t", "0.01", "-o", "o.txt"],
                   check=True, capture_output=True)
    assert counter.read_text().count("\n") == 36
    counter.unlink()
    subprocess.run(TREADLE + ["allpairs", listed, listed, f, "-o", "p.txt"], check=True,
                   capture_output=True)
    assert counter.read_text().count("\n") > 36


def test_explain_says_where_k_and_d_task_come_from(items, tmp_path):
    listed = write_list(tmp_path / "set.list", items)
    base = TREADLE + ["allpairs", listed, listed, "BITWISE", "--explain", "-T", "wq", "-t", "0.5"]
    given = subprocess.run(base + ["-c", "4"], capture_output=True, text=True, check=True)
    assert "k = 4 cores/worker (-c)" in given.stderr
    assert "d_task = 0.1 s (until measured)" in given.stderr
    assert "first worker's report" in given.stderr and "workers_wanted" in given.stderr
    guessed = subprocess.run(base, capture_output=True, text=True, check=True)
    assert "(this host's cores; no worker had reported)" in guessed.stderr


def test_side_caps_memory_disk_and_override():
    mib = 1 << 20
    worker = WorkerReport(cores=3, memory_bytes=64 * mib, disk_bytes=2 * mib)
    # distributed: the worker's disk caps every F; (x + y) items of 128 KiB in 1 MiB
    assert side_caps("wq", False, 131072, 2, worker, None) == (4, "worker disk")
    # a bytes-mode F is also capped by the worker's memory, whichever is tighter
    small_ram = WorkerReport(cores=3, memory_bytes=mib, disk_bytes=64 * mib)
    assert side_caps("wq", True, 131072, 2, small_ram, None) == (2, "memory")
    # no report yet: nothing to cap with; locally the disk is never a cap
    assert side_caps("wq", False, 131072, 2, None, None) == (None, "")
    assert side_caps("local", False, 131072, 2, worker, None) == (None, "")
    # -b replaces the memory estimate but the disk still counts
    assert side_caps("wq", True, 131072, 2, worker, 100) == (4, "worker disk")
    assert side_caps("local", True, 131072, 2, None, 7) == (7, "-b")


@given(st.integers(1, 30), st.integers(1, 30), st.booleans(), st.integers(1, 1000))
def test_sampled_pairs_are_distinct_cells_of_the_run(n, m, symmetric, most):
    """A seeded shuffle: no cell twice, only cells the run computes, as many as asked when
    the matrix has them (spec §2.2)."""
    if symmetric:
        m = n
    cells = sample_pairs(random.Random(0), n, m, symmetric, most)
    assert len(set(cells)) == len(cells) <= most
    assert all(0 <= i < n and 0 <= j < m and (j >= i or not symmetric) for i, j in cells)
    if not symmetric:
        assert len(cells) == min(most, n * m)
    assert cells == sample_pairs(random.Random(0), n, m, symmetric, most)
