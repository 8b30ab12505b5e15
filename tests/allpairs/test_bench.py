"""The benchmark's --size 20 smoke run: every table equals native-bitwise's (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import ROOT


@pytest.mark.slow
def test_bench_smoke(tmp_path):
    record = tmp_path / "r.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "allpairs_native_vs_expanded.py"),
                          "--size", "20", "--repeat", "1", "--json", str(record), "--skip", "a7",
                          "--skip", "floor"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    data = json.loads(record.read_text())
    for name in ("native-bitwise", "native-exec", "native-py", "native-py-batched"):
        assert name in data["walls"], data["notes"]
    assert "MISMATCH" not in run.stderr


@pytest.mark.slow
def test_wavefront_bench_smoke(tmp_path):
    """Every W2 cell program gives the expanded run's output byte for byte."""
    record = tmp_path / "w.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "wavefront_model.py"),
                          "--size", "5", "--skip-w1", "--json", str(record)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    w2 = json.loads(record.read_text())["W2"]
    assert sorted(w2) == ["awk", "sh-cat", "sh-read"]
    assert all(r["same"] for r in w2.values()), w2
