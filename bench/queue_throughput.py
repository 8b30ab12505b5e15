"""Work Queue throughput: the manager API alone, and `treadle run -T wq` against `makeflow -T wq`.

Prints rates and the ratios the targets are stated in (spec §5):

* the Manager API with 10,000 trivial tasks on two workers: target 800
  tasks/s. The issue fixes no worker size here (unlike the race below), so
  the headline runs the workers at their default size (every core of this
  machine); a second run with `--cores 1` workers is printed beside it;
* the dispatch rate with 100,000 tasks queued against 1,000 queued: target
  within 20 %;
* 2,000 trivial rules, two workers `--cores 1`: `treadle run -T wq` with
  treadle workers against the reference `makeflow -T wq` with reference
  workers, in the same run: target 5x.

Workers are treadle's (`treadle worker`) when that subcommand exists, else
the reference `work_queue_worker`; the output says which. Run:

    .venv/bin/python bench/queue_throughput.py [--tasks 10000] [--deep 100000] [--rules 2000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from treadle.queue import Manager, Task

ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def treadle_worker_cmd() -> list[str] | None:
    """`treadle worker` if the subcommand is installed, else None."""
    probe = subprocess.run([sys.executable, "-m", "treadle", "worker", "--help"], capture_output=True, env=ENV)
    return [sys.executable, "-m", "treadle", "worker"] if probe.returncode == 0 else None


def reference_worker_cmd() -> list[str]:
    exe = shutil.which("work_queue_worker")
    if exe is None:
        sys.exit("work_queue_worker not found (Debian package coop-computing-tools)")
    return [exe]


def start_workers(cmd: list[str], port: int, n: int, workdir: str,
                  cores: int | None = 1) -> list[subprocess.Popen[bytes]]:
    """n workers of ``cores`` cores each (None: the worker's default, every core)."""
    procs = []
    size = ["--cores", str(cores)] if cores else []
    for i in range(n):
        d = os.path.join(workdir, f"w{i}")
        os.makedirs(d, exist_ok=True)
        args = [*cmd, "--single-shot", "-t", "60", *size, "--memory", "1000", "--disk", "4000", "-s", d,
                "127.0.0.1", str(port)]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV))
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def api_rate(worker: list[str], n: int, workdir: str, cores: int | None) -> tuple[float, float]:
    """Tasks per second for n trivial tasks submitted up front; also manager CPU seconds."""
    with Manager(0, host="127.0.0.1") as m:
        procs = start_workers(worker, m.port, 2, workdir, cores)
        while m.stats.workers_able < 2:
            time.sleep(0.01)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            m.submit(Task("true", cores=1))
        for _ in range(n):
            t = m.wait(30)
            assert t is not None and t.result == 0 and t.exit_code == 0, t
        rate = n / (time.perf_counter() - t0)
        cpu = time.process_time() - c0
    stop(procs)
    return rate, cpu


def depth_rate(worker: list[str], depth: int, window: int, workdir: str) -> float:
    """Completion rate over ``window`` tasks while about ``depth`` tasks wait in the queue
    (workers of one core each)."""
    with Manager(0, host="127.0.0.1") as m:
        procs = start_workers(worker, m.port, 2, workdir)
        while m.stats.workers_able < 2:
            time.sleep(0.01)
        for _ in range(depth):
            m.submit(Task("true", cores=1))
        warm = 200
        for _ in range(warm):
            m.wait(30)
            m.submit(Task("true", cores=1))  # keep the depth
        t0 = time.perf_counter()
        for _ in range(window):
            assert m.wait(30) is not None
            m.submit(Task("true", cores=1))
        rate = window / (time.perf_counter() - t0)
    stop(procs)
    return rate


def makeflow_race(rules: int, tworker: list[str] | None, workdir: str) -> None:
    """`treadle run -T wq` + treadle workers against `makeflow -T wq` + reference workers."""
    mf_text = "".join(f"out.{i}:\n\ttouch out.{i}\n\n" for i in range(rules))
    probe = subprocess.run([sys.executable, "-m", "treadle", "run", "--help"], capture_output=True, env=ENV)
    if probe.returncode != 0:
        print("treadle run -T wq vs makeflow -T wq: skipped (needs `treadle run`)")
        return
    tlabel = "treadle run -T wq + treadle workers" if tworker else "treadle run -T wq + reference workers"
    results = {}
    for label, manager_cmd, worker in (
        ("makeflow -T wq + reference workers", [shutil.which("makeflow") or "makeflow"], reference_worker_cmd()),
        (tlabel, [sys.executable, "-m", "treadle", "run"], tworker or reference_worker_cmd()),
    ):
        d = tempfile.mkdtemp(dir=workdir)
        with open(os.path.join(d, "wf.mf"), "w") as f:
            f.write(mf_text)
        portfile = os.path.join(d, "port")
        t0 = time.perf_counter()
        mgr = subprocess.Popen([*manager_cmd, "-T", "wq", "-p", "0", "-Z", portfile, "wf.mf"], cwd=d,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        while not (os.path.exists(portfile) and open(portfile).read().strip()):
            time.sleep(0.01)
        port = int(open(portfile).read().split()[0])
        procs = start_workers(worker, port, 2, d)
        rc = mgr.wait()
        results[label] = time.perf_counter() - t0
        stop(procs)
        print(f"{label} (--cores 1): {rules} rules in {results[label]:.2f} s ({rules / results[label]:.0f} rules/s), exit {rc}")
    a, b = results.values()
    print(f"speed-up of treadle over makeflow: {a / b:.1f}x (target >= 5x, with treadle workers)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--deep", type=int, default=100_000)
    ap.add_argument("--shallow", type=int, default=1_000)
    ap.add_argument("--window", type=int, default=3_000)
    ap.add_argument("--rules", type=int, default=2_000)
    ap.add_argument("--reference-workers", action="store_true", help="use work_queue_worker even if treadle's exists")
    ap.add_argument("--only-race", action="store_true", help="only the treadle run vs makeflow comparison")
    args = ap.parse_args()
    tw = None if args.reference_workers else treadle_worker_cmd()
    worker = tw or reference_worker_cmd()
    kind = "treadle workers" if tw else "reference work_queue_worker (treadle worker not available)"
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; workers: 2 x {kind}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.only_race:
            makeflow_race(args.rules, tw, tmp)
            return
        for cores, size in ((None, "default size"), (1, "--cores 1")):
            rate, cpu = api_rate(worker, args.tasks, tmp, cores)
            print(f"Manager API, workers of {size}: {args.tasks} trivial tasks at {rate:.0f} tasks/s "
                  f"(manager process CPU {cpu:.2f} s); target 800/s: {rate / 800:.2f}x of target")
        shallow = depth_rate(worker, args.shallow, args.window, tmp)
        deep = depth_rate(worker, args.deep, args.window, tmp)
        print(f"dispatch rate with {args.shallow} queued: {shallow:.0f}/s; with {args.deep} queued: {deep:.0f}/s; "
              f"ratio {deep / shallow:.2f} (target within 0.8-1.2)")
        makeflow_race(args.rules, tw, tmp)


if __name__ == "__main__":
    main()
