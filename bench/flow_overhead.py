"""Engine overhead: treadle run against the reference makeflow, side by side, in one run.

Workload (spec §5): N independent ``touch out.N`` rules, ``-j 2``, each run in
a fresh, empty directory. Prints wall times and the ratios the issue sets:

* treadle(5k) / makeflow(5k)          target <= 0.30
* treadle(20k) / treadle(5k)          target <= 4.5 (linear growth)
* treadle run on a 1-rule workflow    target < 0.3 s

Usage: .venv/bin/python bench/flow_overhead.py [--repeat K] [--sizes 5000,20000]
The reference is skipped (and its ratio not printed) when ``makeflow`` is absent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def treadle_command() -> list[str]:
    script = Path(sys.executable).parent / "treadle"
    return [str(script), "run"] if script.exists() else [sys.executable, "-m", "treadle", "run"]


def generate(d: Path, n: int) -> Path:
    wf = d / f"wf{n}.mf"
    wf.write_text("".join(f"out.{i}:\n\ttouch out.{i}\n" for i in range(1, n + 1)))
    return wf


def timed(command: list[str], n: int) -> float:
    """Wall time of one run in a fresh directory; checks that every output was made."""
    with tempfile.TemporaryDirectory(prefix="flowbench") as tmp:
        d = Path(tmp)
        wf = generate(d, n)
        t = time.perf_counter()
        r = subprocess.run([*command, "-j", "2", wf.name], cwd=d, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - t
        if r.returncode != 0:
            raise SystemExit(f"{command[0]} failed on {n} rules: {r.stderr.decode()[-500:]}")
        made = sum(1 for p in d.iterdir() if p.name.startswith("out."))
        if made != n:
            raise SystemExit(f"{command[0]} made {made} of {n} outputs")
        return elapsed


def best(command: list[str], n: int, repeat: int) -> float:
    return min(timed(command, n) for _ in range(repeat))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement (the best is kept)")
    ap.add_argument("--sizes", default="5000,20000", help="rule counts for treadle (the first one is compared)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    ours = treadle_command()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (2-core machine shared with other work?)")
    start = best(ours, 1, max(args.repeat, 3))
    print(f"treadle run, 1 rule: {start:.3f} s   (target < 0.3 s)")
    results = {}
    for n in sizes:
        results[n] = best(ours, n, args.repeat)
        print(f"treadle run -j 2, {n} rules: {results[n]:.2f} s")
    base = sizes[0]
    if shutil.which("makeflow"):
        ref = best(["makeflow"], base, args.repeat)
        print(f"makeflow -j 2, {base} rules: {ref:.2f} s")
        print(f"ratio treadle/makeflow at {base}: {results[base] / ref:.3f}   (target <= 0.30)")
    else:
        print("makeflow not installed: no reference ratio")
    for n in sizes[1:]:
        print(f"ratio treadle {n}/{base}: {results[n] / results[base]:.2f}   (target <= {4.5 * n / 20000 / (base / 5000):.2f})")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
