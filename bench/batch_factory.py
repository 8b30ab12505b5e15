"""Workers started on Slurm by the factory: throughput (P5) and start order (P6), in one run.

Needs the one-node test cluster (``make slurm-up``). Prints each figure next to its target.

P5: N trivial rules (``touch out.i``, default 2,000) through ``treadle run -T wq``
    on two workers, timed from the first completed rule to the last (the
    makeflow log's COMPLETE records; so the workers' start-up is not counted):

    * Slurm workers from the run's own factory (``--factory slurm:max=2``)
      against two locally started ``treadle worker`` processes: target >= 0.9;
    * against the reference ``makeflow -T wq`` with two workers from
      ``slurm_submit_workers`` (one worker per call, ``USER`` set): target >= 4.

P6: ``treadle factory -T slurm`` started 2 s before, or 2 s after, a manager
    holding one task: seconds until that task is done, from the later of the
    two starts (target <= 3 s each) and the slower order over the faster
    (target <= 1.5).

Usage: .venv/bin/python bench/batch_factory.py [--rules N] [--repeat K] [--no-reference]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

TREADLE = [sys.executable, "-m", "treadle"]
ENV = {**os.environ, "USER": os.environ.get("USER", "root"),  # slurm_submit_workers needs USER
       "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
ENV.pop("CATALOG_HOST", None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_workflow(d: Path, n: int) -> None:
    (d / "Makeflow").write_text("".join(f"out.{i}:\n\ttouch out.{i}\n" for i in range(n)))


def completion_rate(d: Path, n: int) -> float:
    """Rules per second between the first and the last COMPLETE record of the makeflow log."""
    made = sum(1 for p in d.iterdir() if p.name.startswith("out."))
    if made != n:
        raise SystemExit(f"{d}: {made} of {n} outputs")
    times = []
    for line in (d / "Makeflow.makeflowlog").read_text().splitlines():
        words = line.split()
        if not line.startswith("#") and len(words) > 2 and words[2] == "2":
            times.append(int(words[0]) / 1e6)
    return (len(times) - 1) / (max(times) - min(times))


def run_workflow(command: list[str], n: int, workers: Callable[[int, Path], list[str]]) -> float:
    """Run ``command`` (with ``-p PORT`` appended) on N rules while ``workers`` starts two workers;
    the rate, and every Slurm job id ``workers`` reports is cancelled afterwards."""
    with tempfile.TemporaryDirectory(prefix="factorybench") as tmp:
        d = Path(tmp)
        write_workflow(d, n)
        port = free_port()
        run = subprocess.Popen([*command, "-p", str(port), "Makeflow"], cwd=d, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        jobs: list[str] = []
        try:
            jobs = workers(port, d)
            _, err = run.communicate(timeout=600)
            if run.returncode != 0:
                raise SystemExit(f"{command[:3]} failed: {err[-800:]}")
            return completion_rate(d, n)
        finally:
            if run.poll() is None:
                run.kill()
            if jobs:
                subprocess.run(["scancel", *jobs], check=False)


def no_workers(port: int, d: Path) -> list[str]:
    return []  # the run's own factory starts them


def local_workers(port: int, d: Path) -> list[str]:
    for _ in range(2):
        subprocess.Popen([*TREADLE, "worker", "--cores", "1", "-t", "5", "127.0.0.1", str(port)],
                         cwd=d, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return []


def reference_slurm_workers(port: int, d: Path) -> list[str]:
    """Two ``slurm_submit_workers`` calls of one worker each (N workers in one call ask for N nodes)."""
    ids = []
    for _ in range(2):
        out = subprocess.run(["slurm_submit_workers", "--cores", "1", "-t", "5", "127.0.0.1", str(port), "1"],
                             cwd=d, env=ENV, capture_output=True, text=True, check=True).stdout
        ids += [w for w in out.split() if w.isdigit()]
    return ids


def start_order(first: str) -> float:
    """Seconds from the later of (factory start, manager listening) to the first task done."""
    from treadle.queue import Manager, Task

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="factorybench") as tmp:
        command = [*TREADLE, "factory", "-T", "slurm", "--batch-dir", f"{tmp}/batch", "--cores", "1",
                   "-W", "1", "-t", "5", "127.0.0.1", str(port)]
        factory = None
        try:
            if first == "factory":
                factory = subprocess.Popen(command, cwd=tmp, env=ENV, stdout=subprocess.PIPE, text=True)
                time.sleep(2)
            with Manager(port=port) as m:
                m.submit(Task("true", cores=1))
                began = time.monotonic()
                if factory is None:
                    time.sleep(2)
                    factory = subprocess.Popen(command, cwd=tmp, env=ENV, stdout=subprocess.PIPE, text=True)
                    began = time.monotonic()
                if m.wait(60) is None:
                    raise SystemExit("no task done within 60 s")
                return time.monotonic() - began
        finally:
            if factory is not None:
                factory.send_signal(signal.SIGTERM)
                factory.communicate(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rules", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each case; the best (P5) or median (P6)")
    ap.add_argument("--no-reference", action="store_true", help="skip makeflow with slurm_submit_workers")
    args = ap.parse_args()
    if shutil.which("sbatch") is None:
        raise SystemExit("no Slurm here: make slurm-up")
    n = args.rules

    run = [*TREADLE, "run", "-T", "wq"]
    slurm = max(run_workflow([*run, "--factory", "slurm:max=2,cores=1,timeout=5"], n, no_workers)
                for _ in range(args.repeat))
    local = max(run_workflow(run, n, local_workers) for _ in range(args.repeat))
    print(f"P5 {n} rules, 2 Slurm workers (--factory slurm): {slurm:7.1f} rules/s")
    print(f"P5 {n} rules, 2 local treadle workers:         {local:7.1f} rules/s")
    print(f"P5 ratio slurm/local: {slurm / local:.2f}   (target >= 0.9)")
    if not args.no_reference and shutil.which("makeflow") and shutil.which("slurm_submit_workers"):
        ref = max(run_workflow(["makeflow", "-T", "wq"], n, reference_slurm_workers)
                  for _ in range(args.repeat))
        print(f"P5 {n} rules, makeflow -T wq + 2 slurm_submit_workers: {ref:7.1f} rules/s")
        print(f"P5 ratio treadle/reference: {slurm / ref:.2f}   (target >= 4)")
    else:
        print("P5 reference skipped (makeflow or slurm_submit_workers missing, or --no-reference)")

    before = statistics.median(start_order("factory") for _ in range(args.repeat))
    after = statistics.median(start_order("manager") for _ in range(args.repeat))
    print(f"P6 factory 2 s before the manager: first task {before:.2f} s after the manager listens "
          "(target <= 3)")
    print(f"P6 factory 2 s after the manager:  first task {after:.2f} s after the factory starts "
          "(target <= 3)")
    print(f"P6 slower/faster order: {max(before, after) / min(before, after):.2f}   (target <= 1.5)")


if __name__ == "__main__":
    main()
