#!/usr/bin/env python3
"""``treadle repo serve`` against the floors it is built on (targets R5, R6; bench/RESULTS.md).

* R5: one GET of a 1 GiB file on loopback, against ``socket.sendfile`` of the same file to the
  same client by a bare server. Target: treadle's rate >= 0.5x.
* R6: 4 KiB range GETs per second on one keep-alive connection, against a ~30-line asyncio +
  h11 server that answers every request with a fixed 4 KiB body. Target >= 0.5x.

Each server runs in a process of its own, as ``treadle repo serve`` does; the client is the same
for both sides of a comparison. The file is ingested first, so its replica is trusted and
served with sendfile. Run:

    .venv/bin/python bench/repo_serve.py [--size-mb 1024] [--requests 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def serve_sendfile(path: str) -> None:
    """The R5 floor: answer each connection's one request with headers and socket.sendfile."""
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"http://127.0.0.1:{listener.getsockname()[1]}", flush=True)
    size = os.path.getsize(path)
    while True:
        sock, _ = listener.accept()
        with sock, open(path, "rb") as f:
            request = b""
            while b"\r\n\r\n" not in request:
                request += sock.recv(65536)
            sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
            sock.sendfile(f)


def serve_h11_fixed() -> None:
    """The R6 floor: an asyncio + h11 server answering every request with 4 KiB."""
    import h11

    body = b"x" * 4096

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                writer.write(conn.send(h11.Response(status_code=206, headers=[
                    ("Content-Length", "4096"), ("Content-Range", "bytes 0-4095/1048576")])))
                writer.write(conn.send(h11.Data(data=body)))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
            elif isinstance(event, h11.EndOfMessage):
                conn.start_next_cycle()
            else:
                writer.close()
                return

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
        await server.serve_forever()

    asyncio.run(main())


def start(argv: list[str]) -> tuple[subprocess.Popen[str], int]:
    """Start a server process; (process, port) once it printed its URL."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url:
        sys.exit(f"the server did not start: {' '.join(argv)}")
    return process, int(url.rsplit(":", 1)[1])


def whole_get(port: int, target: str, size: int) -> float:
    """Seconds for one GET, reading the body into one reused buffer."""
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        got = len(head.split(b"\r\n\r\n", 1)[1])
        while got < size:
            n = sock.recv_into(view)
            if not n:
                raise RuntimeError(f"the body ended after {got} of {size} bytes")
            got += n
    return time.perf_counter() - t0


def range_rate(port: int, target: str, requests: int, span: int) -> float:
    """4 KiB range GETs per second on one keep-alive connection (http.client)."""
    connection = http.client.HTTPConnection("127.0.0.1", port)
    t0 = time.perf_counter()
    for i in range(requests):
        offset = (i * 4096) % (span - 4096)
        connection.request("GET", target, headers={"Range": f"bytes={offset}-{offset + 4095}"})
        response = connection.getresponse()
        if response.status != 206 or len(response.read()) != 4096:
            raise RuntimeError(f"request {i}: {response.status}")
    elapsed = time.perf_counter() - t0
    connection.close()
    return requests / elapsed


def make_repository(tmp: Path, size: int) -> tuple[Path, Path]:
    """A repository holding the big file (fileid 1) and a 1 MiB one (fileid 2)."""
    from treadle.repo.context import init_repository
    from treadle.repo.ingest import ingest

    big, small = tmp / "big.dat", tmp / "small.dat"
    block = os.urandom(1 << 20)
    with open(big, "wb") as f:
        for _ in range(size >> 20):
            f.write(block)
    small.write_bytes(os.urandom(1 << 20))
    repo = tmp / "bench.repo"
    with init_repository(repo) as ctx:
        ingest(ctx, None, table="bench", files=[str(big), str(small)])
    return repo, big


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each side")
    ap.add_argument("--serve-sendfile", metavar="FILE", help=argparse.SUPPRESS)
    ap.add_argument("--serve-h11", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_sendfile:
        return serve_sendfile(args.serve_sendfile)
    if args.serve_h11:
        return serve_h11_fixed()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        repo, big = make_repository(tmp, args.size_mb << 20)
        size = big.stat().st_size
        treadle, treadle_port = start([sys.executable, "-m", "treadle", "repo", "serve", str(repo),
                                       "--bind", "127.0.0.1:0", "--no-auth"])
        floor, floor_port = start([sys.executable, __file__, "--serve-sendfile", str(big)])
        fixed, fixed_port = start([sys.executable, __file__, "--serve-h11"])
        try:
            whole_get(treadle_port, "/v1/files/1", size)  # warm the page cache
            ours, theirs = [], []
            for _ in range(args.rounds):
                ours.append(whole_get(treadle_port, "/v1/files/1", size))
                theirs.append(whole_get(floor_port, "/", size))
            mb = size / 1e6
            r5 = min(theirs) / min(ours)
            print(f"R5 one {size >> 20} MiB GET: treadle {min(ours):.2f} s ({mb / min(ours):.0f} MB/s), "
                  f"socket.sendfile {min(theirs):.2f} s ({mb / min(theirs):.0f} MB/s): "
                  f"rate {r5:.2f}x (target >= 0.5)")
            rates, floors = [], []
            for _ in range(args.rounds):
                rates.append(range_rate(treadle_port, "/v1/files/2", args.requests, 1 << 20))
                floors.append(range_rate(fixed_port, "/", args.requests, 1 << 20))
            r6 = max(rates) / max(floors)
            print(f"R6 4 KiB range GETs on one connection: treadle {max(rates):.0f}/s, "
                  f"asyncio+h11 fixed body {max(floors):.0f}/s: {r6:.2f}x (target >= 0.5)")
        finally:
            for process in (treadle, floor, fixed):
                process.terminate()
                process.wait()


if __name__ == "__main__":
    main()
