"""treadle.batch.local with real processes: each job a process group, observed through waitpid."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests._wait import alive, wait_for

from treadle.batch.base import BatchJob, Observation, State
from treadle.batch.local import LocalSystem
from treadle.errors import BatchError


def job(tmp_path: Path, name: str, body: str, tag: str = "t1", comment: str = "") -> BatchJob:
    script = tmp_path / f"{name}.sh"
    script.write_text(body)
    return BatchJob(tag=tag, script=str(script), workdir=str(tmp_path), log=str(tmp_path / f"{name}.log"),
                    comment=comment or name)


def ended(system: LocalSystem, tag: str, native: str) -> Observation:
    """The job's observation once poll says it ended."""
    def look() -> Observation | None:
        seen = {o.native: o for o in system.poll(tag)}
        return seen[native] if seen[native].state is State.ENDED else None
    return wait_for(look, 20, f"job {native} to end")


def test_a_job_runs_its_script_in_its_own_session_and_its_ending_is_harvested_once(tmp_path: Path) -> None:
    system = LocalSystem()
    (native,) = system.submit([job(tmp_path, "a", 'echo "out $PWD"; echo err >&2; exit 3\n', comment="h7")])
    o = ended(system, "t1", native)
    assert (o.state, o.exit, o.signal, o.label, o.word) == (State.ENDED, 3, None, "h7", "FAILED")
    assert o.start is not None and o.end is not None and o.start <= o.end
    assert (tmp_path / "a.log").read_text() == f"out {tmp_path}\nerr\n"
    assert [h.native for h in system.harvest()] == [native]
    assert system.harvest() == []  # each ending is news once
    assert system.poll("t1") == [o]  # and stays visible to poll, as squeue -t all shows it


def test_a_job_leads_its_own_process_group(tmp_path: Path) -> None:
    system = LocalSystem()
    (native,) = system.submit([job(tmp_path, "g", "sleep 30\n")])
    try:
        pid = int(native)
        assert os.getpgid(pid) == pid and os.getsid(pid) == pid
        assert system.poll("t1")[0].state is State.RUNNING
    finally:
        system.cancel([native])


def test_kill_9_of_a_job_is_observed_ended_with_the_signal(tmp_path: Path) -> None:
    system = LocalSystem()
    (native,) = system.submit([job(tmp_path, "k", "exec sleep 60\n")])
    os.kill(int(native), signal.SIGKILL)
    o = ended(system, "t1", native)
    assert (o.exit, o.signal, o.word) == (None, signal.SIGKILL, "FAILED")


def test_cancel_sends_term_to_the_group_then_kill_to_what_ignores_it(tmp_path: Path) -> None:
    system = LocalSystem(kill_after=0.5)
    polite, stubborn = system.submit([
        job(tmp_path, "polite", "sleep 60 & wait\n"),
        job(tmp_path, "stubborn", "trap '' TERM\necho ready\nwhile :; do sleep 0.1; done\n"),
    ])
    wait_for(lambda: (tmp_path / "stubborn.log").read_text() == "ready\n", 10, "the TERM trap to be set")
    system.cancel([polite, stubborn])
    first = ended(system, "t1", polite)
    second = ended(system, "t1", stubborn)
    assert (first.signal, first.word) == (signal.SIGTERM, "CANCELLED")
    assert (second.signal, second.word) == (signal.SIGKILL, "CANCELLED")
    # the group went with its leader: no sleep of either job is left
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _in_group(int(p), {int(polite), int(stubborn)})]


def _in_group(pid: int, groups: set[int]) -> bool:
    try:
        return alive(pid) and os.getpgid(pid) in groups
    except ProcessLookupError:
        return False


def test_tags_keep_runs_apart_and_cancel_tag_ends_one_run(tmp_path: Path) -> None:
    system = LocalSystem()
    (a,) = system.submit([job(tmp_path, "a", "sleep 60\n", tag="one")])
    (b,) = system.submit([job(tmp_path, "b", "sleep 60\n", tag="two")])
    try:
        assert [o.native for o in system.poll("one")] == [a]
        system.cancel_tag("one")
        assert ended(system, "one", a).word == "CANCELLED"
        assert system.poll("two")[0].state is State.RUNNING
    finally:
        system.cancel_tag("two")
    assert ended(system, "two", b).signal == signal.SIGTERM


def test_final_knows_its_jobs_and_calls_the_others_gone(tmp_path: Path) -> None:
    system = LocalSystem()
    (native,) = system.submit([job(tmp_path, "f", "exit 0\n")])
    ended(system, "t1", native)
    done, unknown = system.final([native, "999999999"])
    assert (done.state, done.exit, done.word) == (State.ENDED, 0, "COMPLETED")
    assert done.usage.keys() == {"cpu", "rss"}
    assert (unknown.native, unknown.state) == ("999999999", State.GONE)


def test_a_job_that_cannot_start_is_refused_for_good_and_the_others_run(tmp_path: Path) -> None:
    system = LocalSystem()
    good = job(tmp_path, "ok", "exit 0\n")
    bad = BatchJob(tag="t1", script=good.script, workdir=str(tmp_path / "missing"))
    refused, started = system.submit([bad, good])
    assert isinstance(refused, BatchError) and refused.kind == "permanent"
    assert "missing" in str(refused) or "No such file" in str(refused)
    assert isinstance(started, str) and ended(system, "t1", started).exit == 0
