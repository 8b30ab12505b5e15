"""Tests start from the shipped examples, not from what a user's tour left in ``examples/``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests._examples import copy_tracked

TOUR = "out.txt: input.txt\n\tcp input.txt out.txt\n"


def test_a_finished_tour_left_in_examples_does_not_leak_into_a_test_copy(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    examples = checkout / "examples" / "makeflow"
    examples.mkdir(parents=True)
    (examples / "tour.mf").write_text(TOUR)
    (examples / "input.txt").write_text("hello\n")
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    subprocess.run(["git", "add", "examples"], cwd=checkout, check=True)
    # the user's tour: a run inside examples/ leaves a finished log and an output
    tour = subprocess.run([sys.executable, "-m", "treadle", "run", "tour.mf"], cwd=examples,
                          capture_output=True, text=True, timeout=60)
    assert tour.returncode == 0 and (examples / "tour.mf.makeflowlog").exists()

    copy = copy_tracked(examples, tmp_path / "copy")
    assert sorted(p.name for p in copy.iterdir()) == ["input.txt", "tour.mf"]
    again = subprocess.run([sys.executable, "-m", "treadle", "run", "tour.mf"], cwd=copy,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0
    assert "submitting job: cp input.txt out.txt" in again.stdout  # run afresh, not recovered as done
    assert (copy / "out.txt").read_text() == "hello\n"
