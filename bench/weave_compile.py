#!/usr/bin/env python3
"""Compile speed of `treadle weave` (spec weaver.md R6, issue 4).

Compiles the `map N` workbench pattern (a Map over a FileList of N paths) and a Map
over a Glob of 100,000 files, each in a fresh `treadle weave` process, and reports wall
time, peak RSS (from wait4), the ratio against a bare Python loop that writes the same
number of rules in the same run, and the 200k/100k ratio (linearity).

    python bench/weave_compile.py            # 100k, 200k, Glob 100k
    python bench/weave_compile.py --million  # also 1,000,000 (bounded memory)
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

HERE = Path(__file__).resolve().parent
WORKBENCH = HERE.parent / "examples" / "weave" / "workbench.py"


def compile_once(workdir: Path, script: Path, *args: str) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS MB) of one `treadle weave` process."""
    out = workdir / "sandbox"
    if out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "treadle", "weave", "-o", str(out), str(script),
                          *args], cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - start
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"compile failed: {p.stderr.read().decode() if p.stderr else ''}")
    rules = (out / "Makeflow").read_text().count("\n\t")
    expected = int(args[1]) if args else 100_000
    if rules != expected:
        raise SystemExit(f"expected {expected} rules, found {rules}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def bare_loop(workdir: Path, n: int) -> float:
    """Seconds for a plain loop writing n rules of the same shape (the reference)."""
    start = time.perf_counter()
    with open(workdir / "bare.mf", "w") as f:
        for i in range(n):
            f.write(f"{i}.txt.out: {workdir}/in/{i}.txt\nCATEGORY=Map0\n"
                    f"\tcat {workdir}/in/{i}.txt > {i}.txt.out\n")
    return time.perf_counter() - start


GLOB_SCRIPT = "Map('cat {IN} > {OUT}', Glob('files/*.txt'), '{basename}.out')\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--million", action="store_true", help="also compile 1,000,000 tasks")
    args = parser.parse_args()
    sizes = [100_000, 200_000] + ([1_000_000] if args.million else [])
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    times: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copy(WORKBENCH, work / "workbench.py")
        for n in sizes:
            wall, cpu, rss = compile_once(work, work / "workbench.py", "map", str(n))
            bare = bare_loop(work, n)
            times[n] = wall
            print(f"map {n:>9,}: {wall:6.2f} s wall, {cpu:6.2f} s CPU, peak RSS {rss:6.1f} MB, "
                  f"bare loop {bare:5.2f} s, ratio {wall / bare:5.1f}x")
        print(f"linearity: 200k/100k = {times[200_000] / times[100_000]:.2f} (limit 2.3)")
        files = work / "files"
        files.mkdir()
        for i in range(100_000):
            (files / f"{i}.txt").touch()
        (work / "globmap.py").write_text(GLOB_SCRIPT)
        wall, cpu, rss = compile_once(work, work / "globmap.py")
        print(f"Glob 100,000: {wall:6.2f} s wall, {cpu:6.2f} s CPU, peak RSS {rss:6.1f} MB")
        ok = times[100_000] <= 5 and wall <= 5 and rss <= 500
        print("targets (100k: <= 5 s, <= 500 MB):", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
