"""The factory's rounds with real local worker jobs and a scripted manager status.

The status callable plays the manager (its answers are the test's script) and a
settable clock stands in for time, so each round is one ``step()``; the jobs
are real process groups (treadle.batch.local), whose ends are real.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests._wait import alive, wait_for

from treadle.errors import UsageError
from treadle.queue.factory import FACTORY_KEYS, Factory, FactoryConfig, parse_factory_option
from treadle.queue.providers.base import JobState, WorkerSpec
from treadle.queue.providers.local import LocalProvider


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Script:
    """The manager's answers: ``answer`` is returned, or raised when it is an exception."""

    def __init__(self, **answer: Any) -> None:
        self.answer: dict[str, Any] | OSError = dict(answer)
        self.rounds = 0

    def __call__(self) -> dict[str, Any]:
        self.rounds += 1
        if isinstance(self.answer, OSError):
            raise self.answer
        return dict(self.answer)


class CountingProvider(LocalProvider):
    """The local provider, counting its submissions (the factory must make one per round)."""

    def __init__(self, batch_dir: str) -> None:
        super().__init__(batch_dir)
        self.submissions: list[int] = []
        self.closed = False

    def submit(self, spec: WorkerSpec, count: int) -> list[str]:
        self.submissions.append(count)
        return super().submit(spec, count)

    def close(self) -> None:
        self.closed = True
        super().close()


@pytest.fixture
def hold(tmp_path: Path) -> str:
    """A worker command that stays up, whatever it is told."""
    path = tmp_path / "hold.sh"
    path.write_text("#!/bin/sh\nexec sleep 300\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def made(tmp_path: Path) -> Iterable[list[Factory]]:
    """Factories a test made; their jobs are cancelled at teardown."""
    factories: list[Factory] = []
    yield factories
    for f in factories:
        f.provider.close()


def factory(tmp_path: Path, made: list[Factory], status: Script, clock: Callable[[], float] | None = None,
            **config: Any) -> Factory:
    config.setdefault("interval", 5.0)
    f = Factory(FactoryConfig("127.0.0.1", 9, **config), CountingProvider(str(tmp_path / "batch")),
                status=status, clock=clock or Clock())
    made.append(f)
    return f


def states(f: Factory) -> dict[str, JobState]:
    return f.provider.status([j.id for j in f.jobs])


def test_grow_is_one_submission_per_round_of_at_most_workers_per_cycle(
        tmp_path: Path, made: list[Factory], hold: str, capsys: pytest.CaptureFixture[str]) -> None:
    f = factory(tmp_path, made, Script(tasks_waiting=25), max_workers=30, cores=1, worker_command=hold)
    for _ in range(4):
        f.step()
    assert f.provider.submissions == [10, 10, 5]
    assert len(f.jobs) == 25 and f.started == 25
    assert set(states(f).values()) == {JobState.RUNNING}
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("factory: submitted 10 workers as ") and lines[0].endswith(" (10/25)")
    assert lines[2].startswith("factory: submitted 5 workers as ") and lines[2].endswith(" (25/25)")


def test_tasks_per_worker_sets_the_target(tmp_path: Path, made: list[Factory]) -> None:
    f = factory(tmp_path, made, Script(), max_workers=50, cores=4, tasks_per_worker=2)
    assert f.target({"tasks_waiting": 7, "tasks_on_workers": 2}) == 5
    f.config.tasks_per_worker = None
    assert f.target({"tasks_waiting": 7, "tasks_on_workers": 2}) == 3  # the cores, as before


def test_running_workers_stay_when_demand_drops_and_the_newest_go_above_the_maximum(
        tmp_path: Path, made: list[Factory], hold: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = Script(tasks_waiting=6)
    f = factory(tmp_path, made, status, max_workers=10, cores=1, worker_command=hold)
    f.step()
    ids = [j.id for j in f.jobs]
    status.answer = {"tasks_waiting": 0}
    f.step()
    assert [j.id for j in f.jobs] == ids  # running workers hold work: they leave when idle
    assert set(states(f).values()) == {JobState.RUNNING}
    f.config.max_workers = 4
    capsys.readouterr()
    f.step()
    assert [j.id for j in f.jobs] == ids[:4]
    assert capsys.readouterr().out == "factory: cancelled 2 workers above the maximum (4)\n"
    wait_for(lambda: not any(alive(int(i)) for i in ids[4:]), 20, "the two newest workers to end")
    assert all(alive(int(i)) for i in ids[:4])


def test_three_quick_exits_pause_submission_with_one_loud_line(
        tmp_path: Path, made: list[Factory], capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    f = factory(tmp_path, made, Script(workers_joined=0), clock, min_workers=3, worker_command="false")

    def crash_round() -> str:
        f.step()  # submits three workers that exit at once
        wait_for(lambda: set(states(f).values()) == {JobState.FAILED}, 20, "the workers to fail")
        last = f.jobs[-1].id
        clock.now += 1
        f.step()  # sees them gone
        err = capsys.readouterr().err
        assert err.startswith("factory: worker jobs exit at once; see ")
        assert f"see {f.provider.log_path(last)} " in err
        return err

    assert crash_round().endswith("(no new workers for 30 s)\n")
    submitted = f.started
    clock.now += 29
    f.step()
    assert f.started == submitted and f.jobs == []  # paused
    clock.now += 2
    assert crash_round().endswith("(no new workers for 60 s)\n")  # the pause over: three more quick exits
    clock.now += 59
    f.step()
    assert f.started == submitted + 3  # the second pause is twice as long
    clock.now += 2
    f.step()
    assert f.started == submitted + 6


def test_workers_that_joined_the_manager_are_no_crash_loop(
        tmp_path: Path, made: list[Factory], capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    status = Script(workers_joined=0)
    f = factory(tmp_path, made, status, clock, min_workers=3, worker_command="true")
    for joined in (3, 6):
        f.step()
        wait_for(lambda: set(states(f).values()) == {JobState.DONE}, 20, "the workers to end")
        status.answer = {"workers_joined": joined}  # they connected before they left
        clock.now += 1
    f.step()
    assert f.provider.submissions == [3, 3, 3]
    assert "exit at once" not in capsys.readouterr().err


def test_the_period_is_short_while_the_manager_is_away_or_its_answer_changes(
        tmp_path: Path, made: list[Factory], capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    status = Script()
    status.answer = ConnectionRefusedError(111, "Connection refused")
    f = factory(tmp_path, made, status, clock, interval=5.0)
    periods = []
    for _ in range(3):
        f.step()
        periods.append(f.period)
        clock.now += 30
    assert periods == [0.5, 0.5, 5.0]  # a minute of quick looks, then the interval
    assert capsys.readouterr().err.count("cannot reach manager 127.0.0.1:9") == 1
    status.answer = {"tasks_waiting": 0}
    periods = []
    for waiting in (0, 0, 0, 0, 0, 3, 3):
        status.answer = {"tasks_waiting": waiting}
        f.step()
        periods.append(f.period)
    assert periods == [0.5, 1.0, 2.0, 4.0, 5.0, 0.5, 1.0]
    assert "answers" in capsys.readouterr().err


def test_wake_starts_a_round_at_once(tmp_path: Path, made: list[Factory]) -> None:
    status = Script(tasks_waiting=0)
    f = factory(tmp_path, made, status, time.monotonic, interval=30.0)
    runner = threading.Thread(target=f.run)
    runner.start()
    try:
        wait_for(lambda: f.period >= 2.0, 20, "the period to grow")
        seen = status.rounds
        began = time.monotonic()
        f.wake()
        wait_for(lambda: status.rounds > seen, 5, "a round after wake()")
        assert time.monotonic() - began < 1.0
    finally:
        f.stop()
        runner.join(30)
    assert not runner.is_alive()


def test_stop_cancels_every_job_and_waits_until_they_are_gone(
        tmp_path: Path, made: list[Factory], hold: str, capsys: pytest.CaptureFixture[str]) -> None:
    f = factory(tmp_path, made, Script(tasks_waiting=3), time.monotonic, cores=1, worker_command=hold,
                interval=0.2)
    runner = threading.Thread(target=f.run)
    runner.start()
    try:
        wait_for(lambda: len(f.jobs) == 3, 20, "three workers")
        pids = [int(j.id) for j in f.jobs]
    finally:
        f.stop()
        runner.join(40)
    assert not runner.is_alive()
    assert not any(alive(pid) for pid in pids)  # gone before run() returned
    assert f.provider.closed
    assert "factory: stopping, cancelled 3 workers" in capsys.readouterr().out


# ------------------------------------------------------------------ --factory
def test_factory_option_examples() -> None:
    assert parse_factory_option("slurm:max=20,cores=4,memory=8000,timeout=60") == (
        "slurm", {"max_workers": 20, "cores": 4, "memory": 8000, "worker_timeout": 60.0})
    assert parse_factory_option("local") == ("local", {})
    assert parse_factory_option("condor: min=1 , loopback,python=/opt/py/bin/python3") == (
        "condor", {"min_workers": 1, "allow_loopback": True, "worker_python": "/opt/py/bin/python3"})


@pytest.mark.parametrize(("text", "words"), [
    ("pbs:max=2", "must be one of local, slurm, condor"),
    ("slurm:max", "'max' is not KEY=VALUE"),
    ("slurm:size=3", "'size=3' is not KEY=VALUE"),
    ("slurm:cores=four", "cores wants a number, not 'four'"),
    ("slurm:max=-1", "max cannot be negative"),
])
def test_factory_option_mistakes_are_named(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        parse_factory_option(text)


NUMBERS = {key: field for key, (field, kind) in FACTORY_KEYS.items() if kind is int}


@given(st.sampled_from(["local", "slurm", "condor"]),
       st.dictionaries(st.sampled_from(sorted(NUMBERS)), st.integers(0, 10**6)))
def test_factory_option_reads_back_what_was_written(kind: str, values: dict[str, int]) -> None:
    text = kind + ":" + ",".join(f"{k}={v}" for k, v in values.items())
    assert parse_factory_option(text) == (kind, {NUMBERS[k]: v for k, v in values.items()})
    config = FactoryConfig("h", 1, **{NUMBERS[k]: v for k, v in values.items() if NUMBERS[k] != "min_workers"})
    assert config.max_workers == values.get("max", 10)


# ------------------------------------------------------------------ the command line
def factory_command(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "treadle", "factory", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def test_help_shows_every_option_and_an_example(tmp_path: Path) -> None:
    out = factory_command("--help", cwd=tmp_path).stdout
    for option in ("-T", "-M", "--catalog", "--min-workers", "--max-workers", "--workers-per-cycle",
                   "--tasks-per-worker", "--cores", "--memory", "--disk", "--gpus", "--wall-time",
                   "--timeout", "--interval", "--batch-options", "--password", "--worker-command",
                   "--worker-python", "--batch-dir", "--manager-host", "--allow-loopback"):
        assert option in out, option
    assert "treadle factory -T slurm" in out


@pytest.mark.parametrize(("args", "words"), [
    (("-T", "pbs", "h", "9123"), "'pbs' is not one of"),
    (("--workers-per-cycle", "0", "h", "9123"), "--workers-per-cycle"),
    (("h", "99999"), "bad manager address"),
    (("-M", "proj"), "-M NAME needs --catalog"),
    (("-M", "proj", "--catalog", "c:1", "h", "9123"), "either -M NAME or HOST PORT"),
    (("-w", "5", "-W", "2", "h", "9123"), "--min-workers is larger than --max-workers"),
    (("-B", "--partition=x", "h", "9123"), "-T local workers take no submit options"),
    (("-T", "slurm", "-B", "--job-name=x", "h", "9123"), "--job-name"),
])
def test_bad_values_are_one_line_and_status_1(tmp_path: Path, args: tuple[str, ...], words: str) -> None:
    done = factory_command(*args, cwd=tmp_path)
    assert done.returncode == 1 and words in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert os.listdir(tmp_path) == []  # nothing made, nothing submitted


@pytest.mark.slow
def test_worker_command_false_gives_the_crash_loop_line(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "treadle", "factory", "-T", "local", "-w", "3", "--interval", "0.2",
         "--worker-command", "false", "--batch-dir", str(tmp_path / "batch"), "127.0.0.1", "9"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = wait_for(lambda: _line_with(proc, "exit at once"), 30, "the crash-loop line")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=40)
    log = line.split(" see ")[1].split(" (")[0]
    assert os.path.dirname(log) == str(tmp_path / "batch" / "logs")
    assert out.count("factory: submitted 3 workers") == 1  # paused after the first three


def _line_with(proc: subprocess.Popen[str], words: str) -> str | None:
    assert proc.stderr is not None
    line = proc.stderr.readline()
    return line if words in line else None
