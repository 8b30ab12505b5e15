#!/usr/bin/env python3
"""The main demo (issue 4): the motivating Weaver program, end to end, on Work Queue.

    python examples/demo.py [--output DIR] [--irises N] [--blue K]

1. writes a synthetic iris collection into demo-output/irises/: an SQLite database
   biometrics.db with a table `irises(fileid, color, subject, path)` and N small
   .nef images made by examples/weave/make_data.py;
2. puts the two bundled programs, convertiristotemplate and compareiristemplates,
   into demo-output/irises/bin and that directory on PATH;
3. writes the six-line program of issue 4 as demo-output/irises/irises.py and
   compiles it with `treadle weave -o .`: the directory is the sandbox, so every
   file a task needs has a relative name and can travel to a worker;
4. starts a Work Queue manager (`treadle run -T wq`) and two local workers
   (`treadle worker 127.0.0.1 PORT`), runs the DAG, stops the workers;
5. prints where matrix.txt is and a few of its rows.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "weave"))
import make_data  # noqa: E402  (the bundled generator, stdlib only)

# The motivating program of issue 4, exactly as examples/weave/irises/irises.py holds it.
PROGRAM = (HERE / "weave" / "irises" / "irises.py").read_text()


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def treadle(*args: str) -> list[str]:
    return [sys.executable, "-m", "treadle", *args]


def work_queue_missing() -> str | None:
    """Why Work Queue cannot run here, or None when `treadle worker` and `-T wq` exist."""
    if importlib.util.find_spec("treadle.cli.worker") is None:
        return "`treadle worker` is not in this tree yet (treadle/cli/worker.py is missing)"
    if importlib.util.find_spec("treadle.backends.workqueue") is None:
        return "`treadle run -T wq` is not in this tree yet (treadle/backends/workqueue.py)"
    return None


def tasks_per_worker(wqlog: Path) -> dict[str, int]:
    """How many tasks each worker ran, from the manager's transaction log."""
    counts: dict[str, int] = {}
    if wqlog.exists():
        for line in wqlog.read_text().splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[2] == "TASK" and fields[4] == "RUNNING":
                counts[fields[5]] = counts.get(fields[5], 0) + 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="demo-output", help="directory for everything")
    parser.add_argument("--irises", type=int, default=36, help="images in the collection")
    parser.add_argument("--blue", type=int, default=10, help="how many of them are Blue")
    args = parser.parse_args()
    started = time.monotonic()

    missing = work_queue_missing()
    if missing:
        say(f"cannot run the demo on Work Queue: {missing}.")
        return 2

    root = Path(args.output).resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    make_data.make_irises(str(root), random.Random(2010), args.irises, args.blue, programs=False)
    irises = root / "irises"
    bindir = irises / "bin"
    bindir.mkdir()
    for program in make_data.PROGRAMS:
        shutil.copy(HERE / "weave" / "irises" / program, bindir / program)
        (bindir / program).chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(bindir), str(Path(sys.executable).parent),
                                   env.get("PATH", "")])
    say(f"wrote {args.irises} iris images ({args.blue} Blue) and {irises / 'biometrics.db'}")
    say(f"programs on PATH: {bindir}")

    script = irises / "irises.py"
    script.write_text(PROGRAM)
    say(f"the program ({script}):")
    for line in PROGRAM.splitlines():
        print(f"    {line}")
    sandbox = irises
    subprocess.run(treadle("weave", "-o", ".", "--force", "irises.py"), cwd=irises, env=env,
                   check=True)

    port = free_port()
    manager = subprocess.Popen(treadle("run", "-T", "wq", "-p", str(port), "Makeflow"),
                               cwd=sandbox, env=env)
    workers = []
    try:
        for n in range(2):
            workspace = root / f"worker{n + 1}"
            workspace.mkdir()
            workers.append(subprocess.Popen(
                treadle("worker", "-t", "60", "-s", str(workspace), "127.0.0.1", str(port)),
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        say(f"manager on 127.0.0.1:{port}, two workers (pids "
            f"{', '.join(str(w.pid) for w in workers)})")
        status = manager.wait(timeout=300)
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
        for w in workers:
            try:
                w.wait(timeout=10)
            except subprocess.TimeoutExpired:
                w.kill()
        if manager.poll() is None:
            manager.terminate()
            manager.wait(timeout=10)
    if status != 0:
        say(f"the workflow failed (exit status {status})")
        return status

    per_worker = tasks_per_worker(sandbox / "Makeflow.wqlog")
    if per_worker:
        say("tasks per worker: " + ", ".join(f"{w} ran {n}" for w, n in per_worker.items()))
    matrix = sandbox / "matrix.txt"
    rows = matrix.read_text().splitlines()
    say(f"matrix.txt is {matrix} ({len(rows)} comparisons, {time.monotonic() - started:.1f} s)")
    for row in rows[:6]:
        print("    " + row.replace("\t", "  "))
    if len(rows) > 6:
        print(f"    ... ({len(rows) - 6} more)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
