"""treadle's worker against the reference work_queue_worker, measured in the same run.

1. Throughput: ``makeflow -T wq`` (the reference manager) over N trivial rules with
   two workers ``--cores 1``: reference workers, then treadle workers; and the same
   with treadle's Manager API instead of makeflow.
2. Transfer: one input of S MiB pushed to a worker with ``put`` (a scripted manager
   built on treadle's protocol module, ``socket.sendfile``), until the worker has
   written it and answered ``check``: reference worker, treadle worker, and a plain
   socket copy into a process that writes the bytes to disk.

Run: ``.venv/bin/python bench/queue_worker.py [--rules 2000] [--api-tasks 2000]
[--size-mb 1024] [--skip throughput|api|transfer]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from queue_transfer import plain_copy

from treadle.queue import protocol as wp

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def worker_cmd(kind: str, port: int, workdir: str) -> list:
    common = ["--single-shot", "-t", "60", "--cores", "1", "--memory", "1000", "--disk",
              "4000", "-s", workdir, "127.0.0.1", str(port)]
    if kind == "reference":
        return ["work_queue_worker", *common]
    return [sys.executable, "-m", "treadle", "worker", *common]


def throughput(kind: str, rules: int, workdir: str) -> float:
    d = tempfile.mkdtemp(dir=workdir)
    with open(os.path.join(d, "Makeflow"), "w") as f:
        for i in range(rules):
            f.write(f"out.{i}:\n\ttouch out.{i}\n\n")
    start = time.monotonic()
    mf = subprocess.Popen(["makeflow", "-T", "wq", "-Z", "port", "Makeflow"], cwd=d, env=ENV,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    portfile = os.path.join(d, "port")
    while not (os.path.exists(portfile) and open(portfile).read().strip()):
        time.sleep(0.02)
    port = int(open(portfile).read())
    workers = [subprocess.Popen(worker_cmd(kind, port, d), env=ENV, stderr=subprocess.DEVNULL)
               for _ in range(2)]
    mf.wait()
    wall = time.monotonic() - start
    for w in workers:
        w.wait(timeout=60)
    shutil.rmtree(d, ignore_errors=True)
    return wall


def api_rate(kind: str, tasks: int, workdir: str) -> float:
    """Tasks/s of treadle's Manager API with two workers of one kind (`true` tasks)."""
    from treadle.queue import Manager, Task

    with Manager(port=0, host="127.0.0.1") as m:
        workers = [subprocess.Popen(worker_cmd(kind, m.port, workdir), env=ENV,
                                    stderr=subprocess.DEVNULL) for _ in range(2)]
        while m.stats.workers_connected < 2:
            time.sleep(0.02)
        start = time.monotonic()
        for _ in range(tasks):
            m.submit(Task("true", cores=1))
        done = 0
        while done < tasks:
            if m.wait(timeout=5) is not None:
                done += 1
        rate = tasks / (time.monotonic() - start)
    for w in workers:
        w.wait(timeout=60)
    return rate


def push(kind: str, path: str, workdir: str) -> float:
    """Seconds from the put header to the worker's answer to the check that follows."""
    size = os.path.getsize(path)
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    worker = subprocess.Popen(worker_cmd(kind, port, workdir), env=ENV,
                              stderr=subprocess.DEVNULL)
    sock, _ = srv.accept()
    conn = wp.ManagerConnection()

    def until(want) -> None:
        while True:
            ev = conn.next_event()
            if ev is wp.NEED_DATA:
                conn.receive_data(sock.recv(1 << 16))
            elif want(ev):
                return

    until(lambda e: isinstance(e, wp.Info) and e.name == "worker-end-time")
    start = time.monotonic()
    sock.sendall(conn.send(wp.Put("file-0-big", size, 0o644)))
    with open(path, "rb") as f:
        sock.sendfile(f)
    conn.payload_streamed(size)
    sock.sendall(conn.send(wp.Check()))
    until(lambda e: isinstance(e, wp.Alive))
    took = time.monotonic() - start
    sock.sendall(conn.send(wp.Exit()))
    worker.wait(timeout=60)
    sock.close()
    srv.close()
    return took


def plain_copy_here(path: str, workdir: str) -> float:
    """The plain loopback socket copy of queue_transfer.py, into ``workdir``."""
    target = os.path.join(workdir, "plain-copy")
    took = plain_copy(path, target)
    os.unlink(target)
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=2000)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--api-tasks", type=int, default=2000)
    ap.add_argument("--skip", choices=["throughput", "api", "transfer"], action="append",
                    default=[])
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-worker-")
    try:
        print(f"load average at start: {os.getloadavg()[0]:.2f}")
        if "throughput" not in args.skip:
            ref = throughput("reference", args.rules, workdir)
            ours = throughput("treadle", args.rules, workdir)
            print(f"makeflow -T wq, {args.rules} rules, 2 workers --cores 1:")
            print(f"  reference workers {ref:.1f} s ({args.rules / ref:.0f} rules/s)")
            print(f"  treadle workers   {ours:.1f} s ({args.rules / ours:.0f} rules/s)"
                  f"  ratio {ref / ours:.2f}x")
        if "api" not in args.skip:
            ref = api_rate("reference", args.api_tasks, workdir)
            ours = api_rate("treadle", args.api_tasks, workdir)
            print(f"treadle Manager API, {args.api_tasks} `true` tasks, 2 workers --cores 1:")
            print(f"  reference workers {ref:.0f} tasks/s")
            print(f"  treadle workers   {ours:.0f} tasks/s  ratio {ours / ref:.2f}x")
        if "transfer" not in args.skip:
            path = os.path.join(workdir, "big.bin")
            with open(path, "wb") as f:
                chunk = os.urandom(1 << 20)
                for _ in range(args.size_mb):
                    f.write(chunk)
            mb = args.size_mb * (1 << 20) / 1e6
            plain = plain_copy_here(path, workdir)
            ref = push("reference", path, workdir)
            ours = push("treadle", path, workdir)
            print(f"put of {args.size_mb} MiB to a worker, written to disk:")
            print(f"  plain socket copy  {plain:.2f} s ({mb / plain:.0f} MB/s)")
            print(f"  reference worker   {ref:.2f} s ({mb / ref:.0f} MB/s)")
            print(f"  treadle worker     {ours:.2f} s ({mb / ours:.0f} MB/s)"
                  f"  = {plain / ours:.2f}x plain copy, {ref / ours:.2f}x reference")
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
