"""What the log keeps for batch systems: the run's tag, native job ids, and the jobs a crash left running."""

from __future__ import annotations

import pytest

from treadle.flow import journal as jr
from treadle.flow.journal import COMPLETE, RUNNING
from treadle.flow.recovery import replay


def write_segment(path, identities, records, *, batch=("slurm", "abcd1234"), ts=None):
    """One segment: the header, then (rid, state, job) rule records and ("job", handle, native) records."""
    j = jr.Journal(str(path))
    j.open()
    j.start_segment("wf.mf.slurmlog", "test", ts, batch=batch)
    counts = [len(identities), 0, 0, 0, 0]
    for rec in records:
        if rec[0] == "job":
            j.job_record(rec[1], rec[2])
        else:
            rid, state, job = rec
            j.rule_record(rid, identities[rid], state, job, counts)
    j.close()


@pytest.fixture
def log(tmp_path):
    return tmp_path / "wf.mf.makeflowlog"


IDS = ["a" * 16, "b" * 16, "c" * 16]
OUTS = [("x",), ("y",), ("z",)]


def test_batch_and_job_records_read_back(log):
    write_segment(log, IDS, [(0, RUNNING, 7), ("job", 7, "1234_5")])
    kinds = [rec for rec in jr.read_log(str(log)) if rec[0] in (jr.R_BATCH, jr.R_JOB)]
    assert kinds == [(jr.R_BATCH, "slurm", "abcd1234"), (jr.R_JOB, 7, "1234_5")]


def test_the_reference_skips_our_records(log):
    """They are '# LABEL TS ...' lines, which the reference's log reader ignores."""
    write_segment(log, IDS, [(0, RUNNING, 7), ("job", 7, "1234_5")])
    ours = [line for line in log.read_text().splitlines() if line.startswith(("# BATCH", "# JOB"))]
    assert ours and all(line.split()[2].isdigit() for line in ours)


def test_rules_left_running_are_found_with_their_native_ids(log):
    write_segment(log, IDS, [(0, RUNNING, 7), ("job", 7, "1234_5"), (1, RUNNING, 8), (2, RUNNING, 9),
                             ("job", 9, "1240"), (2, COMPLETE, 9)])
    history = replay(str(log), IDS, OUTS)
    assert history.previous_jobs("abcd1234") == {0: (7, "1234_5"), 1: (8, "")}
    assert history.previous_jobs("ffffffff") == {}
    assert history.max_job_id == 9


def test_a_later_segment_without_a_batch_system_forgets_the_jobs(log):
    write_segment(log, IDS, [(0, RUNNING, 7), ("job", 7, "1234_5")])
    write_segment(log, IDS, [(0, RUNNING, 4242)], batch=None)
    assert replay(str(log), IDS, OUTS).previous_jobs("abcd1234") == {}


def test_the_tag_is_the_same_on_every_resume_and_new_for_a_new_log(log, tmp_path):
    write_segment(log, IDS, [], ts=1_000_000)
    first = replay(str(log), IDS, OUTS).run_tag(str(log), now=5_000_000)
    write_segment(log, IDS, [], ts=2_000_000)
    assert replay(str(log), IDS, OUTS).run_tag(str(log), now=9_000_000) == first
    other = tmp_path / "other.makeflowlog"
    write_segment(other, IDS, [], ts=1_000_000)
    assert replay(str(other), IDS, OUTS).run_tag(str(other), now=5_000_000) != first
    fresh = replay(str(tmp_path / "none.makeflowlog"), IDS, OUTS)
    assert fresh.run_tag("none.makeflowlog", now=1) != fresh.run_tag("none.makeflowlog", now=2)
    assert len(first) == 8 and int(first, 16) >= 0
