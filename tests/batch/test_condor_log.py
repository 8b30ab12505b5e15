"""The user-log parser against HTCondor's own reader (htcondor2.JobEventLog) on the same bytes.

Logs are synthesized in the text HTCondor writes for each event (no pool runs
here, docs/batch.md); both readers must agree on types, job ids, times, return
values, signals, hold codes and reasons, for hand-picked events, for
hypothesis-generated sequences, and for logs read while an event is cut off.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from treadle.batch import condor_log
from treadle.batch.base import State
from treadle.batch.condor import CondorSystem, observation

htcondor2 = pytest.importorskip("htcondor2")

YEAR = time.localtime().tm_year


@dataclass(frozen=True)
class Spec:
    """One event to write: its number, job, time, and what its body says."""

    code: int
    cluster: int = 17
    proc: int = 0
    when: tuple[int, int, int, int, int] = (3, 14, 15, 9, 26)  # month, day, hour, minute, second
    iso: bool = True
    value: int = 0  # return value (005 normal), signal (005 abnormal), hold code (012)
    subcode: int = 0
    normal: bool = True
    reason: str = "because"
    cpu: tuple[int, int] = (3, 1)  # remote user and system seconds
    memory: int = 7


def _usage(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    return f"{days} {rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


def _rusage(usr: int, sys: int, label: str) -> str:
    return f"\t\tUsr {_usage(usr)}, Sys {_usage(sys)}  -  {label}\n"


def render(e: Spec) -> str:
    """The event as HTCondor writes it to a user log."""
    month, day, hour, minute, second = e.when
    date = f"{YEAR:04d}-{month:02d}-{day:02d}" if e.iso else f"{month:02d}/{day:02d}"
    head = f"{e.code:03d} ({e.cluster:03d}.{e.proc:03d}.000) {date} {hour:02d}:{minute:02d}:{second:02d} "
    body = {
        0: "Job submitted from host: <10.0.0.1:9618?addrs=10.0.0.1-9618&sock=schedd_1>\n",
        1: "Job executing on host: <10.0.0.9:9618?addrs=10.0.0.9-9618&sock=startd_2>\n"
           "\tSlotName: slot1_1@node9.example.org\n",
        4: "Job was evicted.\n\t(0) CPU times\n" + _rusage(*e.cpu, "Run Remote Usage")
           + _rusage(0, 0, "Run Local Usage") + "\t0  -  Run Bytes Sent By Job\n"
           + "\t0  -  Run Bytes Received By Job\n" + f"\tReason: {e.reason}\n",
        6: f"Image size of job updated: 260\n\t{e.memory}  -  MemoryUsage of job (MB)\n"
           "\t252  -  ResidentSetSize of job (KB)\n",
        7: f"Shadow exception!\n\t{e.reason}\n\t0  -  Run Bytes Sent By Job\n\t0  -  Run Bytes Received By Job\n",
        9: f"Job was aborted.\n\t{e.reason}\n",
        12: f"Job was held.\n\t{e.reason}\n\tCode {e.value} Subcode {e.subcode}\n",
        13: f"Job was released.\n\t{e.reason}\n",
        22: f"Job disconnected, attempting to reconnect\n    {e.reason}\n"
            "    Trying to reconnect to slot1@node9 <10.0.0.9:9618>\n",
        24: f"Job reconnection failed\n    {e.reason}\n    Can not reconnect to slot1@node9, rescheduling job\n",
    }
    if e.code == 5:
        if e.normal:
            how = f"\t(1) Normal termination (return value {e.value})\n"
        else:
            how = f"\t(0) Abnormal termination (signal {e.value})\n\t(0) No core file\n"
        text = ("Job terminated.\n" + how + _rusage(*e.cpu, "Run Remote Usage")
                + _rusage(0, 0, "Run Local Usage") + _rusage(*e.cpu, "Total Remote Usage")
                + _rusage(0, 0, "Total Local Usage")
                + "\t1254  -  Run Bytes Sent By Job\n\t283  -  Run Bytes Received By Job\n"
                + "\t1254  -  Total Bytes Sent By Job\n\t283  -  Total Bytes Received By Job\n"
                + "\tPartitionable Resources :    Usage  Request Allocated\n"
                + "\t   Cpus                 :                 1         1\n"
                + "\t   Disk (KB)            :       18        1   7330524\n"
                + f"\t   Memory (MB)          : {e.memory:>8}        1      7770\n")
    else:
        text = body[e.code]
    return head + text + "...\n"


def _seconds(usage: str) -> float:
    """CPU seconds of the bindings' ``Usr d hh:mm:ss, Sys d hh:mm:ss`` string."""
    total = 0
    for part in usage.split(", "):
        _, days, clock = part.split()
        h, m, s = (int(x) for x in clock.split(":"))
        total += ((int(days) * 24 + h) * 60 + m) * 60 + s
    return float(total)


def assert_same(ours: condor_log.Event, theirs: Any) -> None:
    """Our event and the bindings' JobEvent say the same about the job."""
    ad = dict(theirs.items())
    assert ours.code == int(theirs.type)
    assert (ours.cluster, ours.proc) == (theirs.cluster, theirs.proc)
    assert ours.time == theirs.timestamp
    if ours.code == condor_log.SUBMIT:
        assert ours.host == ad["SubmitHost"]
    if ours.code == condor_log.EXECUTE:
        assert ours.host == ad["ExecuteHost"]
    if ours.code == condor_log.TERMINATED:
        assert ours.exit == ad.get("ReturnValue")
        assert ours.signal == ad.get("TerminatedBySignal")
        assert (ours.exit is not None) == ad["TerminatedNormally"]
        assert ours.usage["cpu"] == _seconds(ad["RunRemoteUsage"])
        assert ours.usage["memory"] == ad["MemoryUsage"]
    if ours.code == condor_log.HELD:
        assert (ours.hold_code, ours.hold_subcode) == (ad["HoldReasonCode"], ad["HoldReasonSubCode"])
        assert ours.reason == ad.get("HoldReason", "")
    if ours.code in (condor_log.ABORTED, condor_log.RELEASED, condor_log.EVICTED, condor_log.RECONNECT_FAILED):
        assert ours.reason == ad.get("Reason", "")
    if ours.code == condor_log.SHADOW_EXCEPTION:
        assert ours.reason == ad["Message"]
    if ours.code == condor_log.DISCONNECTED:
        assert ours.reason == ad["DisconnectReason"]


def both_readers(path: Path) -> tuple[list[condor_log.Event], list[Any]]:
    ours = condor_log.UserLogTail(path).read()
    theirs = list(htcondor2.JobEventLog(str(path)).events(0))
    return ours, theirs


EVERY_EVENT = [
    Spec(0), Spec(1), Spec(6, memory=3), Spec(4, reason="Job was vacated by the startd"),
    Spec(1, when=(3, 14, 15, 30, 0)), Spec(7, reason="Error from slot1@node9: starter lost"),
    Spec(22, reason="Socket between submit and execute hosts closed unexpectedly"),
    Spec(24, reason="Job disconnected too long: JobLeaseDuration (2400 seconds) expired"),
    Spec(12, value=12, subcode=2, reason="Error from slot1@node9: Transfer input files failure: no such file"),
    Spec(13, reason="via condor_release (by user alice)"),
    Spec(12, value=3, subcode=42, reason="treadle: WALL_TIME exceeded"),
    Spec(5, value=3, cpu=(3700, 90061), memory=1500),
    Spec(5, proc=1, normal=False, value=9),
    Spec(9, proc=2, reason="via condor_rm (by user alice)"),
    Spec(5, proc=3, value=0, iso=False, when=(12, 31, 23, 59, 59)),
    Spec(0, cluster=18, iso=False, when=(1, 1, 0, 0, 0)),
]


def test_every_event_the_tracker_uses_reads_as_htcondor_reads_it(tmp_path: Path) -> None:
    log = tmp_path / "run.condorlog"
    log.write_text("".join(render(e) for e in EVERY_EVENT))
    ours, theirs = both_readers(log)
    assert len(ours) == len(theirs) == len(EVERY_EVENT)
    for a, b in zip(ours, theirs, strict=True):
        assert_same(a, b)


def test_both_date_forms_give_the_same_local_time(tmp_path: Path) -> None:
    log = tmp_path / "dates.log"
    log.write_text(render(Spec(0, iso=True)) + render(Spec(0, iso=False)))
    ours, theirs = both_readers(log)
    assert ours[0].time == ours[1].time == time.mktime((YEAR, 3, 14, 15, 9, 26, 0, 0, -1))
    assert [e.timestamp for e in theirs] == [ours[0].time] * 2


def test_a_utc_time_with_milliseconds_reads_as_utc() -> None:
    assert condor_log.parse_time("2026-11-24", "10:00:00.250Z") == 1795514400.25


def test_a_log_cut_mid_event_waits_for_the_rest(tmp_path: Path) -> None:
    text = "".join(render(e) for e in EVERY_EVENT).encode()
    cut = text.index(b"Job terminated.") + 40
    log = tmp_path / "cut.log"
    log.write_bytes(text[:cut])
    tail = condor_log.UserLogTail(log)
    reader = htcondor2.JobEventLog(str(log))
    first, theirs_first = tail.read(), list(reader.events(0))
    assert [e.code for e in first] == [int(e.type) for e in theirs_first]
    assert first[-1].code == condor_log.HELD  # the held job is known; its ending is not, yet
    assert tail.parser.pending > 0
    with open(log, "ab") as f:
        f.write(text[cut:])
    rest, theirs_rest = tail.read(), list(reader.events(0))
    assert [e.code for e in rest] == [int(e.type) for e in theirs_rest]
    assert len(first) + len(rest) == len(EVERY_EVENT)
    assert rest[0].code == condor_log.TERMINATED and rest[0].exit == 3


def test_events_treadle_does_not_know_are_kept_with_their_text() -> None:
    text = ("028 (017.000.000) 2026-03-14 15:09:26 Job ad information event triggered.\n"
            "Proc = 0\nTriggerEventTypeNumber = 0\n...\n"
            "040 (017.000.000) 2026-03-14 15:09:27 Started transferring input files\n"
            "\tTransferring to host: <10.0.0.9:9618>\n...\n")
    events = condor_log.UserLogParser().feed(text.encode())
    assert [(e.code, e.head) for e in events] == [
        (28, "Job ad information event triggered."), (40, "Started transferring input files")]
    assert events[0].body == ("Proc = 0", "TriggerEventTypeNumber = 0")


def test_a_garbled_stretch_is_skipped_and_counted() -> None:
    parser = condor_log.UserLogParser()
    events = parser.feed(b"this is not an event\n...\n" + render(Spec(0)).encode())
    assert [e.code for e in events] == [0] and parser.skipped == 1


def test_windows_line_ends_end_events_too() -> None:
    events = condor_log.UserLogParser().feed(render(Spec(12, value=34, subcode=0)).replace("\n", "\r\n").encode())
    assert [(e.code, e.hold_code, e.reason) for e in events] == [(12, 34, "because")]


def test_the_log_becomes_the_observations_the_tracker_is_fed(tmp_path: Path) -> None:
    log = tmp_path / "run.condorlog"
    log.write_text("".join(render(e) for e in EVERY_EVENT))
    system = CondorSystem(str(tmp_path / "batch"), str(log))
    seen = [(o.native, o.state, o.word) for o in system.harvest()]
    assert seen == [
        ("17.0", State.PENDING, "SUBMITTED"), ("17.0", State.RUNNING, "RUNNING"),
        ("17.0", State.PENDING, "EVICTED"), ("17.0", State.RUNNING, "RUNNING"),
        ("17.0", State.PENDING, "SHADOW_EXCEPTION"), ("17.0", State.PENDING, "RECONNECT_FAILED"),
        ("17.0", State.HELD, "HELD"), ("17.0", State.PENDING, "RELEASED"), ("17.0", State.HELD, "HELD"),
        ("17.0", State.ENDED, "FAILED"), ("17.1", State.ENDED, "SIGNALED"), ("17.2", State.ENDED, "ABORTED"),
        ("17.3", State.ENDED, "COMPLETED"), ("18.0", State.PENDING, "SUBMITTED")]
    assert system.schedd.startswith("<10.0.0.1:9618")
    assert system.harvest() == []  # read from where it stopped


def test_an_execute_event_names_the_slots_machine_or_else_the_address() -> None:
    with_slot, = condor_log.UserLogParser().feed(render(Spec(1)).encode())
    seen = observation(with_slot)
    assert seen is not None and seen.host == "node9.example.org" and seen.start == with_slot.time
    bare = condor_log.parse_event("001 (017.000.000) 03/14 15:09:26 Job executing on host: <10.0.0.9:9618?x=1>")
    assert bare is not None
    seen = observation(bare)
    assert seen is not None and seen.host == "10.0.0.9"


def test_a_hold_keeps_code_subcode_and_reason_for_the_tracker() -> None:
    event, = condor_log.UserLogParser().feed(render(Spec(12, value=3, subcode=42, reason="treadle: WALL_TIME exceeded")).encode())
    seen = observation(event, label="7")
    assert seen is not None
    assert (seen.state, seen.hold_code, seen.hold_subcode, seen.reason, seen.label) == (
        State.HELD, 3, 42, "treadle: WALL_TIME exceeded", "7")


# --- generated sequences ----------------------------------------------------------------------------

REASON = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30).map(
    lambda s: s.replace("...", "..,"))
SPECS = st.builds(
    Spec,
    code=st.sampled_from([0, 1, 4, 5, 6, 7, 9, 12, 13, 22, 24]),
    cluster=st.integers(1, 10**6),
    proc=st.integers(0, 5000),
    when=st.tuples(st.integers(1, 12), st.integers(1, 28), st.integers(0, 23), st.integers(0, 59),
                   st.integers(0, 59)),
    iso=st.booleans(),
    value=st.integers(0, 255),
    subcode=st.integers(0, 200),
    normal=st.booleans(),
    reason=st.lists(REASON, min_size=1, max_size=4).map(" ".join),
    cpu=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
    memory=st.integers(0, 10**6),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(SPECS, min_size=1, max_size=12), cuts=st.lists(st.integers(1, 400), max_size=20))
def test_generated_logs_fed_in_any_pieces_read_as_htcondor_reads_them(
        tmp_path: Path, specs: list[Spec], cuts: list[int]) -> None:
    data = "".join(render(e) for e in specs).encode()
    log = tmp_path / "generated.log"
    log.write_bytes(data)
    theirs = list(htcondor2.JobEventLog(str(log)).events(0))
    parser = condor_log.UserLogParser()
    ours: list[condor_log.Event] = []
    at = 0
    for size in cuts:
        ours += parser.feed(data[at:at + size])
        at += size
    ours += parser.feed(data[at:])
    assert parser.pending == 0 and parser.skipped == 0
    assert len(ours) == len(theirs) == len(specs)
    for a, b in zip(ours, theirs, strict=True):
        assert_same(a, b)
