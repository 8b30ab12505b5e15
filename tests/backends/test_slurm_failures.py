"""``-T slurm`` when the cluster misbehaves: each failure ends in a named outcome, in bounded time.

Failures are caused for real on the test cluster (``scancel``, ``scontrol
requeue``/``hold``, a partition that does not exist, a request no node can
meet, a status directory the job cannot write, a wall time that runs out) and
the run is watched as a user would: its exit status, its lines, its log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests._wait import wait_for
from tests.backends.test_slurm_run import (
    FAST,
    cancel_runs,  # noqa: F401 - the fixture pytestmark names
    job_records,
    queue,
    start,
    tag_of,
    treadle,
)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("cancel_runs")]

POLL_MAX = 4.0  # FAST's --poll-max


def _running_job(log: Path, state: str = "RUNNING", timeout: float = 60) -> tuple[str, str]:
    """(tag, native id) of the run's one job once Slurm lists it in ``state``."""
    tag = wait_for(lambda: tag_of(log), timeout=timeout, what="the run's tag in its log")

    def listed() -> str | None:
        jobs = queue(tag)
        return next((native for native, s in jobs.items() if s == state), None)

    return tag, wait_for(listed, timeout=timeout, what=f"a job {state} in squeue")


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return out, err


def _write(tmp_path: Path, command: str, variables: str = "") -> Path:
    """A one-rule workflow ``wf.mf`` running ``command``; returns the path its log will have."""
    (tmp_path / "wf.mf").write_text(f"a.txt:\n{variables}\t{command}\n")
    return tmp_path / "wf.mf.makeflowlog"


def test_a_running_job_cancelled_behind_treadle_s_back_is_resubmitted(tmp_path: Path) -> None:
    workflow = _write(tmp_path, "sleep 6; echo done > a.txt")
    proc = start("-T", "slurm", *FAST, "wf.mf", cwd=tmp_path)
    try:
        _tag, native = _running_job(workflow)
        cancelled = time.monotonic()
        subprocess.run(["scancel", native], check=True)
        wait_for(lambda: len(job_records(workflow)) == 2, timeout=POLL_MAX + 5, what="the job resubmitted")
        latency = time.monotonic() - cancelled
        _out, err = proc.communicate(timeout=60)
    finally:
        _stop(proc)
    assert proc.returncode == 0, err
    assert latency <= POLL_MAX + 5
    assert "was lost" in err and (tmp_path / "a.txt").read_text() == "done\n"
    (first, old), (again, new) = job_records(workflow)
    assert first == again and old != new  # the same handle for the engine, a new job for Slurm


def test_a_pending_job_cancelled_behind_treadle_s_back_is_resubmitted(tmp_path: Path) -> None:
    """The reference waits forever here: a job that never ran writes no heartbeat."""
    workflow = _write(tmp_path, "echo done > a.txt")
    proc = start("-T", "slurm", *FAST, "-B", "--begin=now+1hour", "wf.mf", cwd=tmp_path)
    try:
        tag, native = _running_job(workflow, state="PENDING")
        cancelled = time.monotonic()
        subprocess.run(["scancel", native], check=True)
        wait_for(lambda: len(job_records(workflow)) == 2, timeout=POLL_MAX + 5, what="the job resubmitted")
        assert time.monotonic() - cancelled <= POLL_MAX + 5
        assert set(queue(tag).values()) == {"PENDING"}
    finally:
        _out, err = _stop(proc)
    assert "was lost" in err and "CANCELLED" in err
    assert queue(tag) == {}


def test_a_requeued_job_is_followed_under_its_id_to_the_end(tmp_path: Path) -> None:
    workflow = _write(tmp_path, "sleep 4; echo done > a.txt")
    proc = start("-T", "slurm", *FAST, "wf.mf", cwd=tmp_path)
    try:
        tag, native = _running_job(workflow)
        subprocess.run(["scontrol", "requeue", native], check=True)
        # Slurm holds a requeued job back for two minutes; let it start again at once.
        wait_for(lambda: queue(tag).get(native) == "PENDING", what="the job requeued")
        subprocess.run(["scontrol", "update", f"JobId={native}", "StartTime=now"], check=True)
        _out, err = proc.communicate(timeout=180)
    finally:
        _stop(proc)
    assert proc.returncode == 0, err
    assert (tmp_path / "a.txt").read_text() == "done\n"
    assert job_records(workflow) == [(job_records(workflow)[0][0], native)]  # no second submission
    (status,) = (tmp_path / "wf.mf.batch" / "status" / "seen").glob(f"*.{native}.json")
    # It did run twice, under one id. (The run says "requeued" only when a poll saw the job pending
    # again; with StartTime=now it may start again before one does.)
    assert json.loads(status.read_text())["restarts"] == 1


def test_a_job_held_past_the_hold_timeout_is_cancelled_and_resubmitted(tmp_path: Path) -> None:
    workflow = _write(tmp_path, "echo done > a.txt")
    proc = start("-T", "slurm", *FAST, "--hold-timeout", "3", "-B", "--begin=now+1hour", "wf.mf", cwd=tmp_path)
    try:
        tag, native = _running_job(workflow, state="PENDING")
        subprocess.run(["scontrol", "hold", native], check=True)
        held = time.monotonic()
        wait_for(lambda: len(job_records(workflow)) == 2, timeout=3 + 2 * POLL_MAX + 5,
                 what="the held job resubmitted")
        assert time.monotonic() - held >= 3
        wait_for(lambda: native not in queue(tag), timeout=5, what="the held job cancelled")
    finally:
        _out, err = _stop(proc)
    assert "is held" in err and "was lost" in err
    assert queue(tag) == {}


def test_a_partition_that_does_not_exist_fails_the_rule_at_once(tmp_path: Path) -> None:
    _write(tmp_path, "echo done > a.txt")
    began = time.monotonic()
    done = treadle("-T", "slurm", *FAST, "-r", "2", "-B", "--partition=nope", "wf.mf", cwd=tmp_path)
    assert done.returncode == 1
    assert time.monotonic() - began < 20
    assert "invalid partition" in done.stderr.lower() and "(1 attempt)" in done.stderr, done.stderr


def test_a_request_no_node_can_meet_is_unstartable_after_the_grace(tmp_path: Path) -> None:
    workflow = _write(tmp_path, "echo done > a.txt")
    began = time.monotonic()
    done = treadle("-T", "slurm", *FAST, "--pending-grace", "3", "-r", "2", "-B", "--nodes=2", "wf.mf",
                   cwd=tmp_path)
    took = time.monotonic() - began
    assert done.returncode == 1
    # Slurm names the limit PartitionNodeLimit, or PartitionConfig on a cluster that has just started.
    assert ("PartitionNodeLimit" in done.stderr or "PartitionConfig" in done.stderr), done.stderr
    assert "(1 attempt)" in done.stderr and "will never start it" in done.stderr, done.stderr
    assert 3 <= took <= 3 + 2 * POLL_MAX + 10
    assert queue(tag_of(workflow) or "") == {}


def test_a_status_directory_the_job_cannot_write_is_named(tmp_path: Path, small_disk: Callable[..., Path]) -> None:
    _write(tmp_path, "echo done > a.txt")
    status = tmp_path / "wf.mf.batch" / "status"
    small_disk(status, size="64k")
    (status / "seen").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(status)], check=True)
    done = treadle("-T", "slurm", *FAST, "wf.mf", cwd=tmp_path)
    assert done.returncode == 1
    assert "ran but wrote no status file" in done.stderr and "filesystem the nodes share" in done.stderr


@pytest.mark.slow
def test_a_job_over_its_wall_time_fails_with_a_hint_and_is_not_retried(tmp_path: Path) -> None:
    _write(tmp_path, "sleep 150; echo done > a.txt", variables="\t@WALL_TIME=60\n")
    done = treadle("-T", "slurm", *FAST, "-r", "2", "wf.mf", cwd=tmp_path, timeout=300)
    assert done.returncode == 1
    assert "TIMEOUT" in done.stderr and "raise WALL_TIME (was 60 s)" in done.stderr, done.stderr
    assert "(1 attempt)" in done.stderr


@pytest.mark.slow
def test_a_job_on_a_node_that_goes_down_is_lost_and_resubmitted(tmp_path: Path) -> None:
    """NODE_FAIL: the node is set down while the job runs (Slurm kills the job), then resumed.

    With ``--no-requeue`` Slurm ends the job as NODE_FAIL (by default it would
    requeue it under the same id, which treadle follows like any requeue). This changes the state of the test cluster's only node, so the node is
    resumed in every case; other jobs running on it at that moment are lost too.
    """
    node = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True,
                          check=True).stdout.split()[0]
    workflow = _write(tmp_path, "sleep 8; echo done > a.txt")
    proc = start("-T", "slurm", *FAST, "-B", "--no-requeue", "wf.mf", cwd=tmp_path)
    try:
        _tag, native = _running_job(workflow)
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=down", "reason=treadle-test"],
                       check=True)
        try:
            wait_for(lambda: job_records(workflow)[-1][1] != native, timeout=POLL_MAX + 10,
                     what="the job submitted again after its node failed")
        finally:
            _resume(node)
        _out, err = proc.communicate(timeout=120)
    finally:
        _stop(proc)
    assert proc.returncode == 0, err
    assert "was lost" in err and "NODE_FAIL" in err, err
    assert (tmp_path / "a.txt").read_text() == "done\n"


def _resume(node: str) -> None:
    """Bring the node back (Slurm may have returned it to service by itself: ReturnToService=2)."""
    def up() -> bool:
        state = subprocess.run(["sinfo", "-h", "-n", node, "-o", "%T"], capture_output=True, text=True).stdout
        return state.strip().rstrip("*~#") in ("idle", "mixed", "allocated")

    if not up():
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], capture_output=True)
    wait_for(up, timeout=30, what=f"node {node} back in service", interval=0.2)


@pytest.mark.slow
def test_sbatch_failing_while_the_controller_does_not_answer_is_retried(tmp_path: Path) -> None:
    """The controller is stopped (SIGSTOP) past sbatch's message timeout, so sbatch fails for real
    with a transient error; treadle backs off and submits again once the controller answers.

    Everything on the test cluster waits while the controller is stopped, so
    it is always continued, whatever happens here.
    """
    controller = int(Path("/run/slurmctld.pid").read_text())
    timeout = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    message_timeout = int(next(line.split("=")[1].split()[0] for line in timeout.splitlines()
                               if line.startswith("MessageTimeout")))
    # A local rule first: the run reads Slurm's configuration at its start (an unreachable controller
    # then is a one-line error); the controller stops once that is done, before the rule is submitted.
    (tmp_path / "wf.mf").write_text("gate:\n\tLOCAL sleep 1; touch gate\n\na.txt: gate\n\techo done > a.txt\n")
    workflow = tmp_path / "wf.mf.makeflowlog"
    proc = start("-T", "slurm", *FAST, "wf.mf", cwd=tmp_path)
    wait_for(lambda: tag_of(workflow), timeout=30, what="the run started")
    os.kill(controller, signal.SIGSTOP)
    try:
        wait_for(lambda: (tmp_path / "gate").exists(), timeout=30, what="the local rule done")
        time.sleep(message_timeout + 3)  # the fault: the controller stays silent past sbatch's own timeout
    finally:
        os.kill(controller, signal.SIGCONT)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        _stop(proc)
    assert proc.returncode == 0, err
    assert (tmp_path / "a.txt").read_text() == "done\n"
    assert job_records(workflow), "the job was submitted once the controller answered"
    assert "sbatch failed (" in err and "submitting again after a pause" in err, err
    assert "sbatch works again" in err, err
