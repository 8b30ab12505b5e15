"""Crash safety: SIGKILL the engine anywhere, restart, and get the same result without re-running done work."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests._wait import processes_in, wait_for

N_RULES = 500
SEED = 20261124


def write_workflow(d: Path) -> None:
    """500 rules, each reading up to two earlier outputs; every run of a rule is counted."""
    rng = random.Random(SEED)
    parts = []
    for i in range(N_RULES):
        deps = sorted(rng.sample(range(i), k=min(i, rng.randint(0, 2))))
        sources = " ".join(f"out.{j}" for j in deps)
        reads = f"cat {sources} > out.{i}; " if deps else f": > out.{i}; "
        parts.append(f"out.{i}: {sources}\n\techo run >> runs/{i}; {reads}echo {i} >> out.{i}\n")
    (d / "wf.mf").write_text("".join(parts))
    (d / "runs").mkdir()


def run(d: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "treadle", "run", "-j", "2", "wf.mf"], cwd=d,
                          capture_output=True, text=True, timeout=300)


def completed_in_log(d: Path) -> set[int]:
    """Rule ids whose last logged state is complete (ids are stable: the workflow is unchanged)."""
    last: dict[int, int] = {}
    log = d / "wf.mf.makeflowlog"
    for line in log.read_text().splitlines():
        parts = line.split()
        if line.startswith("#") or len(parts) < 10:
            continue
        last[int(parts[1])] = int(parts[2])
    return {i for i, s in last.items() if s == 2}


def runs(d: Path) -> dict[int, int]:
    return {int(p.name): len(p.read_text().split()) for p in (d / "runs").iterdir()}


def outputs(d: Path) -> dict[str, str]:
    return {f"out.{i}": (d / f"out.{i}").read_text() for i in range(N_RULES)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("whole")
    write_workflow(d)
    r = run(d)
    assert r.returncode == 0, r.stderr
    assert set(runs(d).values()) == {1}
    return outputs(d)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_then_restart(tmp_path, uninterrupted, seed):
    write_workflow(tmp_path)
    rng = random.Random(SEED + seed)
    snapshots = []
    for _ in range(3):  # three kills at random points, each restart continuing the last
        p = subprocess.Popen([sys.executable, "-m", "treadle", "run", "-j", "2", "wf.mf"], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.2))
        p.send_signal(signal.SIGKILL)
        p.wait()
        # the watchdog stops the jobs of the dead engine, then ends itself
        wait_for(lambda: not processes_in(tmp_path), 10, "the dead engine's jobs to end")
        done = completed_in_log(tmp_path)
        counts = runs(tmp_path)
        assert all(counts.get(i, 0) >= 1 for i in done)
        snapshots.append((done, counts))
    r = run(tmp_path)
    assert r.returncode == 0, r.stderr
    final = runs(tmp_path)
    for done, counts in snapshots:
        rerun = sorted(i for i in done if final[i] != counts[i])
        assert rerun == [], f"rules completed before a kill ran again: {rerun[:10]}"
    assert outputs(tmp_path) == uninterrupted
    assert len(snapshots[-1][0]) > 0  # the kills did land in the middle of the work
