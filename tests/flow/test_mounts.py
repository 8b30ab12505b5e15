"""``--mounts FILE`` and ``--cache DIR`` against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import http.server
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest


class _Served(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """(base URL, the directory it serves, the paths asked for)."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []
    handler = type("Handler", (_Served,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "treadle", "run", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


WF = "out.txt: data/remote.txt local.txt\n\tcat data/remote.txt local.txt > out.txt\n"


def test_mounted_files_are_fetched_once_into_the_cache(tmp_path: Path, server: tuple[str, Path, list[str]]) -> None:
    url, root, requests = server
    (root / "r.txt").write_text("from the web\n")
    (tmp_path / "elsewhere.txt").write_text("from a path\n")
    wd = tmp_path / "wf"
    wd.mkdir()
    (wd / "wf.mf").write_text(WF)
    (wd / "mounts").write_text(f"# logical name, source\ndata/remote.txt {url}/r.txt\nlocal.txt {tmp_path}/elsewhere.txt\n")
    done = _run(wd, "--mounts", "mounts", "--cache", "cache", "wf.mf")
    assert done.returncode == 0, done.stderr
    assert (wd / "out.txt").read_text() == "from the web\nfrom a path\n"
    digests = sorted(p.read_text().strip() for p in (wd / "cache").glob("*.sha256"))
    assert len(digests) == 2 and all(len(d) == 64 for d in digests)
    assert requests == ["/r.txt"]
    (wd / "out.txt").unlink()
    done = _run(wd, "--mounts", "mounts", "--cache", "cache", "wf.mf")
    assert done.returncode == 0, done.stderr
    assert requests == ["/r.txt"]  # the second run used the cache


def test_a_malformed_mount_file_names_its_line_and_runs_nothing(tmp_path: Path) -> None:
    (tmp_path / "wf.mf").write_text(WF)
    (tmp_path / "mounts").write_text("local.txt /etc/hostname\n\ndata/remote.txt\n")
    done = _run(tmp_path, "--mounts", "mounts", "wf.mf")
    assert done.returncode != 0
    assert done.stderr.startswith("treadle: mounts:3: error:") and done.stderr.count("\n") == 1
    assert not (tmp_path / "wf.mf.makeflowlog").exists()


def test_an_unreachable_url_is_one_error_line_and_runs_nothing(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nobody listens there
    url = f"http://127.0.0.1:{port}/r.txt"
    (tmp_path / "wf.mf").write_text(WF)
    (tmp_path / "local.txt").write_text("x\n")
    (tmp_path / "mounts").write_text(f"data/remote.txt {url}\n")
    done = _run(tmp_path, "--mounts", "mounts", "wf.mf")
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and url in done.stderr and "mounts:1" in done.stderr
    assert not (tmp_path / "out.txt").exists()
    assert not (tmp_path / "wf.mf.makeflowlog").exists()


def test_a_missing_url_is_an_error(tmp_path: Path, server: tuple[str, Path, list[str]]) -> None:
    url, _, _ = server
    (tmp_path / "wf.mf").write_text(WF)
    (tmp_path / "mounts").write_text(f"data/remote.txt {url}/absent.txt\n")
    done = _run(tmp_path, "--mounts", "mounts", "wf.mf")
    assert done.returncode != 0 and f"{url}/absent.txt" in done.stderr and "HTTP 404" in done.stderr
