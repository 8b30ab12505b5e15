#!/usr/bin/env python3
"""Wavefront benchmark (allpairs.md §4.2 W1, W2).

    python bench/wavefront_model.py [--size 30] [--cores K] [--cell 0.05]

W1: the native local makespan of a SIZE x SIZE grid whose callable sleeps
--cell seconds, against the model M(SIZE, SIZE, k, cell) (target ≤ 1.25·M + 2 s).
W2: a Weaver-expanded Wavefront (one rule per cell, run by ``treadle run -j k``)
divided by the native run, same executable F (target ≥ 2). Both outputs must be
byte-identical. Writes a JSON copy (default bench/results/wavefront.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TREADLE = [sys.executable, "-m", "treadle"]

SLOW_CELL = """import time
def cell(x, y, left, bottom, diag):
    time.sleep({seconds})
    return (int(left) + int(bottom) + int(diag)) % 1000
"""
EXEC_CELL = '#!/bin/sh\necho $(( ($(cat "$3") + $(cat "$4") + $(cat "$5")) % 1000 ))\n'
WEAVER = """from treadle.weave import Wavefront
Wavefront({f!r}, 'boundary.txt', {n}, {n}, outputs='out.txt')
"""


def run(argv: list[str], cwd: Path) -> float:
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:5])} ... exited {proc.returncode}: "
                           f"{proc.stderr.strip()[-400:]}")
    return wall


def main() -> int:
    from treadle.allpairs.wavefront import sweep_time

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=30)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cell", type=float, default=0.05)
    parser.add_argument("--json", default=str(HERE / "results" / "wavefront.json"))
    opts = parser.parse_args()
    n, k = opts.size, opts.cores
    work = Path(tempfile.mkdtemp(prefix="treadle-wfbench-"))
    (work / "boundary.txt").write_text("".join(f"{x} 0 {x}\n" for x in range(n + 1))
                                       + "".join(f"0 {y} {y}\n" for y in range(1, n + 1)))
    (work / "slow.py").write_text(SLOW_CELL.format(seconds=opts.cell))
    (work / "cell.sh").write_text(EXEC_CELL)
    (work / "cell.sh").chmod(0o755)
    record: dict = {"command": " ".join(sys.argv), "size": n, "cores": k, "cell_s": opts.cell}
    model = sweep_time(n, n, k, opts.cell)
    w1 = run(TREADLE + ["wavefront", "slow.py:cell", str(n), str(n), "boundary.txt", "w1.txt",
                        "-c", str(k), "-T", "local"], work)
    bound = 1.25 * model + 2
    record["W1"] = {"makespan_s": w1, "model_s": model, "bound_s": bound, "pass": w1 <= bound}
    print(f"W1  native makespan {w1:.2f} s; M({n},{n},{k},{opts.cell}) = {model:.2f} s; "
          f"target <= {bound:.2f} s  {'pass' if w1 <= bound else 'FAIL'}")
    native = run(TREADLE + ["wavefront", str(work / "cell.sh"), str(n), str(n), "boundary.txt",
                            "native.txt", "-c", str(k), "-T", "local"], work)
    (work / "wf.py").write_text(WEAVER.format(f=str(work / "cell.sh"), n=n))
    try:
        compile_s = run(TREADLE + ["weave", "-o", "WE", "--native", "never", "wf.py"], work)
        run_s = run(TREADLE + ["run", "Makeflow", "-T", "local", "-j", str(k)], work / "WE")
        expanded = compile_s + run_s
        same = (work / "WE" / "out.txt").read_bytes() == (work / "native.txt").read_bytes()
        if not same:
            print("MISMATCH: expanded Wavefront output differs from native", file=sys.stderr)
            return 1
        ratio = expanded / native
        record["W2"] = {"native_s": native, "expanded_s": expanded, "compile_s": compile_s,
                        "run_s": run_s, "ratio": ratio, "pass": ratio >= 2}
        print(f"W2  expanded {expanded:.2f} s (compile {compile_s:.2f} + run {run_s:.2f}) / "
              f"native {native:.2f} s = {ratio:.2f}; target >= 2  {'pass' if ratio >= 2 else 'FAIL'}")
    except (RuntimeError, OSError) as e:
        record["W2"] = {"native_s": native, "note": f"not measured: {e}"}
        print(f"W2  not measured: {e}")
    if opts.json:
        Path(opts.json).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.json).write_text(json.dumps(record, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
