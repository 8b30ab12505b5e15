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
