"""The main demo (examples/demo.py): the motivating program on two local Work Queue workers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_demo_runs_on_two_workers(tmp_path: Path, tw) -> None:
    out = tmp_path / "demo"
    p = subprocess.run([sys.executable, str(REPO / "examples" / "demo.py"), "--output", str(out),
                        "--irises", "12", "--blue", "4"], capture_output=True, text=True,
                       env=tw.environment(), timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    matrix = out / "irises" / "matrix.txt"
    assert f"matrix.txt is {matrix}" in p.stdout
    rows = matrix.read_text().splitlines()
    assert len(rows) == 16
    assert all(r.split("\t")[2] == "0" for r in rows[::5])
    line = next(x for x in p.stdout.splitlines() if "tasks per worker" in x)
    counts = [int(part.rsplit(" ran ", 1)[1]) for part in line.split(": ", 1)[1].split(", ")]
    assert sum(counts) == 4 and 1 <= len(counts) <= 2  # the second may join after the work
