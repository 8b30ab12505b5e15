#!/usr/bin/env python3
"""Start-up of ``treadle vfs run`` and remote fetches into the cache (targets V9, V10, bench/RESULTS.md).

* V10: ``treadle vfs run --mode fuse`` with an http mount only, running ``/bin/true``, against
  ``python3 -I -c pass`` (the interpreter alone). Median of ``--rounds`` runs each. Target <= 4:
  a run with http mounts imports no database driver and contacts nothing before the command.
* V9: one object of ``--size`` MiB fetched from a ``treadle repo serve`` on loopback and
  verified into an empty cache (stream to tmp/ while hashing, fsync, rename: the code a run
  uses), as a rate, against the smaller of a raw loopback TCP copy of as many bytes and the
  SHA-256 rate of this machine. Target >= 0.5.

Run:

    .venv/bin/python bench/vfs_startup.py [--small] [--rounds 5] [--size 200] [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TREADLE = [sys.executable, "-m", "treadle"]
CHUNK = 1 << 20


def timed(argv: list[str], cwd: Path) -> float:
    """Seconds ``argv`` took; exits naming it if it fails."""
    began = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"{argv[:6]} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return took


def make_repository(work: Path, size: int) -> Path:
    """A repository with one file of ``size`` random bytes (fileid 1)."""
    (work / "big.bin").write_bytes(os.urandom(size))
    repo = work / "bench.repo"
    subprocess.run([*TREADLE, "repo", "init", str(repo)], check=True, capture_output=True)
    subprocess.run([*TREADLE, "repo", "ingest", str(repo), "--files", str(work / "big.bin"),
                    "--table", "blobs"], check=True, capture_output=True)
    (work / "big.bin").unlink()
    return repo


def serve(repo: Path, log: Path) -> tuple[subprocess.Popen[str], str]:
    """``treadle repo serve --no-auth`` on a free loopback port: (the server, its URL)."""
    with log.open("wb") as err:
        server = subprocess.Popen([*TREADLE, "repo", "serve", str(repo), "--bind", "127.0.0.1:0",
                                   "--no-auth"], stdout=subprocess.PIPE, stderr=err, text=True)
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    if not url.startswith("http://"):
        server.kill()
        sys.exit(f"the service did not start:\n{log.read_text()}")
    return server, url


def fetch_rate(url: str, cache: Path) -> float:
    """Bytes per second of fetching file 1 verified into an empty cache, as a run does."""
    from treadle.vfs.cache import Cache
    from treadle.vfs.sources import open_source

    shutil.rmtree(cache, ignore_errors=True)
    source = open_source(url, token_file=None, timeout=60.0)
    meta = source.file(1)
    began = time.perf_counter()
    Cache(cache, None).fill(meta.checksum, meta.size, lambda out: source.fetch(meta, out))
    return meta.size / (time.perf_counter() - began)


def socket_rate(size: int) -> float:
    """Bytes per second of a plain loopback TCP copy of ``size`` bytes in 1 MiB writes."""
    listener = socket.create_server(("127.0.0.1", 0))
    block = os.urandom(CHUNK)

    def send() -> None:
        conn, _ = listener.accept()
        with conn:
            left = size
            while left > 0:
                conn.sendall(block[:min(left, CHUNK)])
                left -= CHUNK

    sender = threading.Thread(target=send)
    sender.start()
    buffer = bytearray(CHUNK)
    began = time.perf_counter()
    with socket.create_connection(listener.getsockname()) as client:
        got = 0
        while got < size:
            n = client.recv_into(buffer)
            if n == 0:
                break
            got += n
    took = time.perf_counter() - began
    sender.join()
    listener.close()
    return got / took


def sha256_rate(size: int) -> float:
    """Bytes per second of SHA-256 over ``size`` bytes in 1 MiB chunks (standard library)."""
    block = os.urandom(CHUNK)
    h = hashlib.sha256()
    began = time.perf_counter()
    for _ in range(max(1, size // CHUNK)):
        h.update(block)
    return max(1, size // CHUNK) * CHUNK / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a 20 MiB object, for a quick run")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs of each (default 5)")
    parser.add_argument("--size", type=int, default=200, help="the object's MiB (default 200)")
    parser.add_argument("--dir", type=Path, help="where to work (default: a temporary directory)")
    args = parser.parse_args()
    size = (20 if args.small else args.size) << 20
    work = Path(tempfile.mkdtemp(prefix="treadle-bench-", dir=args.dir))
    server = None
    try:
        repo = make_repository(work, size)
        server, url = serve(repo, work / "serve.log")
        print(f"one object of {size >> 20} MiB served at {url}; {os.cpu_count()} cores; in {work}")

        bare = ["python3", "-I", "-c", "pass"]
        run = [*TREADLE, "vfs", "run", "--mode", "fuse", "--cache", str(work / "cache-v10"),
               "-m", f"/bxgrid={url}", "--", "/bin/true"]
        timed(bare, work)
        timed(run, work)  # warms the page cache for both
        ours, theirs = [], []
        for _ in range(args.rounds):
            theirs.append(timed(bare, work))
            ours.append(timed(run, work))
        mine, ref = statistics.median(ours), statistics.median(theirs)
        print(f"V10: vfs run /bin/true {mine * 1000:.0f} ms; python3 -I -c pass {ref * 1000:.0f} ms; "
              f"ratio {mine / ref:.2f} (target <= 4)")

        fetches = [fetch_rate(url, work / "cache-v9") for _ in range(args.rounds)]
        sockets = [socket_rate(size) for _ in range(args.rounds)]
        hashes = [sha256_rate(size) for _ in range(args.rounds)]
        fetch, sock, sha = (statistics.median(x) for x in (fetches, sockets, hashes))
        print(f"V9: fetch + verify {fetch / 2**20:.0f} MiB/s; loopback copy {sock / 2**20:.0f} MiB/s; "
              f"SHA-256 {sha / 2**20:.0f} MiB/s; ratio {fetch / min(sock, sha):.2f} (target >= 0.5)")
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
            if server.stdout is not None:
                server.stdout.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
