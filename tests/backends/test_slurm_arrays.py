"""``-T slurm`` asks Slurm little: ready rules of one shape go as arrays, and polling does not grow with jobs.

Commands are counted by shims in front of the real Slurm programs
(:func:`tests.backends.test_slurm_run.counting_path`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from tests.backends.test_slurm_run import (
    calls_of,
    cancel_runs,  # noqa: F401 - the fixture pytestmark names
    counting_path,
    job_records,
    treadle,
)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("cancel_runs")]

RULES = 200
CHUNK = 64
POLL_MIN = 1.0


def test_two_hundred_ready_rules_are_a_few_arrays_and_few_queries(tmp_path: Path) -> None:
    (tmp_path / "wf.mf").write_text("".join(f"out{i}.txt:\n\techo {i} > out{i}.txt\n\n" for i in range(RULES)))
    env, calls = counting_path(tmp_path)
    began = time.monotonic()
    done = treadle("-T", "slurm", "-J", str(RULES), "--slurm-array", str(CHUNK), "--poll-min", str(POLL_MIN),
                   "wf.mf", cwd=tmp_path, env=env, timeout=600)
    wall = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    assert all((tmp_path / f"out{i}.txt").exists() for i in range(RULES))
    assert calls_of(calls, "sbatch") <= 1 + math.ceil(RULES / CHUNK)
    natives = [native for _, native in job_records(tmp_path / "wf.mf.makeflowlog")]
    assert len(natives) == RULES and all("_" in native for native in natives)
    # Queries: at most one per --poll-min, whatever the number of jobs (docs/batch.md, "Tracking").
    assert calls_of(calls, "squeue") + calls_of(calls, "sacct") <= wall / POLL_MIN + 10
    assert calls_of(calls, "scontrol") == 1  # the cluster's settings, read once
