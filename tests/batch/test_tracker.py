"""BatchTracker: observation sequences in, actions out, with no scheduler and no clock.

Each failure class of docs/batch.md ("When things go wrong") is one named test; a hypothesis
state machine then throws random observations, polls, ticks and cancels at it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Hashable, Sequence

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from treadle.batch.base import Observation, State
from treadle.batch.tracker import (
    KILLED_HINTS,
    LOST_WORDS,
    NO_STATUS_FILE,
    REQUEUE_WORDS,
    SLURM_HOLDS,
    STATUS_WORD,
    TERMINAL,
    UNCLEARABLE,
    Action,
    AskFinal,
    BatchTracker,
    Cancel,
    Notify,
    Outcome,
    Phase,
    Report,
    Submit,
    TrackerError,
)
from treadle.errors import BatchError


def running_job(tracker: BatchTracker, key: Hashable = "a", native: str = "100",
                now: float = 0.0, host: str = "vm") -> None:
    """A job added, submitted as ``native`` and seen running on ``host``."""
    assert tracker.add(key, now) == [Submit(key)]
    assert tracker.submitted(key, native, now) == [Notify(key, "queued", native)]
    assert tracker.observe(Observation(native, State.RUNNING, "RUNNING", host=host), now) == [
        Notify(key, "running", native, host)]


def queued_job(tracker: BatchTracker, key: Hashable = "a", native: str = "100",
               now: float = 0.0) -> None:
    tracker.add(key, now)
    tracker.submitted(key, native, now)


def status_file(native: str, exit: int, signal: int | None = None) -> Observation:
    """What treadle.batch.slurm makes of a job's status file."""
    return Observation(native, State.ENDED, STATUS_WORD, host="vm", exit=exit, signal=signal,
                       start=1000.0, end=1010.0, usage={"cpu": 2.5})


def scheduler(native: str, state: State, word: str, reason: str = "") -> Observation:
    return Observation(native, state, word, reason=reason)


def the_report(actions: Sequence[Action], key: Hashable = "a") -> Outcome:
    reports = [a for a in actions if isinstance(a, Report)]
    assert len(reports) == 1 and reports[0].key == key, actions
    return reports[0].outcome


def error(kind: str, stderr: str = "sbatch: error: Socket timed out on send/recv operation"
          ) -> BatchError:
    return BatchError("sbatch failed", kind=kind, command=("sbatch",), returncode=1, stderr=stderr)


# ---- endings with a status file ----------------------------------------------------------


def test_status_file_exit_0_is_exited_with_its_numbers():
    t = BatchTracker()
    running_job(t)
    outcome = the_report(t.observe(status_file("100", 0), 5.0))
    assert outcome == Outcome(Phase.EXITED, "100", exit=0, host="vm", start=1000.0, end=1010.0,
                              usage={"cpu": 2.5})
    assert "a" not in t and t.active() == [] and t.counts()[Phase.EXITED] == 1


def test_status_file_non_zero_exit_is_exited_and_may_be_retried():
    t = BatchTracker()
    running_job(t)
    outcome = the_report(t.observe(status_file("100", 3), 5.0))
    assert (outcome.phase, outcome.exit, outcome.retry) == (Phase.EXITED, 3, True)


def test_a_job_that_ends_before_any_poll_saw_it_run_is_exited():
    t = BatchTracker()
    queued_job(t)
    assert the_report(t.observe(status_file("100", 0), 1.0)).phase is Phase.EXITED


def test_condor_terminated_events_normal_and_abnormal():
    t = BatchTracker()
    running_job(t, "a", "7.0")
    running_job(t, "b", "7.1")
    normal = Observation("7.0", State.ENDED, "", exit=0, usage={"cpu": 1.0, "rss": 30.0})
    abnormal = Observation("7.1", State.ENDED, "", signal=11)
    assert the_report(t.observe(normal, 3.0), "a").usage == {"cpu": 1.0, "rss": 30.0}
    outcome = the_report(t.observe(abnormal, 3.0), "b")
    assert (outcome.phase, outcome.exit, outcome.signal) == (Phase.EXITED, None, 11)


# ---- killed by the scheduler: failed, with a hint, not retried ------------------------------


@pytest.mark.parametrize(("word", "hint"), [("TIMEOUT", "raise WALL_TIME"),
                                            ("OUT_OF_MEMORY", "raise MEMORY"),
                                            ("DEADLINE", "deadline")])
def test_killed_by_the_scheduler_is_failed_with_a_hint(word, hint):
    t = BatchTracker()
    running_job(t)
    outcome = the_report(t.observe(scheduler("100", State.ENDED, word), 70.0))
    assert (outcome.phase, outcome.reason, outcome.retry) == (Phase.FAILED, word, False)
    assert hint in outcome.hint
    assert outcome.host == "vm"


def test_sacct_states_with_a_user_name_are_read_by_their_first_word():
    t = BatchTracker()
    running_job(t)
    actions = t.observe(scheduler("100", State.ENDED, "CANCELLED by 1000"), 5.0)
    assert Notify("a", "lost", "100", "CANCELLED") in actions and Submit("a") in actions


# ---- SIGTERM / SIGKILL in a status file waits for the scheduler's word -----------------------


def test_sigterm_status_file_then_timeout_is_failed_with_the_files_numbers():
    t = BatchTracker()
    running_job(t)
    assert t.observe(status_file("100", 143, 15), 60.0) == []
    assert t.phase("a") is Phase.RUNNING
    assert t.observe(scheduler("100", State.RUNNING, "COMPLETING"), 61.0) == []
    outcome = the_report(t.observe(scheduler("100", State.ENDED, "TIMEOUT"), 62.0))
    assert (outcome.phase, outcome.reason, outcome.exit, outcome.signal) == (
        Phase.FAILED, "TIMEOUT", 143, 15)
    assert outcome.hint == "raise WALL_TIME" and outcome.usage == {"cpu": 2.5}


def test_sigkill_status_file_then_cancelled_behind_our_back_is_lost():
    t = BatchTracker()
    running_job(t)
    assert t.observe(status_file("100", 137, 9), 60.0) == []
    actions = t.observe(scheduler("100", State.ENDED, "CANCELLED"), 61.0)
    assert actions == [Notify("a", "lost", "100", "CANCELLED"), Submit("a")]
    assert t.phase("a") is Phase.SUBMITTING and t.native("a") is None


@pytest.mark.parametrize("word", ["FAILED", "COMPLETED"])
def test_sigterm_status_file_then_an_ordinary_end_is_exited(word):
    t = BatchTracker()
    running_job(t)
    t.observe(status_file("100", 143, 15), 60.0)
    outcome = the_report(t.observe(scheduler("100", State.ENDED, word), 61.0))
    assert (outcome.phase, outcome.exit, outcome.signal) == (Phase.EXITED, 143, 15)


def test_sigterm_status_file_then_pending_again_is_a_requeue():
    t = BatchTracker()
    running_job(t)
    t.observe(status_file("100", 143, 15), 60.0)
    assert t.observe(scheduler("100", State.PENDING, "PENDING", "BeginTime"), 61.0) == [
        Notify("a", "requeued", "100", "PENDING")]
    assert t.phase("a") is Phase.QUEUED and t.native("a") == "100"


def test_sigterm_status_file_with_no_word_from_the_scheduler_is_exited_after_two_polls_and_5_s():
    t = BatchTracker()
    running_job(t)
    t.observe(status_file("100", 143, 15), 60.0)
    assert t.poll_done({"100"}, 62.0) == []
    assert t.poll_done({"100"}, 64.0) == []  # two polls, but quick ones: the scheduler may yet explain
    outcome = the_report(t.poll_done({"100"}, 65.0))
    assert (outcome.phase, outcome.exit, outcome.signal) == (Phase.EXITED, 143, 15)


def test_sigterm_status_file_of_a_job_gone_from_the_queue_asks_final_once():
    t = BatchTracker()
    running_job(t)
    t.observe(status_file("100", 143, 15), 60.0)
    assert t.poll_done(set(), 62.0) == [AskFinal("a", "100")]
    assert t.poll_done(set(), 64.0) == []
    assert the_report(t.poll_done(set(), 66.0)).phase is Phase.EXITED


def test_a_signal_other_than_term_or_kill_is_the_commands_own_end():
    t = BatchTracker()
    running_job(t)
    outcome = the_report(t.observe(status_file("100", 139, 11), 5.0))
    assert (outcome.phase, outcome.signal) == (Phase.EXITED, 11)


# ---- the scheduler says it ended, but no status file -----------------------------------------


@pytest.mark.parametrize("word", ["COMPLETED", "FAILED"])
def test_ended_without_a_status_file_fails_after_two_polls_and_5_s(word):
    t = BatchTracker()
    running_job(t)
    assert t.observe(scheduler("100", State.ENDED, word), 10.0) == []
    assert t.poll_done({"100"}, 10.0) == []
    assert t.poll_done({"100"}, 12.0) == []  # a shared filesystem may show the file a little late
    outcome = the_report(t.poll_done({"100"}, 15.0))
    assert outcome.phase is Phase.FAILED and outcome.retry
    assert outcome.reason == NO_STATUS_FILE.format(native="100")
    assert "ran but wrote no status file" in outcome.reason


def test_a_status_file_that_arrives_late_still_wins():
    t = BatchTracker()
    running_job(t)
    t.observe(scheduler("100", State.ENDED, "COMPLETED"), 10.0)
    t.poll_done({"100"}, 10.0)
    assert the_report(t.observe(status_file("100", 0), 11.0)).phase is Phase.EXITED


def test_accounting_with_an_exit_code_needs_no_status_file():
    t = BatchTracker()
    running_job(t)
    sacct = Observation("100", State.ENDED, "COMPLETED", exit=0, usage={"cpu": 4.0, "rss": 12.0})
    assert the_report(t.observe(sacct, 10.0)).usage == {"cpu": 4.0, "rss": 12.0}


# ---- lost: resubmitted under the same key, up to lost_retries --------------------------------


@pytest.mark.parametrize("word", ["NODE_FAIL", "BOOT_FAIL", "PREEMPTED", "CANCELLED"])
def test_lost_running_job_is_submitted_again_under_the_same_key(word):
    t = BatchTracker()
    running_job(t)
    assert t.observe(scheduler("100", State.ENDED, word), 5.0) == [
        Notify("a", "lost", "100", word), Submit("a")]
    assert t.key_of("100") is None
    assert t.submitted("a", "101", 6.0) == [Notify("a", "queued", "101")]
    assert t.observe(status_file("100", 0), 7.0) == []  # the old attempt is forgotten
    assert the_report(t.observe(status_file("101", 0), 8.0)).native == "101"


def test_a_pending_job_cancelled_behind_our_back_is_lost_not_waited_for():
    t = BatchTracker()
    queued_job(t)
    t.observe(scheduler("100", State.PENDING, "PENDING", "BeginTime"), 1.0)
    assert t.observe(scheduler("100", State.ENDED, "CANCELLED"), 2.0) == [
        Notify("a", "lost", "100", "CANCELLED"), Submit("a")]


def test_lost_more_than_lost_retries_is_lost_for_good():
    t = BatchTracker(lost_retries=2)
    running_job(t, native="1")
    for attempt in (2, 3):
        t.observe(scheduler(str(attempt - 1), State.ENDED, "NODE_FAIL"), float(attempt))
        t.submitted("a", str(attempt), float(attempt))
    actions = t.observe(scheduler("3", State.ENDED, "NODE_FAIL"), 9.0)
    assert Submit("a") not in actions
    outcome = the_report(actions)
    assert (outcome.phase, outcome.native, outcome.reason, outcome.retry) == (
        Phase.LOST, "3", "NODE_FAIL", True)
    assert t.counts()[Phase.LOST] == 1


def test_a_job_missing_from_two_polls_is_lost():
    t = BatchTracker()
    running_job(t)
    assert t.poll_done({"100"}, 2.0) == []
    assert t.poll_done({"other"}, 4.0) == [AskFinal("a", "100")]
    actions = t.poll_done(set(), 6.0)
    assert actions[0].event == "lost" and "no longer known" in actions[0].detail
    assert actions[1:] == [Submit("a")]


def test_final_settles_a_job_missing_from_the_poll():
    t = BatchTracker()
    running_job(t)
    assert t.poll_done([], 4.0) == [AskFinal("a", "100")]
    sacct = Observation("100", State.ENDED, "FAILED", exit=2)
    assert the_report(t.observe(sacct, 4.1)).exit == 2


def test_gone_from_final_counts_as_missing_not_twice():
    t = BatchTracker()
    running_job(t)
    assert t.poll_done([], 4.0) == [AskFinal("a", "100")]
    assert t.observe(scheduler("100", State.GONE, ""), 4.1) == []
    assert t.phase("a") is Phase.RUNNING
    assert Submit("a") in t.poll_done([], 6.0)


def test_listed_again_after_missing_once_starts_over():
    t = BatchTracker()
    running_job(t)
    t.poll_done([], 4.0)
    assert t.poll_done(["100"], 6.0) == []
    assert t.poll_done([], 8.0) == [AskFinal("a", "100")]


# ---- requeued: same id, one lost attempt -----------------------------------------------------


def test_slurm_requeue_is_tracked_on_the_same_id_and_counted_once():
    t = BatchTracker()
    running_job(t)
    assert t.observe(scheduler("100", State.PENDING, "REQUEUED"), 5.0) == [
        Notify("a", "requeued", "100", "REQUEUED")]
    assert t.observe(scheduler("100", State.PENDING, "PENDING", "BeginTime"), 7.0) == []
    assert t.observe(scheduler("100", State.PENDING, "REQUEUED"), 8.0) == []
    assert t.observe(scheduler("100", State.RUNNING, "RUNNING", "vm"), 9.0) == [
        Notify("a", "running", "100", "")]
    assert t.observe(scheduler("100", State.PENDING, "PENDING"), 10.0) == [
        Notify("a", "requeued", "100", "PENDING")]
    assert t.native("a") == "100"


@pytest.mark.parametrize("word", ["EVICTED", "SHADOW_EXCEPTION", "RECONNECT_FAILED"])
def test_condor_requeues_past_lost_retries_cancel_and_give_up(word):
    t = BatchTracker(lost_retries=1)
    running_job(t, native="7.0")
    assert t.observe(scheduler("7.0", State.PENDING, word), 2.0) == [
        Notify("a", "requeued", "7.0", word)]
    t.observe(scheduler("7.0", State.RUNNING, "001"), 3.0)
    actions = t.observe(scheduler("7.0", State.PENDING, word), 4.0)
    assert actions[:2] == [Notify("a", "requeued", "7.0", word), Cancel("a", "7.0")]
    outcome = the_report(actions)
    assert outcome.phase is Phase.LOST and word in outcome.reason


def test_condor_aborted_not_by_treadle_is_lost():
    t = BatchTracker()
    running_job(t, native="7.0")
    assert t.observe(scheduler("7.0", State.ENDED, "ABORTED"), 2.0) == [
        Notify("a", "lost", "7.0", "ABORTED"), Submit("a")]


# ---- pending for a reason that cannot clear ---------------------------------------------------


def test_unclearable_pending_reason_is_unstartable_after_the_grace():
    t = BatchTracker(pending_grace=60.0)
    queued_job(t, now=0.0)
    actions = t.observe(scheduler("100", State.PENDING, "PENDING", "PartitionNodeLimit"), 1.0)
    assert [a.event for a in actions if isinstance(a, Notify)] == ["warning"]
    assert t.observe(scheduler("100", State.PENDING, "PENDING", "PartitionNodeLimit"), 30.0) == []
    assert t.tick(60.9) == []
    actions = t.tick(61.0)
    assert actions[0] == Cancel("a", "100")
    outcome = the_report(actions)
    assert (outcome.phase, outcome.reason, outcome.retry) == (
        Phase.UNSTARTABLE, "PartitionNodeLimit", False)


def test_a_reason_that_clears_before_the_grace_cancels_nothing():
    t = BatchTracker(pending_grace=60.0)
    queued_job(t)
    t.observe(scheduler("100", State.PENDING, "PENDING", "PartitionTimeLimit"), 1.0)
    t.observe(scheduler("100", State.PENDING, "PENDING", "Priority"), 20.0)
    assert t.tick(100.0) == []
    t.observe(scheduler("100", State.PENDING, "PENDING", "InvalidQOS"), 101.0)
    t.observe(scheduler("100", State.RUNNING, "RUNNING"), 120.0)
    assert t.tick(1000.0) == [] and t.phase("a") is Phase.RUNNING


def test_pending_for_an_ordinary_reason_just_waits():
    t = BatchTracker()
    queued_job(t)
    for now in (1.0, 100.0, 10_000.0):
        assert t.observe(scheduler("100", State.PENDING, "PENDING", "Resources"), now) == []
        assert t.tick(now) == []
    assert t.phase("a") is Phase.QUEUED


# ---- held ----------------------------------------------------------------------------------


def test_slurm_hold_is_told_at_once_then_cancelled_and_lost_after_hold_timeout():
    t = BatchTracker(hold_timeout=600.0)
    queued_job(t)
    assert t.observe(scheduler("100", State.HELD, "PENDING", "JobHeldUser"), 10.0) == [
        Notify("a", "held", "100", "JobHeldUser")]
    assert t.observe(scheduler("100", State.HELD, "PENDING", "JobHeldUser"), 20.0) == []
    assert t.tick(609.0) == []
    actions = t.tick(610.0)
    assert actions[0] == Cancel("a", "100")
    assert actions[1].event == "lost" and "held for 600 s" in actions[1].detail
    assert actions[2:] == [Submit("a")]


def test_slurm_hold_reason_in_a_pending_observation_is_a_hold():
    t = BatchTracker()
    queued_job(t)
    assert t.observe(scheduler("100", State.PENDING, "PENDING", "JobHeldAdmin"), 1.0)[0].event == "held"
    assert t.phase("a") is Phase.HELD


def test_released_before_hold_timeout_stops_the_timer():
    t = BatchTracker(hold_timeout=600.0)
    queued_job(t, native="7.0")
    t.observe(Observation("7.0", State.HELD, "", reason="held by user", hold_code=1), 10.0)
    assert t.observe(scheduler("7.0", State.PENDING, "RELEASED"), 20.0) == []
    assert t.phase("a") is Phase.QUEUED
    assert t.tick(10_000.0) == []


def test_condor_wall_time_hold_is_failed_timeout():
    t = BatchTracker()
    running_job(t, native="7.0")
    held = Observation("7.0", State.HELD, "", reason="treadle: WALL_TIME exceeded",
                       hold_code=3, hold_subcode=42)
    actions = t.observe(held, 100.0)
    assert actions[0] == Cancel("a", "7.0")
    outcome = the_report(actions)
    assert (outcome.phase, outcome.reason, outcome.hint, outcome.retry) == (
        Phase.FAILED, "TIMEOUT", "raise WALL_TIME", False)


def test_condor_memory_hold_is_failed_raise_memory():
    t = BatchTracker()
    running_job(t, native="7.0")
    held = Observation("7.0", State.HELD, "", reason="memory usage exceeded", hold_code=34)
    outcome = the_report(t.observe(held, 5.0))
    assert (outcome.phase, outcome.hint, outcome.retry) == (Phase.FAILED, "raise MEMORY", False)


@pytest.mark.parametrize("code", [12, 13])
def test_condor_transfer_holds_fail_at_once_naming_the_file(code):
    t = BatchTracker()
    queued_job(t, native="7.0")
    reason = "Transfer input files failure: reading from file /data/in.txt: No such file"
    outcome = the_report(t.observe(Observation("7.0", State.HELD, "", reason=reason,
                                               hold_code=code), 5.0))
    assert outcome.phase is Phase.FAILED and "/data/in.txt" in outcome.reason


# ---- submission: backoff, timeout, permanent, unknown ---------------------------------------


def test_transient_submit_errors_back_off_1_2_4_up_to_60_seconds():
    t = BatchTracker(submission_timeout=10_000.0)
    t.add("a", 0.0)
    now, delays = 0.0, []
    for _ in range(9):
        assert t.submit_failed("a", error("transient"), now) == []
        next_due = now
        while not t.tick(next_due):
            next_due += 0.5
        delays.append(next_due - now)
        now = next_due
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert t.submitted("a", "100", now) == [Notify("a", "queued", "100")]


def test_backoff_is_scaled_by_the_jitter():
    t = BatchTracker(jitter=lambda: 1.2)
    t.add("a", 0.0)
    t.submit_failed("a", error("transient"), 0.0)
    assert t.tick(1.19) == []
    assert t.tick(1.2) == [Submit("a")]


def test_a_submit_is_not_repeated_before_it_is_answered():
    t = BatchTracker()
    t.add("a", 0.0)
    t.submit_failed("a", error("transient"), 0.0)
    assert t.tick(5.0) == [Submit("a")]
    assert t.tick(500.0) == []


def test_transient_errors_past_the_submission_timeout_are_unstartable():
    t = BatchTracker(submission_timeout=600.0)
    t.add("a", 0.0)
    now, actions = 0.0, t.submit_failed("a", error("transient"), 0.0)
    while not actions:
        while not t.tick(now):  # retry as soon as the backoff allows
            now += 1.0
        actions = t.submit_failed("a", error("transient"), now)
    outcome = the_report(actions)
    assert 600.0 <= now < 660.0
    assert (outcome.phase, outcome.retry) == (Phase.UNSTARTABLE, False)
    assert outcome.reason == "sbatch: error: Socket timed out on send/recv operation"


def test_permanent_submit_error_is_unstartable_at_once_with_the_schedulers_words():
    t = BatchTracker()
    t.add("a", 0.0)
    stderr = "sbatch: error: invalid partition specified: nope\nsbatch: error: Batch job submission failed"
    outcome = the_report(t.submit_failed("a", error("permanent", stderr), 0.0))
    assert outcome == Outcome(Phase.UNSTARTABLE, "", reason="sbatch: error: invalid partition "
                              "specified: nope", retry=False)


def test_unknown_errors_are_retried_three_times_then_permanent():
    t = BatchTracker(unknown_error_limit=3)
    t.add("a", 0.0)
    for now in (0.0, 10.0, 20.0):
        assert t.submit_failed("a", error("unknown", "sbatch: strange"), now) == []
        assert t.tick(now + 9.0) == [Submit("a")]
    outcome = the_report(t.submit_failed("a", error("unknown", "sbatch: strange"), 30.0))
    assert (outcome.phase, outcome.reason) == (Phase.UNSTARTABLE, "sbatch: strange")


def test_an_empty_stderr_reports_the_errors_message():
    t = BatchTracker()
    t.add("a", 0.0)
    outcome = the_report(t.submit_failed("a", BatchError("sbatch exited 1 saying nothing",
                                                         kind="permanent"), 0.0))
    assert outcome.reason == "sbatch exited 1 saying nothing"


def test_a_lost_job_whose_resubmission_is_refused_names_its_last_native():
    t = BatchTracker()
    running_job(t)
    t.observe(scheduler("100", State.ENDED, "NODE_FAIL"), 5.0)
    assert the_report(t.submit_failed("a", error("permanent"), 6.0)).native == "100"


# ---- cancel: never reported ----------------------------------------------------------------


def test_cancel_running_job_cancels_it_and_never_reports():
    t = BatchTracker()
    running_job(t)
    assert t.cancel("a") == [Cancel("a", "100")]
    assert "a" not in t and t.active() == []
    assert t.observe(scheduler("100", State.ENDED, "CANCELLED"), 2.0) == []
    assert t.observe(status_file("100", 143, 15), 2.0) == []
    assert t.poll_done([], 4.0) == [] and t.poll_done([], 6.0) == []
    assert t.counts()[Phase.CANCELLED] == 1


def test_cancel_while_submitting_needs_no_scheduler_command():
    t = BatchTracker()
    t.add("a", 0.0)
    t.submit_failed("a", error("transient"), 0.0)
    assert t.cancel("a") == []
    assert t.tick(100.0) == []


def test_answering_a_cancelled_submission_is_an_error_naming_the_key():
    t = BatchTracker()
    t.add("a", 0.0)
    t.cancel("a")
    with pytest.raises(TrackerError, match="no job 'a' is tracked"):
        t.submitted("a", "100", 1.0)


# ---- adopt (recovery) ------------------------------------------------------------------------


def test_adopted_running_job_is_tracked_not_resubmitted():
    t = BatchTracker()
    assert t.adopt(4, "1234_7", Phase.RUNNING, 0.0) == []
    assert (t.phase(4), t.native(4), t.key_of("1234_7"), t.active()) == (
        Phase.RUNNING, "1234_7", 4, ["1234_7"])
    assert t.poll_done({"1234_7"}, 2.0) == []
    assert the_report(t.observe(status_file("1234_7", 0), 3.0), 4).phase is Phase.EXITED


def test_adopted_held_job_is_told_and_timed():
    t = BatchTracker(hold_timeout=100.0)
    assert t.adopt(4, "9", Phase.HELD, 0.0) == [Notify(4, "held", "9", "held when adopted")]
    assert Submit(4) in t.tick(100.0)


def test_adopt_refuses_a_terminal_phase_a_known_key_and_a_known_native():
    t = BatchTracker()
    with pytest.raises(TrackerError, match="not exited"):
        t.adopt(1, "5", Phase.EXITED, 0.0)
    t.adopt(1, "5", Phase.QUEUED, 0.0)
    with pytest.raises(TrackerError, match="already tracked"):
        t.adopt(1, "6", Phase.QUEUED, 0.0)
    with pytest.raises(TrackerError, match="already job 1's"):
        t.adopt(2, "5", Phase.QUEUED, 0.0)


# ---- illegal caller transitions --------------------------------------------------------------


def test_submitted_twice_is_illegal_and_the_error_shows_the_history():
    t = BatchTracker()
    queued_job(t)
    with pytest.raises(TrackerError) as caught:
        t.submitted("a", "101", 1.0)
    message = str(caught.value)
    assert "job 'a' (queued)" in message and "submitting -> queued (100)" in message


def test_adding_a_tracked_key_and_querying_an_unknown_one_are_illegal():
    t = BatchTracker()
    t.add("a", 0.0)
    with pytest.raises(TrackerError, match="already tracked"):
        t.add("a", 1.0)
    with pytest.raises(TrackerError):
        t.phase("zz")
    with pytest.raises(TrackerError):
        t.cancel("zz")
    assert t.key_of("zz") is None


def test_observations_of_unknown_natives_are_ignored():
    t = BatchTracker()
    assert t.observe(status_file("555", 0), 0.0) == []
    assert t.poll_done(["555"], 0.0) == []


def test_counts_follow_the_jobs():
    t = BatchTracker()
    running_job(t, "a", "1")
    queued_job(t, "b", "2")
    t.add("c", 0.0)
    counts = t.counts()
    assert (counts[Phase.RUNNING], counts[Phase.QUEUED], counts[Phase.SUBMITTING]) == (1, 1, 1)
    assert len(t) == 3 and set(counts) == set(Phase)


# ---- cost --------------------------------------------------------------------------------------


def test_ten_thousand_jobs_cost_a_pass_per_poll_not_a_pass_per_job():
    """10,000 jobs through a whole life, with a poll and a tick after every 100 events."""
    n = 10_000
    t = BatchTracker()
    natives = [str(i) for i in range(n)]
    started = time.perf_counter()
    for i, native in enumerate(natives):
        t.add(i, 0.0)
        t.submitted(i, native, 0.0)
    listed = set(natives)
    for i, native in enumerate(natives):
        t.observe(Observation(native, State.RUNNING, "RUNNING", host="vm"), 1.0)
        if i % 100 == 0:
            t.tick(1.0)
    for i, native in enumerate(natives):
        t.observe(status_file(native, 0), 2.0)
        listed.discard(native)
        if i % 100 == 0:
            t.tick(2.0)
        if i % 1000 == 0:
            t.poll_done(listed, 2.0)
    elapsed = time.perf_counter() - started
    assert len(t) == 0 and t.counts()[Phase.EXITED] == n
    # about 0.2 s here; a pass over all jobs per event would take minutes
    assert elapsed < 10.0, elapsed


# ---- random sequences --------------------------------------------------------------------------

WORDS = sorted({*KILLED_HINTS, *LOST_WORDS, *REQUEUE_WORDS, "RUNNING", "COMPLETING",
                "PENDING", "COMPLETED", "FAILED", "RELEASED", STATUS_WORD, "", "odd word"})
REASONS = sorted({*UNCLEARABLE, *SLURM_HOLDS, "Resources", "Priority", ""})
observations = st.builds(
    lambda state, word, reason, exit, signal, code, subcode: Observation(
        "", state, word, reason=reason, exit=exit, signal=signal, hold_code=code,
        hold_subcode=subcode),
    st.sampled_from(State), st.sampled_from(WORDS), st.sampled_from(REASONS),
    st.none() | st.sampled_from([0, 1, 137, 143, 139]), st.none() | st.sampled_from([9, 11, 15]),
    st.none() | st.sampled_from([1, 3, 12, 13, 34]), st.none() | st.just(42))


class RandomSchedulers(RuleBasedStateMachine):
    """Random answers, observations, polls, ticks and cancels; then everything is made to end."""

    def __init__(self) -> None:
        super().__init__()
        self.tracker = BatchTracker(lost_retries=2, jitter=lambda: 1.1)
        self.now = 0.0
        self.keys = 0
        self.natives = 0
        self.asked: set[int] = set()  # keys with a Submit out and unanswered
        self.reported: set[int] = set()
        self.cancelled: set[int] = set()
        self.seen_natives: list[str] = []
        self.live: set[int] = set()

    def run(self, actions: list[Action]) -> None:
        """Carry out what the tracker asked, checking its promises."""
        for action in actions:
            assert isinstance(action.key, int)
            if isinstance(action, Submit):
                assert action.key not in self.asked
                self.asked.add(action.key)
            elif isinstance(action, Report):
                assert action.key not in self.reported, "reported twice"
                assert action.key not in self.cancelled, "a cancelled job was reported"
                assert action.outcome.phase in TERMINAL - {Phase.CANCELLED}
                assert action.key not in self.tracker
                self.reported.add(action.key)
                self.live.discard(action.key)

    @rule()
    def add(self) -> None:
        self.keys += 1
        self.live.add(self.keys)
        self.run(self.tracker.add(self.keys, self.now))

    @precondition(lambda self: self.asked)
    @rule(data=st.data(), kind=st.sampled_from(["ok", "ok", "transient", "unknown", "permanent"]))
    def answer_a_submit(self, data: st.DataObject, kind: str) -> None:
        key = data.draw(st.sampled_from(sorted(self.asked)))
        self.asked.discard(key)
        if kind == "ok":
            self.natives += 1
            self.seen_natives.append(str(self.natives))
            self.run(self.tracker.submitted(key, str(self.natives), self.now))
        else:
            self.run(self.tracker.submit_failed(key, error(kind), self.now))

    @precondition(lambda self: self.seen_natives)
    @rule(data=st.data(), obs=observations)
    def observe(self, data: st.DataObject, obs: Observation) -> None:
        native = data.draw(st.sampled_from(self.seen_natives))  # old natives too
        self.run(self.tracker.observe(dataclasses.replace(obs, native=native), self.now))

    @rule(data=st.data())
    def poll(self, data: st.DataObject) -> None:
        active = self.tracker.active()
        seen = data.draw(st.sets(st.sampled_from(active))) if active else set()
        self.run(self.tracker.poll_done(seen, self.now))

    @rule(step=st.floats(0.0, 700.0))
    def tick(self, step: float) -> None:
        self.now += step
        self.run(self.tracker.tick(self.now))

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.live)))
        self.asked.discard(key)
        self.live.discard(key)
        self.cancelled.add(key)
        self.run(self.tracker.cancel(key))

    @rule(data=st.data())
    def answer_a_submit_nobody_asked_for(self, data: st.DataObject) -> None:
        key = data.draw(st.integers(0, self.keys + 1))
        if key in self.asked:
            return
        before = self.tracker.history(key) if key in self.tracker else None
        with pytest.raises(TrackerError):
            self.tracker.submitted(key, "x", self.now)
        if before is not None:
            assert self.tracker.history(key) == before

    @invariant()
    def live_jobs_are_in_live_phases(self) -> None:
        assert len(self.tracker) == len(self.live)
        for key in self.live:
            assert self.tracker.phase(key) not in TERMINAL
        assert sorted(self.tracker.active()) == sorted(
            n for k in self.live if (n := self.tracker.native(k)) is not None)

    def teardown(self) -> None:
        """Every job ends once its timers fire and the scheduler says it ended or forgot it."""
        for round in range(60):
            if not len(self.tracker):
                break
            for key in sorted(self.asked):
                self.asked.discard(key)
                self.natives += 1
                self.run(self.tracker.submitted(key, f"end{self.natives}", self.now))
            for native in self.tracker.active():
                state = State.ENDED if round % 2 else State.GONE
                self.run(self.tracker.observe(Observation(native, state, "COMPLETED"), self.now))
            self.run(self.tracker.poll_done(set(), self.now))
            self.now += 1000.0
            self.run(self.tracker.tick(self.now))
        assert len(self.tracker) == 0, self.tracker.counts()
        assert self.reported | self.cancelled == set(range(1, self.keys + 1))


RandomSchedulers.TestCase.settings = settings(max_examples=300, stateful_step_count=40,
                                              deadline=None,
                                              suppress_health_check=[HealthCheck.too_slow])
test_random_schedulers = RandomSchedulers.TestCase


def test_a_job_listed_ended_then_pending_again_was_requeued_not_failed():
    """Slurm may list a job being requeued as ended for a moment; pending again, it is followed."""
    t = BatchTracker()
    running_job(t)
    t.observe(scheduler("100", State.ENDED, "COMPLETED"), 10.0)
    t.poll_done({"100"}, 10.0)
    actions = t.observe(scheduler("100", State.PENDING, "PENDING", reason="BeginTime"), 11.0)
    assert [a.event for a in actions if isinstance(a, Notify)] == ["requeued"]
    assert t.poll_done({"100"}, 16.0) == [] and t.phase("a") is Phase.QUEUED
