"""Garbage collection (spec §3.5): the pinned `ls | wc -l` counts under -j 1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "makeflow"


def run_counts(tmp_path: Path, *gc_args: str) -> tuple[list[int], subprocess.CompletedProcess]:
    shutil.copy(EXAMPLES / "gc_counts.mf", tmp_path)
    # The reference's test directory also holds a link to the program under test.
    os.symlink(sys.executable, tmp_path / "makeflow")
    r = subprocess.run(
        [sys.executable, "-m", "treadle", "run", "-j", "1", *gc_args, "gc_counts.mf"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return [int(x) for x in (tmp_path / "count.7").read_text().split()], r


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), [7, 8, 9, 11]),
        (("-g", "none"), [7, 8, 9, 11]),
        (("-g", "ref_cnt", "-G", "1"), [7, 5, 6, 5]),
        (("-g", "on_demand", "-G", "4"), [7, 8, 6, 8]),
    ],
)
def test_pinned_counts(tmp_path, args, expected):
    counts, _ = run_counts(tmp_path, *args)
    assert counts == expected


def test_gc_never_deletes_final_outputs_and_logs_its_passes(tmp_path):
    _, r = run_counts(tmp_path, "-g", "all")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["count.7", "gc_counts.mf", "gc_counts.mf.makeflowlog", "makeflow"]
    log = (tmp_path / "gc_counts.mf.makeflowlog").read_text().splitlines()
    gc_lines = [x.split() for x in log if x.startswith("# GC ")]
    assert gc_lines and sum(int(x[3]) for x in gc_lines) == 7
    assert sorted(x.split(" ", 1)[1] for x in r.stdout.splitlines() if x.startswith("deleted ")) == [f"count.{i}" for i in range(7)]
    # a re-run after collection does nothing: collected files are not "missing"
    again = subprocess.run([sys.executable, "-m", "treadle", "run", "-g", "all", "gc_counts.mf"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "submitting job" not in again.stdout and "warning" not in again.stdout


def test_final_pass_after_a_successful_run(tmp_path):
    """[F-o]: on_demand with a high threshold still collects once at the end."""
    _, r = run_counts(tmp_path, "-g", "on_demand", "-G", "100")
    assert not (tmp_path / "count.0").exists() and (tmp_path / "count.7").exists()


def test_collected_inputs_are_made_again_when_a_later_rule_must_rerun(tmp_path):
    run_counts(tmp_path, "-g", "all")
    (tmp_path / "count.7").unlink()
    r = subprocess.run([sys.executable, "-m", "treadle", "run", "-j", "1", "gc_counts.mf"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("submitting job:") == 8 and (tmp_path / "count.7").exists()
