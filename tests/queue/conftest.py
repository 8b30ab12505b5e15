"""Shared fixtures of the queue tests: processes on 127.0.0.1 and a free port.

* ``free_port`` - a TCP port nobody listens on right now.
* ``reference_env`` - the environment the reference cctools binaries need as root.
* ``start_worker(*args, cwd=None, **popen)`` - a ``treadle worker`` process, killed at
  teardown if still running.
* ``tls_server`` - ``(ssl context, certificate path)`` for a manager speaking TLS on
  127.0.0.1: a fresh self-signed certificate (skips without ``openssl``).
* ``start_makeflow(workflow, *args, cwd)`` - the reference ``makeflow -T wq`` with a
  port chosen by itself (``-Z``); returns ``(process, port)``; killed at teardown.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests._wait import wait_for


def pick_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    return pick_free_port()


@pytest.fixture
def tls_server(tmp_path: Path):
    import ssl

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(str(cert), str(key))
    return server, cert


@pytest.fixture
def reference_env() -> dict:
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.pop("CATALOG_HOST", None)
    return env


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
    proc.wait(timeout=10)


@pytest.fixture
def start_worker(tmp_path: Path):
    procs: list = []

    def start(*args: str, cwd=None, **popen) -> subprocess.Popen:
        popen.setdefault("stdout", subprocess.DEVNULL)
        popen.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(
            [sys.executable, "-m", "treadle", "worker", *args],
            cwd=cwd or tmp_path, start_new_session=True, **popen)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        _stop(proc)


@pytest.fixture
def start_makeflow(reference_env: dict):
    if shutil.which("makeflow") is None:
        pytest.skip("the reference makeflow is not installed")
    procs: list = []

    def start(workflow: str, *args: str, cwd: Path) -> tuple:
        portfile = cwd / "makeflow.port"
        if portfile.exists():
            portfile.unlink()
        proc = subprocess.Popen(
            ["makeflow", "-T", "wq", "-Z", str(portfile), *args, workflow], cwd=cwd,
            env=reference_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        procs.append(proc)

        def port() -> int:
            text = portfile.read_text().strip() if portfile.exists() else ""
            if not text.isdigit() and proc.poll() is not None:
                raise RuntimeError(f"makeflow exited: {proc.stdout.read().decode()}")
            return int(text) if text.isdigit() else 0

        return proc, wait_for(port, 30, "makeflow to report its port")

    yield start
    for proc in procs:
        _stop(proc)
