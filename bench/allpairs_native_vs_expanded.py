#!/usr/bin/env python3
"""All-Pairs benchmark: native engine vs Weaver expansion vs the spawn floor (allpairs.md §4.3).

    python bench/allpairs_native_vs_expanded.py [--size 200] [--bytes 1024] [--cores K]

Every run is a whole command timed from process start to exit (median of
--repeat; the expanded runs once). Every table must equal native-bitwise's,
sorted; a mismatch aborts. Prints the ratios A1-A7 with their targets and
writes a JSON copy (default bench/results/allpairs.json).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
F_SH = HERE / "allpairs" / "bitdiff.sh"
F_PY = HERE / "allpairs" / "bitdiff.py"
PAIRS_PY = HERE / "allpairs" / "pairs.py"
TREADLE = [sys.executable, "-m", "treadle"]


def make_data(directory: Path, size: int, nbytes: int, seed: int = 7) -> Path:
    """size files of nbytes seeded random bytes; every 50th repeats an earlier item."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    contents: list[bytes] = []
    for k in range(size):
        data = contents[rng.randrange(k)] if k and k % 50 == 7 else rng.randbytes(nbytes)
        contents.append(data)
        (directory / f"item{k:04d}.bin").write_bytes(data)
    listed = directory / "set.list"
    listed.write_text("".join(f"{directory / f'item{k:04d}.bin'}\n" for k in range(size)))
    return listed


def run(argv: list[str], cwd: Path, **kw) -> float:
    # rules that call `treadle` (the native path of weaver-auto) find this interpreter's
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env, **kw)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv[:6]))} ... exited {proc.returncode}: "
                           f"{proc.stderr.strip()[-400:]}")
    return wall


def sorted_table(path: Path) -> list[str]:
    return sorted(path.read_text().splitlines())


def worker_argv(cores: int, port: str) -> tuple[list[str], str]:
    if importlib.util.find_spec("treadle.cli.worker") is not None:
        return TREADLE + ["worker", "--single-shot", "--cores", str(cores), "127.0.0.1", port], \
            "treadle worker"
    return ["work_queue_worker", "--single-shot", "--cores", str(cores), "127.0.0.1", port], \
        "work_queue_worker (treadle worker not available)"


def native_wq(listed: Path, work: Path, cores: int) -> tuple[float, dict, str]:
    port_file = work / "wq.port"
    port_file.unlink(missing_ok=True)
    argv = TREADLE + ["allpairs", str(listed), str(listed), str(F_SH), "-T", "wq", "-Z",
                      str(port_file), "-o", "nwq.txt", "--stats", "wq.json", "-c", str(cores)]
    holder: dict = {}

    def start_worker():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (port_file.exists() and port_file.read_text().strip()):
            time.sleep(0.02)
        w_argv, holder["label"] = worker_argv(cores, port_file.read_text().strip())
        holder["proc"] = subprocess.Popen(w_argv, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True)

    thread = threading.Thread(target=start_worker, daemon=True)
    thread.start()
    try:
        wall = run(argv, work)
    finally:
        thread.join(5)
        proc = holder.get("proc")
        if proc is not None:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return wall, json.loads((work / "wq.json").read_text()), holder.get("label", "?")


def kill_and_resume(listed: Path, work: Path, cores: int, size: int) -> dict:
    """A7: kill -9 at about 50% of the blocks, rerun, count F calls in the rerun."""
    counter = work / "a7.calls"
    wrapper = work / "a7.sh"
    wrapper.write_text(f'#!/bin/sh\necho >> "{counter}"\nexec "{F_SH}" "$@"\n')
    wrapper.chmod(0o755)
    argv = TREADLE + ["allpairs", str(listed), str(listed), str(wrapper), "-T", "local", "-o",
                      "a7.txt", "-c", str(cores), "-t", "0.004", "--stats", "a7.json"]
    for stale in ("a7.txt", "a7.json"):
        (work / stale).unlink(missing_ok=True)
    shutil.rmtree(work / "a7.txt.apstate", ignore_errors=True)
    engine = subprocess.Popen(argv, cwd=work, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    plan_path = work / "a7.txt.apstate" / "plan.json"
    journal = work / "a7.txt.apstate" / "journal"
    deadline = time.monotonic() + 600
    while not plan_path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    plan = json.loads(plan_path.read_text())["plan"]
    total_blocks = plan["blocks"]
    while time.monotonic() < deadline and engine.poll() is None:
        if journal.exists() and journal.read_text().count("done") * 2 >= total_blocks:
            break
        time.sleep(0.02)
    os.killpg(engine.pid, signal.SIGKILL)
    engine.wait()
    time.sleep(0.3)
    done_keys = set()
    if journal.exists():
        for line in journal.read_text().splitlines():
            parts = line.split()
            done_keys.add((int(parts[1]), int(parts[2])))
    x, y = plan["x"], plan["y"]
    remaining = sum(len(range(bx * x, min(size, bx * x + x))) * len(range(by * y, min(size, by * y + y)))
                    for bx in range(-(-size // x)) for by in range(-(-size // y))
                    if (bx, by) not in done_keys)
    done = len(done_keys)
    block_cells = x * y
    counter.unlink(missing_ok=True)
    run(argv, work)
    rerun = counter.read_text().count("\n") if counter.exists() else 0
    in_flight = 2 * cores * block_cells
    ok = sorted_table(work / "a7.txt") == sorted_table(work / "nb.txt")
    return {"blocks": total_blocks, "done_at_kill": done, "remaining_pairs": remaining,
            "rerun_calls": rerun, "in_flight_bound": in_flight, "table_ok": ok,
            "pass": ok and rerun <= remaining + in_flight}


def per_core_rates(listed: Path) -> dict:
    """Pairs per second of the runner on one core, for the two Python callables."""
    from treadle.allpairs.functions import resolve
    from treadle.allpairs.runner import compute_pairs

    paths = listed.read_text().split("\n")[:-1]
    rows = list(enumerate(paths))
    out = {}
    for name in ("bitdiff", "bitdiff_batched", "BITWISE"):
        fn = resolve(name if name == "BITWISE" else f"{F_PY}:{name}").function
        compute_pairs(fn, rows[:8], rows[:8], False)  # warm up: imports, first allocations
        start = time.perf_counter()
        lines, _ = compute_pairs(fn, rows, rows, False)
        out[name] = len(lines) / (time.perf_counter() - start)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--bytes", type=int, default=1024)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=str(HERE / "results" / "allpairs.json"))
    parser.add_argument("--skip", action="append", default=[],
                        help="a run to leave out (floor, native-exec, native-wq, weaver-expanded, "
                             "weaver-auto, a7)")
    opts = parser.parse_args()
    k = opts.cores
    work = Path(tempfile.mkdtemp(prefix="treadle-apbench-"))
    listed = make_data(work / "data", opts.size, opts.bytes)
    names = listed.read_text().split("\n")[:-1]
    (work / "pairs.txt").write_text("".join(f"{a}\n{b}\n" for a in names for b in names))
    pairs = opts.size * opts.size
    walls: dict[str, float] = {}
    notes: dict[str, str] = {}
    extra: dict = {}

    def timed(name: str, argv: list[str], output: str | None, repeat: int = opts.repeat):
        if name in opts.skip:
            notes[name] = "skipped (--skip)"
            return
        try:
            times = []
            for _ in range(repeat):
                if output:
                    shutil.rmtree(work / (output + ".apstate"), ignore_errors=True)
                start_epoch = time.time()
                times.append(run(argv, work))
            walls[name] = statistics.median(times)
            if name == "native-exec":
                stats = json.loads((work / "ne.json").read_text())
                extra["A6_first_block_s"] = stats["first_block_epoch"] - start_epoch
                extra["native_exec_plan"] = stats["plan"]
        except (RuntimeError, OSError, KeyError, ValueError) as e:
            notes[name] = f"not measured: {e}"

    native = TREADLE + ["allpairs", str(listed), str(listed)]
    timed("native-bitwise", native + ["BITWISE", "-T", "local", "-o", "nb.txt", "-c", str(k)], "nb.txt")
    if "native-bitwise" not in walls:
        print(f"native-bitwise failed: {notes.get('native-bitwise')}", file=sys.stderr)
        return 1
    reference = sorted_table(work / "nb.txt")
    timed("floor", ["sh", "-c", f'xargs -P {k} -n 2 "{F_SH}" < pairs.txt > /dev/null'], None)
    timed("native-exec", native + [str(F_SH), "-T", "local", "-o", "ne.txt", "-c", str(k),
                                   "--stats", "ne.json"], "ne.txt")
    timed("native-py", native + [f"{F_PY}:bitdiff", "-T", "local", "-o", "np.txt", "-c", str(k)],
          "np.txt")
    timed("native-py-batched", native + [f"{F_PY}:bitdiff_batched", "-T", "local", "-o",
                                         "npb.txt", "-c", str(k)], "npb.txt")
    tables = {"native-exec": "ne.txt", "native-py": "np.txt", "native-py-batched": "npb.txt"}
    if "native-wq" not in opts.skip:
        try:
            times, label = [], ""
            for _ in range(opts.repeat):
                wall, stats, label = native_wq(listed, work, k)
                times.append(wall)
            walls["native-wq"] = statistics.median(times)
            extra["wq_worker"] = label
            extra["wq_bytes_sent_ratio"] = stats["bytes_sent_ratio"]
            tables["native-wq"] = "nwq.txt"
        except (RuntimeError, OSError, KeyError, ValueError) as e:
            notes["native-wq"] = f"not measured: {e}"
    for name, native_flag, out_dir in (("weaver-expanded", ["--native", "never"], "WE"),
                                       ("weaver-auto", [], "WA")):
        if name in opts.skip:
            notes[name] = "skipped (--skip)"
            continue
        shutil.rmtree(work / out_dir, ignore_errors=True)
        try:
            compile_s = run(TREADLE + ["weave", "-o", out_dir, *native_flag, str(PAIRS_PY),
                                       str(listed), str(F_SH)], work)
            run_s = run(TREADLE + ["run", "Makeflow", "-T", "local", "-j", str(k)], work / out_dir)
            walls[name] = compile_s + run_s
            extra[f"{name}_compile_s"] = compile_s
            extra[f"{name}_run_s"] = run_s
            tables[name] = f"{out_dir}/matrix.txt"
        except (RuntimeError, OSError) as e:
            notes[name] = f"not measured: {e}"
    for name, table in tables.items():
        if name in walls and sorted_table(work / table) != reference:
            print(f"MISMATCH: {name}'s table differs from native-bitwise's", file=sys.stderr)
            return 1
    if "a7" not in opts.skip:
        try:
            extra["A7"] = kill_and_resume(listed, work, k, opts.size)
        except (RuntimeError, OSError, ValueError) as e:
            notes["a7"] = f"not measured: {e}"
    extra["per_core_pairs_per_s"] = per_core_rates(listed)

    def ratio(num: str, den: str):
        return walls[num] / walls[den] if num in walls and den in walls else None

    targets = [
        ("A1", "weaver-expanded / native-exec", ratio("weaver-expanded", "native-exec"), ">=", 2),
        ("A2", "weaver-expanded / native-bitwise", ratio("weaver-expanded", "native-bitwise"), ">=", 50),
        ("A2", "weaver-expanded / native-py", ratio("weaver-expanded", "native-py"), ">=", 50),
        ("A3", "native-exec / floor", ratio("native-exec", "floor"), "<=", 1.3),
        ("A4", "native-wq / native-exec", ratio("native-wq", "native-exec"), "<=", 1.5),
        ("A5", "weaver-auto - native-exec (s)", (walls["weaver-auto"] - walls["native-exec"])
         if "weaver-auto" in walls and "native-exec" in walls else None, "<=", 3),
        ("A6", "start to first block (s)", extra.get("A6_first_block_s"), "<=", 6),
        ("py", "bitdiff_batched pairs/s/core", extra["per_core_pairs_per_s"]["bitdiff_batched"], ">=", 1e5),
        ("py", "bitdiff pairs/s/core", extra["per_core_pairs_per_s"]["bitdiff"], ">=", 1e5),
    ]
    print(f"All-Pairs benchmark: {opts.size} x {opts.size} items of {opts.bytes} bytes "
          f"({pairs} pairs), k = {k}, repeat {opts.repeat}")
    print(f"{'run':<20} {'wall s':>9} {'pairs/s':>10}")
    for name, wall in walls.items():
        print(f"{name:<20} {wall:>9.2f} {pairs / wall:>10.0f}")
    for name, note in notes.items():
        print(f"{name:<20} {note}")
    print()
    rows = []
    for ident, what, value, op, target in targets:
        if value is None:
            verdict = "not measured"
            shown = "-"
        else:
            ok = value >= target if op == ">=" else value <= target
            verdict = "pass" if ok else "FAIL"
            shown = f"{value:.3g}"
        rows.append({"id": ident, "what": what, "value": value, "target": f"{op} {target:g}",
                     "verdict": verdict})
        print(f"{ident:<3} {what:<34} {shown:>10}  target {op} {target:<8g} {verdict}")
    if "A7" in extra:
        a7 = extra["A7"]
        a7_verdict = "pass" if a7["pass"] else "FAIL"
        print(f"A7  rerun calls {a7['rerun_calls']} <= remaining {a7['remaining_pairs']} + "
              f"in flight {a7['in_flight_bound']}  {a7_verdict}")
    if "wq_bytes_sent_ratio" in extra:
        print(f"A4  bytes sent / (item bytes x workers) = {extra['wq_bytes_sent_ratio']:.3f} "
              f"({extra['wq_worker']})")
    record = {"command": " ".join(sys.argv), "size": opts.size, "bytes": opts.bytes, "cores": k,
              "repeat": opts.repeat, "walls": walls, "notes": notes, "targets": rows, **extra}
    if opts.json:
        Path(opts.json).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.json).write_text(json.dumps(record, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
