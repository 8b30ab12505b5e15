"""SlurmSystem against the real one-node test cluster (ci/slurm-up.sh).

Each test names its jobs with a tag of its own and cancels them in teardown,
since other test runs share the cluster; nothing assumes an empty queue.
Jobs that must stay queued are held back with ``--begin=now+3600``.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests._wait import wait_for

from treadle.batch.base import BatchJob, Observation, Request, State
from treadle.batch.slurm import SlurmSettings, SlurmSystem, render_job_script
from treadle.errors import BatchError

# Until the suite-wide slurm_cluster fixture exists: skip where there is no Slurm client.
pytestmark = pytest.mark.slurm  # brings the test cluster (tests/conftest.py), or skips with the reason

LATER = ("--begin=now+3600",)


@pytest.fixture
def tag() -> Iterator[str]:
    tag = uuid.uuid4().hex[:8]
    yield tag
    subprocess.run(["scancel", "--me", "-n", f"treadle-{tag}"], check=False, timeout=60)


class Run:
    """A batch directory with job scripts made the way the engine makes them."""

    def __init__(self, root: Path, tag: str, settings: SlurmSettings = SlurmSettings()) -> None:
        self.root = root
        self.tag = tag
        self.system = SlurmSystem(str(root / "batch"), settings=settings)

    def job(self, handle: int, command: str, *, request: Request = Request(),
            options: tuple[str, ...] = ()) -> BatchJob:
        script = self.root / "batch" / "jobs" / f"{handle}.sh"
        script.write_text(render_job_script(
            workdir=str(self.root), command=command, environment={}, handle=str(handle),
            rule=f"Makeflow:{handle}", attempt=1, cores=request.cores, stdout=f"{handle}.out",
            stderr=f"{handle}.err"))
        return BatchJob(tag=self.tag, script=str(script), workdir=str(self.root), request=request,
                        options=options, comment=str(handle))

    def states(self) -> dict[str, Observation]:
        return {o.native: o for o in self.system.poll(self.tag)}

    def states_once(self, native: str, state: State) -> dict[str, Observation]:
        """The run's jobs once job ``native`` is listed in ``state``, else nothing (for wait_for)."""
        states = self.states()
        return states if native in states and states[native].state is state else {}


@pytest.fixture
def run(tmp_path: Path, tag: str) -> Run:
    return Run(tmp_path, tag)


def test_a_plain_job_and_an_array_end_and_are_harvested_exactly_once(run: Run) -> None:
    plain = run.job(1, "echo one; exit 3", request=Request(cores=2))
    array = [run.job(h, f"echo {h}", request=Request(cores=1)) for h in range(2, 7)]
    ids = run.system.submit([plain, *array])
    assert isinstance(ids[0], str) and ids[0].isdigit()
    base = ids[1].split("_")[0] if isinstance(ids[1], str) else ""
    assert ids[1:] == [f"{base}_{i}" for i in range(5)]
    assert run.system.commands["sbatch"] == 2

    harvested: list[Observation] = []

    def all_ended() -> bool:
        harvested.extend(run.system.harvest())
        return len(harvested) >= 6

    wait_for(all_ended, timeout=60, what="six status files")
    assert run.system.harvest() == []  # each file is read once
    by_label = {o.label: o for o in harvested}
    assert sorted(by_label, key=int) == [str(h) for h in range(1, 7)]
    assert (by_label["1"].native, by_label["1"].exit, by_label["1"].state) == (ids[0], 3, State.ENDED)
    assert [by_label[str(h)].native for h in range(2, 7)] == ids[1:]
    assert all(by_label[str(h)].exit == 0 and by_label[str(h)].host for h in range(2, 7))
    assert (run.root / "1.out").read_text() == "one\n"
    assert (run.root / "6.out").read_text() == "6\n"
    assert (run.root / "batch" / "jobs" / "c1" / "map").read_text() == "".join(
        f"{i} {i + 2}\n" for i in range(5))
    assert sorted(p.name for p in (run.root / "batch" / "status" / "seen").iterdir()) == sorted(
        f"{h}.{native}.json" for h, native in zip(range(1, 7), ids, strict=True))


def test_poll_sees_pending_running_and_ended_jobs(run: Run) -> None:
    started = run.root / "started"
    pending, running = run.system.submit([
        run.job(1, "true", options=LATER),
        run.job(2, f"touch {started}; sleep 60", request=Request(cores=1)),
    ])
    assert isinstance(pending, str) and isinstance(running, str)
    states = wait_for(lambda: run.states_once(running, State.RUNNING), timeout=30,
                      what="job 2 running")
    assert (states[pending].state, states[pending].word, states[pending].reason,
            states[pending].label) == (State.PENDING, "PENDING", "BeginTime", "1")
    assert (states[running].word, states[running].host, states[running].label) == (
        "RUNNING", "vm", "2")
    run.system.cancel([running])
    states = wait_for(lambda: run.states_once(running, State.ENDED), timeout=30,
                      what="job 2 cancelled")
    assert states[running].word == "CANCELLED"
    assert run.system.commands["squeue"] >= 2


def test_cancel_one_array_element_leaves_the_others(run: Run) -> None:
    ids = run.system.submit([run.job(h, "true", options=LATER) for h in range(3)])
    assert all(isinstance(i, str) for i in ids)
    run.system.cancel([str(ids[1])])
    assert run.system.commands["scancel"] == 1

    def element_gone() -> dict[str, Observation]:
        states = run.states()
        left = states.get(str(ids[1]))
        return states if left is None or left.state is State.ENDED else {}

    states = wait_for(element_gone, timeout=30, what="element 1 cancelled")
    assert states[str(ids[0])].state is State.PENDING
    assert states[str(ids[2])].state is State.PENDING


def test_cancel_tag_ends_every_job_of_the_run(run: Run) -> None:
    run.system.submit([run.job(1, "true", options=LATER), run.job(2, "true", options=LATER),
                       run.job(3, "true", options=LATER, request=Request(cores=2))])
    assert {o.state for o in run.states().values()} == {State.PENDING}
    run.system.cancel_tag(run.tag)
    wait_for(lambda: all(o.state is State.ENDED for o in run.states().values()), timeout=30,
             what="every job of the run cancelled")


def test_without_accounting_final_asks_nothing_and_says_nothing(run: Run) -> None:
    assert not run.system.config.accounting  # the test cluster keeps none
    assert run.system.final(["1", "2_3"]) == []
    assert run.system.commands["sacct"] == 0


def test_a_refused_group_fails_alone_and_the_others_go(run: Run) -> None:
    good = run.job(1, "true", options=LATER)
    bad = [run.job(2, "true", options=("--partition=nope",)),
           run.job(3, "true", options=("--partition=nope",))]
    outcomes = run.system.submit([bad[0], good, bad[1]])
    assert isinstance(outcomes[1], str) and outcomes[1].isdigit()
    for refused in (outcomes[0], outcomes[2]):
        assert isinstance(refused, BatchError)
        assert refused.kind == "permanent"
        assert "Invalid partition name specified" in str(refused)
        assert refused.command[0] == "sbatch" and "--partition=nope" in refused.command
    assert run.states()[outcomes[1]].state is State.PENDING


def test_options_treadle_owns_fail_the_job_before_any_command(run: Run) -> None:
    (refused,) = run.system.submit([run.job(1, "true", options=("-J", "mine"))])
    assert isinstance(refused, BatchError) and refused.kind == "permanent"
    assert "'-J'" in str(refused)
    assert run.system.commands["sbatch"] == 0


def test_without_the_wrapper_a_script_is_submitted_itself_as_an_array(tmp_path: Path,
                                                                       tag: str) -> None:
    script = tmp_path / "worker.sh"
    script.write_text(f"#!/bin/sh\necho element > {tmp_path}/out.$SLURM_ARRAY_TASK_ID\n")
    system = SlurmSystem(None, wrapper=False)
    job = BatchJob(tag=tag, script=str(script), workdir=str(tmp_path), log=str(tmp_path / "%A_%a.log"),
                   comment="workers")
    ids = system.submit([job] * 3)
    base = str(ids[0]).split("_")[0]
    assert ids == [f"{base}_{i}" for i in range(3)]
    assert system.commands["sbatch"] == 1
    for i in range(3):
        wait_for((tmp_path / f"out.{i}").exists, timeout=60, what=f"element {i}'s output")
    assert system.harvest() == []
    def ended() -> list[Observation]:
        seen = system.poll(tag)
        return seen if len(seen) == 3 and all(o.state is State.ENDED for o in seen) else []

    assert {o.label for o in wait_for(ended, timeout=30, what="the array ended")} == {"workers"}


@pytest.mark.parametrize(("array", "calls"), [("auto", 1), ("5", 3), ("off", 12)])
def test_twelve_jobs_of_one_shape_take_one_sbatch_call_per_chunk(tmp_path: Path, tag: str,
                                                                 array: str, calls: int) -> None:
    run = Run(tmp_path, tag, SlurmSettings(array=array))
    ids = run.system.submit([run.job(h, "true", options=LATER) for h in range(12)])
    assert all(isinstance(i, str) for i in ids) and len(set(ids)) == 12
    assert run.system.commands["sbatch"] == calls
    assert len(run.states()) == 12
