#!/usr/bin/env python3
"""``treadle run -T slurm`` on the test cluster against what Slurm itself allows (targets P1-P4, bench/RESULTS.md).

* P1: 1,000 trivial rules, ``-J 1000``, from start to exit, against the floor:
  the same 1,000 ``true`` jobs as one array, from ``sbatch`` until ``squeue``
  lists none of them. Target <= 1.15x.
* P2: the ``squeue`` + ``sacct`` calls of that run <= wall / --poll-min + 10;
  and runs of 200 and 400 rules: calls per minute of the larger <= 1.2x the smaller's.
* P3: 1,000 ready jobs of one shape through ``SlurmSystem.submit`` (one round,
  held so they never run): <= 2 ``sbatch`` calls, and its time <= 0.1x that of
  1,000 single ``sbatch`` calls.
* P4: latencies, with the default --poll-min/--poll-max (2 s, 30 s): a running
  job cancelled behind treadle's back is resubmitted within --poll-max + 5 s,
  so is a pending one; a completion is in the log <= 1.5 s after its status
  file appears (the worst over P1's 1,000 rules).

Slurm commands are counted by shims that log each call and run the real
program. Needs the one-node cluster (``make slurm-up``); other users' jobs
slow every figure alike. Run:

    .venv/bin/python bench/batch_slurm.py [--rules 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from treadle.batch.base import BatchJob
from treadle.batch.slurm import SlurmSystem

TREADLE = [sys.executable, "-m", "treadle", "run"]
COMMANDS = ("sbatch", "squeue", "sacct", "scancel", "scontrol")
POLL_MIN, POLL_MAX = 2.0, 30.0  # treadle's defaults


def shims(directory: Path) -> tuple[dict[str, str], Path]:
    """An environment whose Slurm commands log their name, then run the real one."""
    bin_dir = directory / "shims"
    bin_dir.mkdir()
    calls = directory / "calls.txt"
    for name in COMMANDS:
        real = shutil.which(name)
        if real is None:
            sys.exit(f"{name} not found: is the test cluster up (make slurm-up)?")
        shim = bin_dir / name
        shim.write_text(f"#!/bin/sh\necho {name} >> {calls}\nexec {real} \"$@\"\n")
        shim.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}"), calls


def count(calls: Path, *names: str) -> int:
    words = calls.read_text().split() if calls.exists() else []
    return sum(words.count(name) for name in names)


def listed(name: str) -> int:
    out = subprocess.run(["squeue", "--me", "-h", "-r", "-n", name, "-o", "%i"], capture_output=True, text=True,
                         check=True).stdout
    return len(out.split())


def wait_until(done: Callable[[], bool], timeout: float, interval: float = 0.2) -> float:
    """Seconds until ``done()``; raises after ``timeout``."""
    began = time.monotonic()
    while not done():
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"not done after {timeout:g} s")
        time.sleep(interval)
    return time.monotonic() - began


def trivial_workflow(directory: Path, rules: int) -> None:
    directory.mkdir(parents=True)
    (directory / "wf.mf").write_text("".join(f"o{i}:\n\ttouch o{i}\n\n" for i in range(rules)))


def run_treadle(directory: Path, rules: int, *extra: str) -> tuple[float, int, Path]:
    """(wall seconds, squeue+sacct calls, the run's directory) of one ``-T slurm`` run."""
    trivial_workflow(directory, rules)
    env, calls = shims(directory)
    began = time.monotonic()
    done = subprocess.run([*TREADLE, "-T", "slurm", "-J", str(rules), *extra, "wf.mf"], cwd=directory, env=env,
                          capture_output=True, text=True)
    wall = time.monotonic() - began
    if done.returncode != 0:
        sys.exit(f"treadle run failed:\n{done.stderr[-2000:]}")
    return wall, count(calls, "squeue", "sacct"), directory


def floor(jobs: int, workdir: Path) -> float:
    """The same jobs as one array of ``true``, from sbatch until squeue lists none."""
    name = f"treadle-bench-floor-{os.getpid()}"
    began = time.monotonic()
    subprocess.run(["sbatch", "--parsable", f"--job-name={name}", f"--array=0-{jobs - 1}", "-D", str(workdir),
                    "--output=/dev/null", "--wrap", "true"], check=True, capture_output=True)
    wait_until(lambda: listed(name) == 0, timeout=3600)
    return time.monotonic() - began


def completion_latencies(directory: Path) -> list[float]:
    """Per rule: seconds from its status file's appearance to its completion record in the log."""
    done_at: dict[int, float] = {}
    job_of: dict[int, int] = {}
    for line in (directory / "wf.mf.makeflowlog").read_text().splitlines():
        if line and not line.startswith("#"):
            f = line.split()
            if f[2] == "1":
                job_of[int(f[1])] = int(f[3])
            elif f[2] == "2":
                done_at[int(f[1])] = int(f[0]) / 1e6
    seen = directory / "wf.mf.batch" / "status" / "seen"
    return [done_at[rule] - (seen / f"{job}.json").stat().st_mtime for rule, job in job_of.items()
            if rule in done_at]


def submit_costs(jobs: int, workdir: Path) -> tuple[float, int, float]:
    """(one round's seconds, its sbatch calls, seconds of ``jobs`` single sbatch calls); all held, then cancelled."""
    tag = f"bench{os.getpid()}"
    script = workdir / "true.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    system = SlurmSystem(str(workdir / "p3.batch"))
    round_jobs = [BatchJob(tag=tag, script=str(script), workdir=str(workdir), options=("--hold",), comment=str(i))
                  for i in range(jobs)]
    try:
        system.config  # noqa: B018 - read the cluster's settings before the clock starts
        began = time.monotonic()
        answers = system.submit(round_jobs)
        round_time = time.monotonic() - began
        bad = [a for a in answers if not isinstance(a, str)]
        if bad:
            sys.exit(f"P3 round refused: {bad[0]}")
        single_name = f"treadle-{tag}-single"
        began = time.monotonic()
        for _ in range(jobs):
            subprocess.run(["sbatch", "--parsable", "--hold", f"--job-name={single_name}", "-D", str(workdir),
                           "--output=/dev/null", "--wrap", "true"], check=True, capture_output=True)
        singles = time.monotonic() - began
    finally:
        subprocess.run(["scancel", "--me", "-n", f"treadle-{tag}"], capture_output=True)
        subprocess.run(["scancel", "--me", "-n", f"treadle-{tag}-single"], capture_output=True)
    return round_time, system.commands["sbatch"], singles


def resubmission_latency(directory: Path, state: str, *extra: str) -> float:
    """Seconds from an ``scancel`` of the run's one job (in ``state``) to its resubmission in the log."""
    directory.mkdir(parents=True)
    (directory / "wf.mf").write_text("a:\n\tsleep 30; touch a\n")
    log = directory / "wf.mf.makeflowlog"
    engine = subprocess.Popen([*TREADLE, "-T", "slurm", *extra, "wf.mf"], cwd=directory,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tag = ""
    try:
        def records() -> list[str]:
            return re.findall(r"^# JOB \d+ \d+ (\S+)$", log.read_text(), re.M) if log.exists() else []

        wait_until(lambda: len(records()) == 1, timeout=60, interval=0.05)
        tag_match = re.search(r"^# BATCH \d+ slurm (\w+)$", log.read_text(), re.M)
        assert tag_match is not None
        tag = tag_match[1]
        native = records()[0]

        def in_state() -> bool:
            out = subprocess.run(["squeue", "-h", "-j", native, "-o", "%T"], capture_output=True, text=True).stdout
            return out.strip() == state

        wait_until(in_state, timeout=60, interval=0.05)
        subprocess.run(["scancel", native], check=True)
        return wait_until(lambda: len(records()) == 2, timeout=POLL_MAX + 60, interval=0.05)
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.wait(timeout=60)
        if tag:
            subprocess.run(["scancel", "--me", "-n", f"treadle-{tag}"], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "batch_slurm.json")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="treadle-bench-slurm-") as tmp:
        root = Path(tmp)
        wall, queries, p1_dir = run_treadle(root / "p1", args.rules)
        drained = floor(args.rules, root)
        figures.update(p1_wall=wall, p1_floor=drained, p1_ratio=wall / drained)
        figures.update(p2_queries=queries, p2_budget=wall / POLL_MIN + 10)
        small_wall, small_q, _ = run_treadle(root / "p2-200", 200)
        large_wall, large_q, _ = run_treadle(root / "p2-400", 400)
        per_minute = (large_q / large_wall) / (small_q / small_wall)
        figures.update(p2_200_per_min=60 * small_q / small_wall, p2_400_per_min=60 * large_q / large_wall,
                       p2_ratio=per_minute)
        round_time, sbatch_calls, singles = submit_costs(args.rules, root)
        figures.update(p3_round=round_time, p3_sbatch=sbatch_calls, p3_singles=singles,
                       p3_ratio=round_time / singles)
        latencies = completion_latencies(p1_dir)
        figures.update(p4_running=resubmission_latency(root / "p4-running", "RUNNING"),
                       p4_pending=resubmission_latency(root / "p4-pending", "PENDING", "-B", "--begin=now+1hour"),
                       p4_completion_median=statistics.median(latencies), p4_completion_max=max(latencies))
    rows = [
        ("P1", f"{args.rules} rules {figures['p1_wall']:.1f} s / floor {figures['p1_floor']:.1f} s",
         figures["p1_ratio"], "<= 1.15", figures["p1_ratio"] <= 1.15),
        ("P2", f"squeue+sacct {figures['p2_queries']:.0f} calls, budget {figures['p2_budget']:.0f}",
         figures["p2_queries"], f"<= {figures['p2_budget']:.0f}", figures["p2_queries"] <= figures["p2_budget"]),
        ("P2", f"calls/min 400 rules {figures['p2_400_per_min']:.1f} vs 200 rules {figures['p2_200_per_min']:.1f}",
         figures["p2_ratio"], "<= 1.2", figures["p2_ratio"] <= 1.2),
        ("P3", f"round {figures['p3_round']:.3f} s in {figures['p3_sbatch']:.0f} sbatch vs "
               f"{args.rules} single {figures['p3_singles']:.2f} s",
         figures["p3_ratio"], "<= 0.1, <= 2 calls", figures["p3_ratio"] <= 0.1 and figures["p3_sbatch"] <= 2),
        ("P4", "running job cancelled -> resubmitted (s)", figures["p4_running"], f"<= {POLL_MAX + 5:g}",
         figures["p4_running"] <= POLL_MAX + 5),
        ("P4", "pending job cancelled -> resubmitted (s)", figures["p4_pending"], f"<= {POLL_MAX + 5:g}",
         figures["p4_pending"] <= POLL_MAX + 5),
        ("P4", f"status file -> log, median {figures['p4_completion_median']:.2f} s, worst (s)",
         figures["p4_completion_max"], "<= 1.5", figures["p4_completion_max"] <= 1.5),
    ]
    for target, what, value, wanted, met in rows:
        print(f"{target}  {what:<72} {value:8.3f}  {wanted:<18} {'yes' if met else 'NO'}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
