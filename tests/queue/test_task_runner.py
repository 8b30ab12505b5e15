"""A TaskRunner's states, driven by real processes in a real workspace.

The host here stands in for the worker's connection (it records what the runner
asks of it); the runner, its processes and its files are the real ones. Whatever
the order of a task's end, a limit and a kill, the runner ends REPORTED or
DISCARDED, frees its resources exactly once, and leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests._wait import wait_for

from treadle.queue import protocol as p
from treadle.queue import sandbox as sb
from treadle.queue.task_runner import (
    INPUT_MISSING,
    SIGNAL,
    SUCCESS,
    TASK_MAX_RUN_TIME,
    Finished,
    State,
    TaskRunner,
)

ALLOC = {"cores": 1, "memory": 0, "disk": 0, "gpus": 0}


class RecordingHost:
    """The runner's Host: a real workspace, and a record of every call."""

    def __init__(self, parent: Path) -> None:
        self.ws = sb.Workspace(str(parent))
        self.ws.create()
        self.base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self.use_symlinks = True
        self.connected = True
        self.released: list = []  # the runner's state when it freed its resources
        self.finished: list[Finished] = []
        self.discarded: list[int] = []
        self.guarded: list[int] = []
        self.starts = 0

    @contextlib.contextmanager
    def inside(self, directory: str) -> Iterator[None]:
        home = os.getcwd()
        os.chdir(directory)
        try:
            yield
        finally:
            os.chdir(home)

    def guard(self, pgid: int) -> None:
        self.guarded.append(pgid)

    def unguard(self, pgid: int) -> None:
        pass

    def release(self, runner: TaskRunner) -> None:
        self.released.append(runner.state)

    def finish(self, done: Finished) -> None:
        self.finished.append(done)

    def discard(self, task_id: int) -> None:
        self.discarded.append(task_id)

    def notice_start(self) -> None:
        self.starts += 1


@pytest.fixture
def host(tmp_path: Path) -> Iterator[RecordingHost]:
    h = RecordingHost(tmp_path)
    yield h
    h.ws.destroy()


def runner_for(host: RecordingHost, command: str, **task: object) -> TaskRunner:
    return TaskRunner(p.Task(1, command, **task), dict(ALLOC), [], host)


def group_gone(pgid: int) -> bool:
    """Whether process group ``pgid`` is empty (polled: a killed child is reaped soon, not at once)."""

    def gone() -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        return False

    return wait_for(gone, timeout=10, what=f"process group {pgid} gone")


async def until_running(runner: TaskRunner) -> None:
    for _ in range(1000):
        if runner.state is State.RUNNING:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"the task never ran: {runner.state}")


def test_a_task_that_exits_is_reported_with_its_exit_code_and_its_output(host):
    runner = runner_for(host, "sh -c 'echo hello; exit 3'")
    asyncio.run(runner.run())
    assert runner.state is State.REPORTED
    assert host.released == [State.DONE]
    [done] = host.finished
    assert (done.task_id, done.status, done.exit_code) == (1, SUCCESS, 3)
    assert Path(done.stdout).read_text() == "hello\n"
    assert host.starts == 1 and host.discarded == []


def test_a_killed_task_is_discarded_its_group_dies_and_no_result_is_sent(host):
    runner = runner_for(host, "sleep 30")

    async def scenario() -> None:
        run = asyncio.ensure_future(runner.run())
        await until_running(runner)
        assert runner.counted
        runner.kill()
        assert not runner.counted  # the manager no longer counts it while it dies
        await asyncio.wait_for(run, 10)

    asyncio.run(scenario())
    assert runner.state is State.DISCARDED
    assert host.released == [State.DISCARDED] and host.discarded == [1]
    assert host.finished == []
    assert group_gone(runner.pid)


def test_a_task_over_its_wall_time_is_reported_with_that_limit(host):
    runner = runner_for(host, "sleep 30", wall_time=0.1)
    asyncio.run(asyncio.wait_for(runner.run(), 10))
    assert runner.state is State.REPORTED
    [done] = host.finished
    assert (done.status, done.exit_code) == (TASK_MAX_RUN_TIME, 9)
    assert group_gone(runner.pid)


def test_a_task_that_cannot_start_fails_with_the_reason_as_its_output(host):
    runner = runner_for(host, "echo \x00")  # a NUL byte: no exec can take it
    asyncio.run(runner.run())
    assert runner.state is State.REPORTED
    assert host.released == [State.FAILED]
    [done] = host.finished
    assert (done.status, done.exit_code) == (INPUT_MISSING, 1)
    assert "cannot start the task" in Path(done.stdout).read_text()


def test_a_task_killed_before_it_starts_never_starts(host):
    """The old worker started a task killed while its sandbox was made, then killed it."""
    runner = runner_for(host, "sleep 30")
    runner.kill()
    asyncio.run(runner.run())
    assert runner.state is State.DISCARDED
    assert runner.pid == 0 and host.guarded == [] and host.starts == 0
    assert host.released == [State.DISCARDED] and host.finished == []


def test_a_kill_after_the_result_changes_nothing(host):
    runner = runner_for(host, "true")
    asyncio.run(runner.run())
    runner.kill()
    assert runner.state is State.REPORTED and host.discarded == []
    assert len(host.finished) == 1 and host.released == [State.DONE]


def test_a_signal_death_is_reported_as_the_shell_reports_it(host):
    runner = runner_for(host, "sh -c 'kill -9 $$'")
    asyncio.run(runner.run())
    [done] = host.finished
    # the stand-in shell outlives the program and says 128+9, or dies with it like bash
    assert (done.status, done.exit_code) in ((SUCCESS, 137), (SIGNAL, 9))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(["true", "sleep 0.05", "sh -c 'exit 4'", "sh -c 'kill -9 $$'",
                                "sleep 30"]),
       kill_after=st.none() | st.floats(0, 0.1),
       wall_time=st.none() | st.floats(0.01, 0.1))
def test_every_order_of_end_limit_and_kill_ends_once(host, command, kill_after, wall_time):
    host.released.clear()
    host.finished.clear()
    host.discarded.clear()
    if kill_after is None and wall_time is None and command == "sleep 30":
        wall_time = 0.05  # something must end it
    runner = runner_for(host, command, wall_time=wall_time)

    async def scenario() -> None:
        run = asyncio.ensure_future(runner.run())
        if kill_after is not None:
            await asyncio.sleep(kill_after)
            runner.kill()
        await asyncio.wait_for(run, 10)

    asyncio.run(scenario())
    assert runner.state in (State.REPORTED, State.DISCARDED)
    assert len(host.released) == 1  # resources freed exactly once
    if runner.state is State.REPORTED:
        assert len(host.finished) == 1 and host.discarded == []
    else:
        assert host.finished == [] and host.discarded == [1]
    assert runner.pid == 0 or group_gone(runner.pid)
