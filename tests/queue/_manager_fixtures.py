"""Fixtures for the manager's tests: a live manager on 127.0.0.1 and real workers.

Workers are the reference ``work_queue_worker`` (the interoperability target)
started with a short idle timeout so that a forgotten one exits by itself;
every process started here is stopped by its pid at teardown.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from tests._wait import wait_for

from treadle.queue import Manager, Task

WORKER = shutil.which("work_queue_worker")


class Workers:
    """Starts reference workers against a port; kills what is left at teardown."""

    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        port: int,
        *extra: str,
        cores: int = 1,
        memory: int = 1000,
        disk: int = 2000,
        single_shot: bool = True,
        log: str | None = None,
    ) -> subprocess.Popen[bytes]:
        assert WORKER is not None
        n = len(self.procs)
        workdir = os.path.join(self.tmp, f"worker{n}")
        os.makedirs(workdir, exist_ok=True)
        args = [WORKER, "-t", "30", "-s", workdir, "--cores", str(cores), "--memory", str(memory), "--disk", str(disk)]
        if single_shot:
            args.append("--single-shot")
        if log:
            args += ["-d", "all", "-o", log]
        args += [*extra, "127.0.0.1", str(port)]
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def manager(tmp_path) -> Iterator[Manager]:  # noqa: ANN001
    m = Manager(0, host="127.0.0.1")
    try:
        yield m
    finally:
        m.close()


@pytest.fixture
def workers(tmp_path) -> Iterator[Workers]:  # noqa: ANN001
    w = Workers(str(tmp_path))
    try:
        yield w
    finally:
        w.stop()


def wait_workers(m: Manager, n: int, timeout: float = 20.0) -> None:
    wait_for(lambda: m.stats.workers_able >= n, timeout, f"{n} workers")


def drain(m: Manager, timeout: float = 30.0) -> dict[int, Task]:
    """Wait for every submitted task; returns them by id."""
    out: dict[int, Task] = {}
    deadline = time.monotonic() + timeout
    while not m.empty():
        left = deadline - time.monotonic()
        assert left > 0, f"tasks still outstanding: {m.stats}"
        t = m.wait(min(left, 5))
        if t is not None:
            out[t.id] = t
    return out
