"""End to end on a real HTCondor pool: rules as jobs, and workers from the pool.

These run only where ``condor_submit`` is on PATH (the ``condor`` marker skips
them elsewhere, saying why): no pool can run on the development machines and no
stand-in is written for one (docs/batch.md). A user with a pool runs them from
a submit machine whose address the execute machines reach::

    pytest -m condor tests/batch/test_condor_pool.py

Each test names its jobs with its own batch name and removes them at the end,
so a shared pool and other users' jobs are left alone.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from treadle.batch import condor_log

pytestmark = [pytest.mark.condor, pytest.mark.slow]

TREADLE = [sys.executable, "-m", "treadle"]
RUN_TIMEOUT = 1800  # a busy pool may take many minutes to match a job


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=RUN_TIMEOUT)


def _left_in_queue(batch_name: str) -> str:
    """Jobs of this batch name still in the schedd's queue (``condor_q`` ids), '' when none."""
    q = subprocess.run(["condor_q", "-constraint", f'JobBatchName == "{batch_name}"', "-af:j", "JobStatus"],
                       capture_output=True, text=True, timeout=120)
    return q.stdout.strip()


def test_three_rules_run_as_htcondor_jobs_and_bring_back_their_outputs(tmp_path: Path) -> None:
    (tmp_path / "in put.txt").write_text("pool\n")
    (tmp_path / "Makeflow").write_text(
        "GREETING=hello from 'condor'\n"
        "export GREETING\n"
        "a.txt: in\\ put.txt\n"
        "\techo \"$GREETING\" > a.txt; cat 'in put.txt' >> a.txt\n"
        "b.txt: a.txt\n"
        "\ttr a-z A-Z < a.txt > b.txt\n"
        "c.txt: b.txt\n"
        "\twc -l < b.txt > c.txt\n")
    done = _run([*TREADLE, "run", "-T", "condor", "Makeflow"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "a.txt").read_text() == "hello from 'condor'\npool\n"
    assert (tmp_path / "b.txt").read_text() == "HELLO FROM 'CONDOR'\nPOOL\n"
    assert (tmp_path / "c.txt").read_text().strip() == "2"
    events = condor_log.UserLogTail(tmp_path / "Makeflow.condorlog").read()
    ended = [e for e in events if e.code == condor_log.TERMINATED]
    assert len(ended) == 3 and all(e.exit == 0 for e in ended)
    submitted = {e.cluster for e in events if e.code == condor_log.SUBMIT}
    assert len(submitted) == 3  # a chain: one round, so one condor_submit, per rule


def test_two_workers_from_the_pool_serve_a_workflow_and_leave(tmp_path: Path) -> None:
    rules = "".join(f"out{i}.txt:\n\techo {i} > out{i}.txt\n" for i in range(8))
    (tmp_path / "Makeflow").write_text(rules)
    host = socket.getfqdn()
    done = _run([*TREADLE, "run", "-T", "wq", "--factory",
                 f"condor:max=2,host={host},batch-dir={tmp_path / 'factory'}", "Makeflow"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.read_text() for p in tmp_path.glob("out*.txt")) == [f"{i}\n" for i in range(8)]
    workers = condor_log.UserLogTail(tmp_path / "factory" / "workers.log").read()
    assert 1 <= len({e.job for e in workers if e.code == condor_log.SUBMIT}) <= 2 * 4
    names = {line.split("batch_name = ", 1)[1] for sub in (tmp_path / "factory").glob("workers-*.sub")
             for line in sub.read_text().splitlines() if line.startswith("batch_name = ")}
    assert names and all(_left_in_queue(name) == "" for name in names)
