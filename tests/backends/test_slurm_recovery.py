"""``-T slurm`` across an engine crash and an abort: jobs are adopted, not run twice; an abort leaves none.

The engine is a real ``treadle run`` process killed with SIGKILL (nothing of it
can clean up) or stopped with SIGTERM. What Slurm is asked is counted by
shims that log each command and run the real one.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from tests._wait import wait_for
from tests.backends.test_slurm_run import (
    FAST,
    calls_of,
    cancel_runs,  # noqa: F401 - the fixture pytestmark names
    counting_path,
    job_records,
    queue,
    start,
    tag_of,
    treadle,
)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("cancel_runs")]


def _sleepers(tmp_path: Path, count: int, seconds: int) -> Path:
    rules = "\n".join(f"out{i}.txt:\n\tsleep {seconds}; echo {i} > out{i}.txt\n" for i in range(count))
    (tmp_path / "wf.mf").write_text(rules)
    return tmp_path / "wf.mf.makeflowlog"


@pytest.mark.parametrize("when", ["running", "finished"])
def test_jobs_of_a_killed_engine_are_adopted_not_resubmitted(tmp_path: Path, when: str) -> None:
    log = _sleepers(tmp_path, 8, 8)
    env, calls = counting_path(tmp_path)
    engine = start("-T", "slurm", *FAST, "wf.mf", cwd=tmp_path, env=env)
    try:
        tag = wait_for(lambda: tag_of(log), timeout=60, what="the run's tag")
        # All 8 fit the test cluster's 8 CPUs; other users of the cluster may leave some pending, which
        # are adopted all the same.
        wait_for(lambda: len(queue(tag)) == 8 and "RUNNING" in queue(tag).values(), timeout=60,
                 what="8 jobs queued, some running")
    finally:
        engine.kill()
        engine.communicate(timeout=30)
    submitted = calls_of(calls, "sbatch")
    first = job_records(log)
    assert len(first) == 8 and submitted == 1  # one array
    if when == "finished":
        wait_for(lambda: queue(tag) == {}, timeout=60, what="the orphaned jobs to finish")
    again = treadle("-T", "slurm", *FAST, "wf.mf", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert calls_of(calls, "sbatch") == submitted  # nothing submitted again
    assert {native for _, native in job_records(log)} == {native for _, native in first}
    assert again.stdout.count("adopting job") == 8
    assert all((tmp_path / f"out{i}.txt").read_text() == f"{i}\n" for i in range(8))


def test_an_abort_is_one_scancel_and_leaves_nothing_queued(tmp_path: Path) -> None:
    log = _sleepers(tmp_path, 4, 60)
    env, calls = counting_path(tmp_path)
    engine = start("-T", "slurm", *FAST, "wf.mf", cwd=tmp_path, env=env)
    try:
        tag = wait_for(lambda: tag_of(log), timeout=60, what="the run's tag")
        wait_for(lambda: len(queue(tag)) == 4, timeout=60, what="4 jobs queued")
        before = calls_of(calls, "scancel")
        engine.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        wait_for(lambda: queue(tag) == {}, timeout=5, what="the run's jobs gone from squeue")
        gone_after = time.monotonic() - stopped
        out, err = engine.communicate(timeout=30)
    finally:
        if engine.poll() is None:
            engine.kill()
    assert engine.returncode == 1
    assert gone_after <= 2.0
    assert calls_of(calls, "scancel") - before == 1
    assert out.count("aborting remote job") == 4 and "workflow was aborted" in err
