"""The worker factory on the one-node Slurm test cluster: real arrays, real workers, real managers.

Each test knows its own jobs (by the ids the factory prints or by its
provider's job name) and cancels them at teardown; the queue is shared.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests._wait import wait_for

from treadle.queue import Manager, Task
from treadle.queue.factory import Factory, FactoryConfig, batch_options_for
from treadle.queue.providers.base import JobState
from treadle.queue.providers.slurm import SlurmProvider

pytestmark = pytest.mark.slurm


def queued(ids: list[str]) -> list[str]:
    """Those of ``ids`` that squeue lists as pending or running."""
    if not ids:
        return []
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(_jobs(ids))],
                         capture_output=True, text=True, check=False).stdout
    live = {line.split("|")[0] for line in out.split() if line.split("|")[1] in ("PENDING", "RUNNING",
                                                                                 "CONFIGURING", "COMPLETING")}
    return [i for i in ids if i in live or i.partition("_")[0] in live]


def _jobs(ids: list[str]) -> list[str]:
    return sorted({i.partition("_")[0] for i in ids})


def submitted_ids(out: str) -> list[str]:
    """The array ids of ``factory: submitted N workers as 1234 (n/t)`` lines."""
    return [line.split()[5] for line in out.splitlines() if line.startswith("factory: submitted")]


def worker_processes(port: int) -> list[int]:
    """Processes running a worker (zipapp or not) for the manager on ``port``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if str(port).encode() in argv and any(b"worker" in a for a in argv):
            found.append(int(entry))
    return found


class Script:
    def __init__(self, **answer: Any) -> None:
        self.answer = answer
        self.rounds = 0

    def __call__(self) -> dict[str, Any]:
        self.rounds += 1
        return dict(self.answer)


@pytest.fixture
def providers() -> Iterator[list[SlurmProvider]]:
    """Slurm providers a test made; every job of theirs is cancelled at teardown."""
    made: list[SlurmProvider] = []
    yield made
    for p in made:
        subprocess.run(["scancel", "-n", p.job_name], check=False)


def slurm_factory(tmp_path: Path, providers: list[SlurmProvider], status: Any, *, batch: str | None = None,
                  **config: Any) -> Factory:
    config.setdefault("host", "127.0.0.1")
    config.setdefault("port", 9)
    c = FactoryConfig(batch_dir=str(tmp_path / "batch"), options=batch_options_for("slurm", batch), **config)
    provider = SlurmProvider(str(tmp_path / "batch"), manager_host=c.host)
    providers.append(provider)
    return Factory(c, provider, status=status)


# ------------------------------------------------------------------ start order (P6)
def start_cli_factory(tmp_path: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "treadle", "factory", "-T", "slurm", "--batch-dir", str(tmp_path / "batch"),
         "--cores", "1", "-W", "2", "-t", "10", *extra, "127.0.0.1", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, start_new_session=True)


def stop_cli_factory(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    cancel(submitted_ids(out))
    return out, err


def cancel(ids: list[str]) -> None:
    """Teardown: cancel these jobs of ours, whatever the factory did."""
    if ids:
        subprocess.run(["scancel", *_jobs(ids)], check=False)


@pytest.mark.parametrize("first", ["factory", "manager"])
def test_first_task_within_3_s_whichever_starts_first(tmp_path: Path, free_port: int, first: str) -> None:
    port = free_port
    factory = start_cli_factory(tmp_path, port) if first == "factory" else None
    try:
        if factory is not None:
            time.sleep(2)  # the scenario: the factory looks for a manager that is not there yet
        with Manager(port=port) as m:
            m.submit(Task("echo first", cores=1))
            began = time.monotonic()
            if factory is None:
                time.sleep(2)  # the scenario: a manager waits with a task, then the factory starts
                factory = start_cli_factory(tmp_path, port)
                began = time.monotonic()
            done = m.wait(30)
            took = time.monotonic() - began
            assert done is not None and done.output == b"first\n"
    finally:
        out, err = stop_cli_factory(factory) if factory is not None else ("", "")
    assert took <= 3.0, f"first task {took:.2f} s after the later start ({first} first)\n{out}{err}"


# ------------------------------------------------------------------ shrink
def test_shrink_cancels_pending_elements_only(tmp_path: Path, providers: list[SlurmProvider],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    hold = tmp_path / "hold.sh"
    hold.write_text("#!/bin/sh\nexec sleep 300\n")
    hold.chmod(0o755)
    status = Script(tasks_waiting=3)
    f = slurm_factory(tmp_path, providers, status, batch="--begin=now+3600", cores=1, worker_command=str(hold))
    f.step()
    ids = [j.id for j in f.jobs]
    assert len(ids) == 3 and len(_jobs(ids)) == 1  # one array
    subprocess.run(["scontrol", "update", f"jobid={ids[0]}", "StartTime=now"], check=True)
    wait_for(lambda: f.provider.status(ids[:1])[ids[0]] is JobState.RUNNING, 30, "the oldest element to run")
    f.step()
    status.answer = {"tasks_waiting": 0}
    capsys.readouterr()
    f.step()
    assert capsys.readouterr().out == "factory: cancelled 2 pending workers (target 0)\n"
    assert [j.id for j in f.jobs] == ids[:1]
    wait_for(lambda: queued(ids) == ids[:1], 20, "the pending elements to leave the queue")
    f.step()
    assert queued(ids) == ids[:1]  # the running worker is never cancelled for a lower target


# ------------------------------------------------------------------ crash loop
def test_worker_command_false_gives_the_crash_loop_line_and_backs_off(
        tmp_path: Path, providers: list[SlurmProvider], capsys: pytest.CaptureFixture[str]) -> None:
    status = Script(workers_joined=0)
    f = slurm_factory(tmp_path, providers, status, min_workers=3, worker_command="false", interval=0.5)
    runner = threading.Thread(target=f.run)
    runner.start()
    err = ""
    try:
        def line() -> bool:
            nonlocal err
            err += capsys.readouterr().err
            return "factory: worker jobs exit at once; see " in err
        wait_for(line, 60, "the crash-loop line")
        rounds = status.rounds
        wait_for(lambda: status.rounds >= rounds + 4, 20, "four more rounds")
        assert f.started == 3  # paused: no new workers
    finally:
        f.stop()
        runner.join(60)
    log = err.split(" see ")[1].split(" (")[0]
    assert log.startswith(str(tmp_path / "batch" / "logs")) and os.path.exists(log)
    assert "(no new workers for 30 s)" in err


# ------------------------------------------------------------------ shutdown
def test_shutdown_leaves_nothing_in_squeue_and_no_worker_process(tmp_path: Path, free_port: int) -> None:
    port = free_port
    with Manager(port=port) as m:
        for i in range(4):
            m.submit(Task(f"sleep 60; echo {i}", cores=1))
        factory = start_cli_factory(tmp_path, port)
        try:
            wait_for(lambda: m.stats.workers_connected == 2, 60, "two workers from Slurm")
            assert len(worker_processes(port)) >= 2
        finally:
            out, err = stop_cli_factory(factory)  # SIGTERM, as a user's kill or a scheduler's would
    (array,) = submitted_ids(out)
    assert "factory: stopping, cancelled 2 workers" in out, out + err
    assert queued([f"{array}_0", f"{array}_1"]) == []
    assert worker_processes(port) == []


# ------------------------------------------------------------------ the bundle on a bare node
def one_task_on_a_slurm_worker(tmp_path: Path, providers: list[SlurmProvider], command: str,
                               **worker: str) -> bytes | None:
    """Run ``command`` as one task on the one worker a Slurm factory starts (``worker``: how it starts)."""
    with Manager(port=0) as m:
        m.submit(Task(command, cores=1))
        f = slurm_factory(tmp_path, providers, None, port=m.port, max_workers=1, cores=1, worker_timeout=5,
                          interval=0.5, **worker)
        runner = threading.Thread(target=f.run)
        runner.start()
        try:
            done = m.wait(60)
            return done.output if done is not None else None
        finally:
            f.stop()
            runner.join(60)


def test_the_bundle_runs_under_a_bare_python_from_an_empty_directory(
        tmp_path: Path, providers: list[SlurmProvider]) -> None:
    assert one_task_on_a_slurm_worker(tmp_path, providers, "echo bare",
                                      worker_python="env -i PATH=/usr/bin:/bin python3 -I") == b"bare\n"
    script = (tmp_path / "batch" / "workers" / "worker-1.sh").read_text()
    assert "env -i PATH=/usr/bin:/bin python3 -I worker.pyz" in script
    assert 'cd "$dir"' in script  # a fresh, empty directory on the node


@pytest.mark.reference
def test_the_provider_starts_work_queue_worker_for_a_treadle_manager(
        tmp_path: Path, providers: list[SlurmProvider]) -> None:
    assert one_task_on_a_slurm_worker(tmp_path, providers, "echo reference",
                                      worker_command="work_queue_worker") == b"reference\n"
    assert "worker.pyz" not in (tmp_path / "batch" / "workers" / "worker-1.sh").read_text()


# ------------------------------------------------------------------ the password file
def test_the_password_reaches_the_workers_as_a_private_file(tmp_path: Path, providers: list[SlurmProvider]) -> None:
    secret = tmp_path / "pw.txt"
    secret.write_text("s3cret-for-the-factory\n")
    with Manager(port=0, password_file=str(secret)) as m:
        m.submit(Task("echo locked", cores=1))
        f = slurm_factory(tmp_path, providers, None, port=m.port, max_workers=1, cores=1, worker_timeout=5,
                          password_file=str(secret), interval=0.5)
        runner = threading.Thread(target=f.run)
        runner.start()
        try:
            done = m.wait(60)
            assert done is not None and done.output == b"locked\n"
            (copy,) = (tmp_path / "batch" / "files").iterdir()
            assert copy.stat().st_mode & 0o777 == 0o600
        finally:
            f.stop()
            runner.join(60)
    script = (tmp_path / "batch" / "workers" / "worker-1.sh").read_text()
    assert "s3cret" not in script and str(tmp_path / "batch" / "files") in script
    assert list((tmp_path / "batch" / "files").iterdir()) == []  # close() removed the copy


# ------------------------------------------------------------------ in the run
def test_run_with_a_slurm_factory_inside(tmp_path: Path) -> None:
    (tmp_path / "Makeflow").write_text("".join(f"o{i}:\n\techo {i} > o{i}\n" for i in range(4)))
    done = subprocess.run(
        [sys.executable, "-m", "treadle", "run", "-T", "wq", "-p", "0", "--factory",
         "slurm:max=2,cores=1,timeout=5", "Makeflow"],
        capture_output=True, text=True, cwd=tmp_path, timeout=180)
    logs = tmp_path / "Makeflow.batch" / "factory" / "logs"
    ids = [p.name.removesuffix(".out") for p in logs.iterdir()] if logs.exists() else []
    cancel(ids)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [(tmp_path / f"o{i}").read_text() for i in range(4)] == [f"{i}\n" for i in range(4)]
    assert 1 <= len(ids) <= 2 and queued(ids) == []  # the run cancelled its workers before it ended


def test_the_runs_b_reaches_the_factorys_worker_jobs(tmp_path: Path) -> None:
    """``treadle run -T wq --factory slurm -B ...``: the workers are submitted with the run's -B."""
    (tmp_path / "Makeflow").write_text("o:\n\techo 1 > o\n")
    run = subprocess.Popen(
        [sys.executable, "-m", "treadle", "run", "-T", "wq", "-p", "0", "--factory", "slurm:max=1",
         "-B", "--begin=now+3600", "Makeflow"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    logs = tmp_path / "Makeflow.batch" / "factory"

    def held_back() -> list[str]:
        r = subprocess.run(["squeue", "-h", "-r", "-o", "%i %j %r"], capture_output=True, text=True)
        return [line for line in r.stdout.splitlines()
                if " treadle-workers-" in line and line.endswith("BeginTime")]

    try:
        waiting = wait_for(held_back, timeout=60, what="a worker job held back by the run's -B",
                           interval=0.2)
    finally:
        run.send_signal(signal.SIGTERM)
        out, _ = run.communicate(timeout=60)
    assert len(waiting) == 1, out
    assert logs.is_dir()
    assert wait_for(lambda: not held_back(), timeout=30, what="the run's workers cancelled", interval=0.2)
