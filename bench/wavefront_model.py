#!/usr/bin/env python3
"""Wavefront benchmark (allpairs.md §4.2 W1, W2).

    python bench/wavefront_model.py [--size 30] [--cores K] [--cell 0.05]

W1: the native local makespan of a SIZE x SIZE grid whose callable sleeps
--cell seconds, against the model M(SIZE, SIZE, k, cell) (target ≤ 1.25·M + 2 s).
W2: a Weaver-expanded Wavefront (one rule per cell, run by ``treadle run -j k``)
divided by the native run, same executable F (target ≥ 2), for each of three F
of equal meaning that differ in the processes one call starts (the spec names
no F for W2). Both outputs must be byte-identical. Writes a JSON copy (default bench/results/wavefront.json).
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
# Executable cell programs of equal meaning (R = sum of the three neighbours mod 1000),
# differing in how many processes one call starts. Called as F x y left bottom diag.
EXEC_CELLS = {
    # one process per call, like a compiled cell program
    "awk": '#!/usr/bin/awk -f\n'
           'BEGIN { s = 0; for (i = 3; i < ARGC; i++) { getline v < ARGV[i]; s += v }; '
           'print s % 1000 }\n',
    # a shell script of builtins only: no process start of its own in the reused shell
    "sh-read": '#!/bin/sh\nread l < "$3"; read b < "$4"; read d < "$5"\n'
               'echo $(( (l + b + d) % 1000 ))\n',
    # a shell script that starts three `cat`s: four process starts per call
    "sh-cat": '#!/bin/sh\necho $(( ($(cat "$3") + $(cat "$4") + $(cat "$5")) % 1000 ))\n',
}
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


def expanded_vs_native(work: Path, program: str, n: int, k: int) -> dict:
    """W2 for one executable F: the native run, then the Weaver-expanded one, in ``work``."""
    work.mkdir()
    shutil.copy(work.parent / "boundary.txt", work)
    (work / "cell").write_text(program)
    (work / "cell").chmod(0o755)
    native = run(TREADLE + ["wavefront", str(work / "cell"), str(n), str(n), "boundary.txt",
                            "native.txt", "-c", str(k), "-T", "local"], work)
    (work / "wf.py").write_text(WEAVER.format(f=str(work / "cell"), n=n))
    compile_s = run(TREADLE + ["weave", "-o", "WE", "--native", "never", "wf.py"], work)
    run_s = run(TREADLE + ["run", "Makeflow", "-T", "local", "-j", str(k)], work / "WE")
    expanded = compile_s + run_s
    return {"native_s": native, "expanded_s": expanded, "compile_s": compile_s, "run_s": run_s,
            "ratio": expanded / native, "pass": expanded / native >= 2,
            "same": (work / "WE" / "out.txt").read_bytes() == (work / "native.txt").read_bytes()}


def main() -> int:
    from treadle.allpairs.wavefront_model import sweep_time

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=30)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cell", type=float, default=0.05)
    parser.add_argument("--exec-cell", choices=sorted(EXEC_CELLS), action="append",
                        help="an executable F for W2 (repeatable; default: each of them)")
    parser.add_argument("--skip-w1", action="store_true", help="measure W2 only")
    parser.add_argument("--json", default=str(HERE / "results" / "wavefront.json"))
    opts = parser.parse_args()
    n, k = opts.size, opts.cores
    work = Path(tempfile.mkdtemp(prefix="treadle-wfbench-"))
    (work / "boundary.txt").write_text("".join(f"{x} 0 {x}\n" for x in range(n + 1))
                                       + "".join(f"0 {y} {y}\n" for y in range(1, n + 1)))
    (work / "slow.py").write_text(SLOW_CELL.format(seconds=opts.cell))
    record: dict = {"command": " ".join(sys.argv), "size": n, "cores": k, "cell_s": opts.cell,
                    "W2": {}}
    model = sweep_time(n, n, k, opts.cell)
    if not opts.skip_w1:
        w1 = run(TREADLE + ["wavefront", "slow.py:cell", str(n), str(n), "boundary.txt", "w1.txt",
                            "-c", str(k), "-T", "local"], work)
        bound = 1.25 * model + 2
        record["W1"] = {"makespan_s": w1, "model_s": model, "bound_s": bound, "pass": w1 <= bound}
        print(f"W1  native makespan {w1:.2f} s; M({n},{n},{k},{opts.cell}) = {model:.2f} s; "
              f"target <= {bound:.2f} s  {'pass' if w1 <= bound else 'FAIL'}")
    for name in opts.exec_cell or sorted(EXEC_CELLS):
        try:
            record["W2"][name] = w2 = expanded_vs_native(work / name, EXEC_CELLS[name], n, k)
        except (RuntimeError, OSError) as e:
            record["W2"][name] = {"note": f"not measured: {e}"}
            print(f"W2  F={name}: not measured: {e}")
            continue
        if not w2["same"]:
            print(f"MISMATCH: F={name}: expanded Wavefront output differs from native",
                  file=sys.stderr)
            return 1
        print(f"W2  F={name}: expanded {w2['expanded_s']:.2f} s (compile {w2['compile_s']:.2f} "
              f"+ run {w2['run_s']:.2f}) / native {w2['native_s']:.2f} s = {w2['ratio']:.2f}; "
              f"target >= 2  {'pass' if w2['pass'] else 'FAIL'}")
    if opts.json:
        Path(opts.json).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.json).write_text(json.dumps(record, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
