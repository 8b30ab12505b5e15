"""-T wq writes a job's log only where someone may read it: not an empty one of a job that exited 0."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from treadle.backends.base import Job, JobResult
from treadle.backends.workqueue import WorkQueueBackend


@pytest.fixture
def backend(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[WorkQueueBackend]:
    b = WorkQueueBackend(workdir=str(tmp_path), port=0, host="127.0.0.1",
                         keep_empty_logs=request.param)
    worker = subprocess.Popen([sys.executable, "-m", "treadle", "worker", "--cores", "1", "-t", "30",
                               "127.0.0.1", str(b.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield b
    finally:
        b.close()
        worker.kill()
        worker.wait()


def run_all(b: WorkQueueBackend, commands: dict[str, str]) -> dict[str, JobResult]:
    ids = {b.submit(Job(rule_id=n, command=cmd, stdout=f"{name}.log", stderr=f"{name}.log")): name
           for n, (name, cmd) in enumerate(commands.items())}
    results: dict[str, JobResult] = {}
    deadline = time.monotonic() + 60
    while len(results) < len(ids):
        assert time.monotonic() < deadline, "jobs did not finish"
        r = b.wait(1)
        if r is not None:
            results[ids[r.job_id]] = r
    return results


JOBS = {"quiet": "true", "talks": "echo hi", "fails": "exit 3"}


@pytest.mark.parametrize("backend", [False], indirect=True)
def test_a_quiet_successful_job_leaves_no_log(backend: WorkQueueBackend, tmp_path: Path) -> None:
    results = run_all(backend, JOBS)
    assert results["quiet"].succeeded and results["quiet"].stdout is None
    assert not (tmp_path / "quiet.log").exists()
    assert (tmp_path / "talks.log").read_text() == "hi\n" and results["talks"].stdout == "talks.log"
    assert results["fails"].exit_code == 3 and (tmp_path / "fails.log").exists()


@pytest.mark.parametrize("backend", [True], indirect=True)
def test_with_keep_logs_every_job_has_its_log(backend: WorkQueueBackend, tmp_path: Path) -> None:
    results = run_all(backend, JOBS)
    assert results["quiet"].stdout == "quiet.log" and (tmp_path / "quiet.log").read_text() == ""
