"""Work Queue file transfer: a 1 GiB input against a plain socket copy, and a shared input.

* 1 GiB sent to a worker over loopback, against a plain socket copy of the
  same file (sendfile into a process that writes it to disk), measured in
  the same run: target at least 0.5x the plain copy's speed. The input's
  checksum (its cache name, spec §3.8) is computed once per file version;
  the figure is given with and without that first computation.
* 100 MB shared by 200 tasks on two workers: bytes sent, target one copy
  per worker.

Workers are treadle's (`treadle worker`) when that subcommand exists, else
the reference `work_queue_worker`. Run:

    .venv/bin/python bench/queue_transfer.py [--size-mb 1024] [--shared-mb 100] [--tasks 200]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

from queue_throughput import reference_worker_cmd, start_workers, stop, treadle_worker_cmd

from treadle.queue import Manager, Task

RECEIVER = r"""
import socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
with open(sys.argv[1], "wb") as f:
    while True:
        data = conn.recv(1 << 20)
        if not data:
            break
        f.write(data)
"""


def make_file(path: str, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(size >> 20):
            f.write(block)


def plain_copy(path: str, dest: str) -> float:
    """Seconds to send ``path`` through a loopback socket into ``dest``."""
    rx = subprocess.Popen([sys.executable, "-c", RECEIVER, dest], stdout=subprocess.PIPE, text=True)
    port = int(rx.stdout.readline())
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s, open(path, "rb") as f:
        s.sendfile(f)
    rx.wait()
    return time.perf_counter() - t0


def manager_copy(worker: list[str], path: str, size: int, tmp: str, prehash: bool) -> float:
    """Seconds from submit to result for a task whose only input is ``path``."""
    with Manager(0, host="127.0.0.1") as m:
        procs = start_workers(worker, m.port, 1, tmp)
        while m.stats.workers_able < 1:
            time.sleep(0.01)
        if prehash:
            m._namer.file_digest(path)
        t = Task(f"test $(wc -c < big) -eq {size}", cores=1)
        t.add_input(path, "big")
        t0 = time.perf_counter()
        m.submit(t)
        done = m.wait(600)
        elapsed = time.perf_counter() - t0
        assert done is not None and done.result == 0 and done.exit_code == 0, (done, done and done.output)
    stop(procs)
    return elapsed


def shared_input(worker: list[str], path: str, size: int, ntasks: int, tmp: str) -> None:
    with Manager(0, host="127.0.0.1") as m:
        procs = start_workers(worker, m.port, 2, tmp)
        while m.stats.workers_able < 2:
            time.sleep(0.01)
        for i in range(ntasks):
            t = Task(f"test -s shared && echo {i}", cores=1)
            t.add_input(path, "shared")
            m.submit(t)
        for _ in range(ntasks):
            t = m.wait(600)
            assert t is not None and t.result == 0 and t.exit_code == 0
        sent = m.stats.bytes_sent
        used = sum(1 for w in m.workers() if w["total_tasks_complete"] > 0)
    stop(procs)
    print(f"shared input: {size >> 20} MB x {ntasks} tasks on 2 workers ({used} used): "
          f"{sent} bytes sent = {sent / size:.3f} copies of the file (target: one per worker used)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--shared-mb", type=int, default=100)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--reference-workers", action="store_true")
    args = ap.parse_args()
    tw = None if args.reference_workers else treadle_worker_cmd()
    worker = tw or reference_worker_cmd()
    kind = "treadle worker" if tw else "reference work_queue_worker (treadle worker not available)"
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; worker: {kind}")
    with tempfile.TemporaryDirectory() as tmp:
        big = os.path.join(tmp, "big.dat")
        size = args.size_mb << 20
        make_file(big, size)
        raw = plain_copy(big, os.path.join(tmp, "copy.dat"))
        os.unlink(os.path.join(tmp, "copy.dat"))
        cold = manager_copy(worker, big, size, tmp, prehash=False)
        warm = manager_copy(worker, big, size, tmp, prehash=True)
        mb = size / 1e6
        print(f"plain socket copy: {raw:.2f} s ({mb / raw:.0f} MB/s)")
        print(f"manager -> worker, checksum already known: {warm:.2f} s ({mb / warm:.0f} MB/s), "
              f"{raw / warm:.2f}x the plain copy's speed (target >= 0.5x)")
        print(f"manager -> worker, including the first checksum: {cold:.2f} s ({mb / cold:.0f} MB/s), "
              f"{raw / cold:.2f}x")
        os.unlink(big)
        shared = os.path.join(tmp, "shared.dat")
        make_file(shared, args.shared_mb << 20)
        shared_input(worker, shared, args.shared_mb << 20, args.tasks, tmp)


if __name__ == "__main__":
    main()
