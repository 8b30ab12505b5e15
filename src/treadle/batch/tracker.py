"""One state machine for every batch job treadle watches, whatever the scheduler.

Sans-I/O, like the Work Queue protocol: a :class:`BatchTracker` is told what
happened (a submission's answer, an observation, the end of a poll, the time)
and answers with small actions for its caller to carry out (:class:`Submit`,
:class:`Cancel`, :class:`AskFinal`, :class:`Report`, :class:`Notify`). It never
runs a command, opens a file or reads the clock. That is what lets the engine's
Slurm and HTCondor backends and the worker factory share it, and what lets
tests drive it with observation sequences (docs/batch.md, "When things go wrong").

A job is in one :class:`Phase` and changes it only through ``_to``, which
refuses a change the table ``_NEXT`` does not list (:class:`TrackerError`,
naming the job's history)::

    SUBMITTING -> QUEUED | UNSTARTABLE | CANCELLED
    QUEUED     -> RUNNING | HELD | EXITED | FAILED | LOST | SUBMITTING | UNSTARTABLE | CANCELLED
    HELD       -> QUEUED | RUNNING | EXITED | FAILED | LOST | SUBMITTING | CANCELLED
    RUNNING    -> QUEUED | HELD | EXITED | FAILED | LOST | SUBMITTING | CANCELLED

SUBMITTING again means lost and submitted anew under the same key. A job that
reaches a terminal phase is forgotten: it is reported once (never when
CANCELLED), and later observations of its native ids are ignored. Only the
caller can make an illegal move (answer a submission nobody asked for, cancel
a job twice); whatever the schedulers say, :meth:`BatchTracker.observe` and
:meth:`BatchTracker.poll_done` only make legal ones.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import signal
from collections import Counter, deque
from collections.abc import Callable, Collection, Hashable, Mapping
from dataclasses import dataclass, field

from treadle.batch.base import Observation, State
from treadle.errors import BatchError

# Slurm job states (squeue(1) and sacct(1), "JOB STATE CODES") in which the
# scheduler killed the job for a reason that would repeat if it ran again as
# asked, each with what the user should change.
KILLED_HINTS: Mapping[str, str] = {
    "TIMEOUT": "raise WALL_TIME",
    "OUT_OF_MEMORY": "raise MEMORY",
    "DEADLINE": "give the job a later --deadline (in -B or BATCH_OPTIONS)",
}

# Words after which a job did not end by itself and may well run if submitted
# again: Slurm states (same man pages) and HTCondor's event 009, which
# treadle.batch.condor calls ABORTED. A CANCELLED that treadle asked for is
# never seen: a job is forgotten the moment it is cancelled.
LOST_WORDS = frozenset({"NODE_FAIL", "BOOT_FAIL", "PREEMPTED", "CANCELLED", "ABORTED"})

# Words for "the scheduler put the job back in its queue under the same id":
# Slurm's REQUEUE* states, and HTCondor's events 004 (evicted), 007 (shadow
# exception) and 024 (reconnect failed) as treadle.batch.condor names them.
REQUEUE_WORDS = frozenset({
    "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "EVICTED", "SHADOW_EXCEPTION", "RECONNECT_FAILED",
})

# Slurm pending reasons (squeue(1), "JOB REASON CODES") that waiting never
# clears: the job asks for what its partition, account or QOS will not give.
UNCLEARABLE = frozenset({
    "PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints",
    "InvalidAccount", "InvalidQOS", "QOSMaxWallDurationPerJobLimit",
    "AssocMaxWallDurationPerJobLimit",
})

# Slurm pending reasons of a job held by `scontrol hold` (user) or an administrator.
SLURM_HOLDS = frozenset({"JobHeldUser", "JobHeldAdmin"})

# HTCondor HoldReasonCode values (HTCondor manual, "Job ClassAd Attributes")
# that releasing the job would not cure. Subcode 42 is treadle's own: the
# periodic_hold that enforces WALL_TIME on HTCondor (docs/batch.md).
WALL_TIME_SUBCODE = 42
HOLD_OUT_OF_MEMORY = 34  # JobOutOfResources: memory use over request_memory
HOLD_TRANSFER = frozenset({12, 13})  # TransferOutputError, TransferInputError

# The word of an observation read from a job's status file (treadle.batch.slurm,
# treadle.batch.local): the command's own end, with no verdict of the scheduler.
STATUS_WORD = "STATUS"

# Signals Slurm kills a job with for TIMEOUT, PREEMPTED and scancel: a status
# file showing one waits for the scheduler's word on why.
SCHEDULER_SIGNALS = frozenset({int(signal.SIGTERM), int(signal.SIGKILL)})

# Polls a job may go on without the evidence it waits for (a status file after
# the scheduler said it ended, the scheduler's word after a SIGTERM status
# file, a listing after it vanished) before treadle decides without it.
POLLS_TO_WAIT = 2
# ... and seconds, at least: with polls half a second apart, two polls are too short for a
# status file to show on a shared filesystem, or for a requeued job to be listed pending again.
SECONDS_TO_WAIT = 5.0

# Entries kept in a job's history: enough to explain an illegal move, bounded
# because a job held and released over and over would otherwise grow forever.
HISTORY_LENGTH = 40

NO_STATUS_FILE = ("job {native} ran but wrote no status file: "
                  "is the batch directory on a filesystem the nodes share?")


class TrackerError(Exception):
    """The caller asked for a change the job's phase does not allow: a bug in the caller."""


class Phase(enum.Enum):
    """Where a job is in its life, as treadle sees it (see the module's table)."""

    SUBMITTING = "submitting"  # handed to submit, no native id yet (or waiting out a backoff)
    QUEUED = "queued"
    HELD = "held"
    RUNNING = "running"
    EXITED = "exited"  # terminal: ended with an exit code or a signal
    FAILED = "failed"  # terminal: killed by the scheduler for a reason that would repeat
    LOST = "lost"  # terminal: lost, and out of lost retries
    UNSTARTABLE = "unstartable"  # terminal: refused for good, or pending for a reason that cannot clear
    CANCELLED = "cancelled"  # terminal: treadle asked; never reported


TERMINAL = frozenset({Phase.EXITED, Phase.FAILED, Phase.LOST, Phase.UNSTARTABLE, Phase.CANCELLED})

# where a submitted job can go from any of its live phases
_FROM_SUBMITTED = {Phase.EXITED, Phase.FAILED, Phase.LOST, Phase.SUBMITTING, Phase.CANCELLED}
_NEXT: Mapping[Phase, frozenset[Phase]] = {
    Phase.SUBMITTING: frozenset({Phase.QUEUED, Phase.UNSTARTABLE, Phase.CANCELLED}),
    Phase.QUEUED: frozenset({Phase.RUNNING, Phase.HELD, Phase.UNSTARTABLE, *_FROM_SUBMITTED}),
    Phase.HELD: frozenset({Phase.QUEUED, Phase.RUNNING, *_FROM_SUBMITTED}),
    Phase.RUNNING: frozenset({Phase.QUEUED, Phase.HELD, *_FROM_SUBMITTED}),
    **{phase: frozenset() for phase in TERMINAL},
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the engine or the factory is told, once, when a job is over (never for CANCELLED)."""

    phase: Phase  # EXITED, FAILED, LOST or UNSTARTABLE
    native: str = ""  # the last native id ("" if it was never submitted)
    exit: int | None = None
    signal: int | None = None
    reason: str = ""  # one line: the scheduler's state, reason or message
    hint: str = ""  # what to change, or ""
    retry: bool = True  # False when the same job would fail the same way: -r must not repeat it
    host: str = ""
    start: float | None = None  # Unix seconds
    end: float | None = None
    usage: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Submit:
    """Submit this job (again) now; answer with ``submitted`` or ``submit_failed``."""

    key: Hashable


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel this native id at the scheduler (callers gather these into one command)."""

    key: Hashable
    native: str


@dataclass(frozen=True, slots=True)
class AskFinal:
    """Include this native id in the next ``BatchSystem.final`` query."""

    key: Hashable
    native: str


@dataclass(frozen=True, slots=True)
class Report:
    """The job is over: hand its outcome on. The tracker has forgotten the key."""

    key: Hashable
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Notify:
    """Something to journal or tell the user: queued, running, requeued, lost, held, warning."""

    key: Hashable
    event: str
    native: str
    detail: str = ""


Action = Submit | Cancel | AskFinal | Report | Notify


class _Timer(enum.Enum):
    SUBMIT = "submit"  # a submission backoff is over
    GRACE = "grace"  # a job pending for a reason that cannot clear has waited long enough
    HOLD = "hold"  # a held job has waited long enough


@dataclass(slots=True, eq=False)
class _Job:
    """Everything the tracker knows of one job; compared by identity (timers hold it)."""

    key: Hashable
    phase: Phase
    history: deque[str]
    native: str | None = None  # None while SUBMITTING
    last_native: str = ""
    host: str = ""
    start: float | None = None
    # submission: a Submit is out and unanswered; the backoff and its episode
    asked: bool = False
    submit_due: float | None = None
    backoff: float = 0.0
    first_failure: float | None = None
    unknown_errors: int = 0
    # losses (a requeue counts as one) and whether this queue stay already counted one
    lost: int = 0
    requeue_counted: bool = False
    # timers that are set (None: not running); a stale heap entry does not match
    grace_due: float | None = None
    grace_reason: str = ""
    hold_due: float | None = None
    hold_reason: str = ""
    # poll bookkeeping: polls missed in a row; GONE said since the last poll
    absent: int = 0
    gone: bool = False
    # the scheduler said it ended, no status file yet: its word, and the poll count then
    ended_word: str = ""
    ended_mark: int = 0
    ended_at: float = 0.0
    # a status file showing SIGTERM/SIGKILL, waiting for the scheduler's word
    signalled: Observation | None = None
    signalled_mark: int = 0
    signalled_at: float = 0.0


class BatchTracker:
    """Every job of one run (or one factory), from submission to its one report.

    Timers live in one heap and ``tick`` pops only those due; ``poll_done`` scans
    the submitted jobs once per poll. So the cost of watching a run is one pass
    per poll, whatever the number of jobs (docs/batch.md).
    """

    def __init__(self, *, pending_grace: float = 60.0, hold_timeout: float = 600.0,
                 lost_retries: int = 3, submission_timeout: float = 600.0,
                 unknown_error_limit: int = 3, backoff_first: float = 1.0,
                 backoff_max: float = 60.0, jitter: Callable[[], float] = lambda: 1.0) -> None:
        self.pending_grace = pending_grace
        self.hold_timeout = hold_timeout
        self.lost_retries = lost_retries
        self.submission_timeout = submission_timeout
        self.unknown_error_limit = unknown_error_limit
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self.jitter = jitter
        self._jobs: dict[Hashable, _Job] = {}
        self._by_native: dict[str, _Job] = {}
        self._timers: list[tuple[float, int, _Job, _Timer]] = []
        self._seq = itertools.count()
        self._polls = 0
        self._live: Counter[Phase] = Counter()
        self._over: Counter[Phase] = Counter()

    # ---- queries -------------------------------------------------------------------

    def phase(self, key: Hashable) -> Phase:
        return self._job(key, "phase").phase

    def native(self, key: Hashable) -> str | None:
        """The job's current native id; None while it is being submitted."""
        return self._job(key, "native").native

    def key_of(self, native: str) -> Hashable | None:
        job = self._by_native.get(native)
        return None if job is None else job.key

    def active(self) -> list[str]:
        """Native ids of the jobs submitted and not over: what an abort must cancel."""
        return list(self._by_native)

    def counts(self) -> dict[Phase, int]:
        """Jobs in each live phase now, and how many ended in each terminal phase so far."""
        return {phase: self._over[phase] if phase in TERMINAL else self._live[phase]
                for phase in Phase}

    def history(self, key: Hashable) -> list[str]:
        return list(self._job(key, "history").history)

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, key: object) -> bool:
        return key in self._jobs

    # ---- transitions the caller makes ------------------------------------------------

    def add(self, key: Hashable, now: float) -> list[Action]:
        """A new job: submit it."""
        if key in self._jobs:
            raise self._illegal(self._jobs[key], "add: the key is already tracked")
        job = self._new(key, Phase.SUBMITTING, now, "added")
        job.asked = True
        return [Submit(key)]

    def adopt(self, key: Hashable, native: str, phase: Phase, now: float) -> list[Action]:
        """Recovery: track a job that is already queued, held or running under ``native``."""
        if key in self._jobs:
            raise self._illegal(self._jobs[key], "adopt: the key is already tracked")
        if phase not in (Phase.QUEUED, Phase.RUNNING, Phase.HELD):
            raise TrackerError(f"adopt {key!r}: a job can be adopted queued, running or held, "
                               f"not {phase.value}")
        self._check_native_free(key, native)
        job = self._new(key, phase, now, f"adopted as {native}")
        self._set_native(job, native)
        if phase is Phase.HELD:
            return self._hold(job, "held when adopted", now)
        return []

    def submitted(self, key: Hashable, native: str, now: float) -> list[Action]:
        """Submission worked: the job waits in the scheduler's queue as ``native``."""
        job = self._asked(key, "submitted")
        self._check_native_free(key, native)
        job.asked = False
        job.first_failure = None
        job.unknown_errors = 0
        job.backoff = 0.0
        self._set_native(job, native)
        self._to(job, Phase.QUEUED, now, native)
        return [Notify(key, "queued", native)]

    def submit_failed(self, key: Hashable, error: BatchError, now: float) -> list[Action]:
        """Submission was refused: back off and retry, or give up (docs/batch.md, "When things go wrong")."""
        job = self._asked(key, "submit_failed")
        job.asked = False
        reason = _first_line(error.stderr) or _first_line(str(error))
        if job.first_failure is None:
            job.first_failure = now
        if error.kind == "unknown":
            job.unknown_errors += 1
        if error.kind == "permanent" or job.unknown_errors > self.unknown_error_limit:
            return self._finish(job, Outcome(Phase.UNSTARTABLE, job.last_native, reason=reason,
                                             retry=False), now)
        elapsed = now - job.first_failure
        if elapsed >= self.submission_timeout:
            hint = f"submission still failed after {elapsed:.0f} s: try again when the scheduler answers"
            return self._finish(job, Outcome(Phase.UNSTARTABLE, job.last_native, reason=reason,
                                             hint=hint, retry=False), now)
        job.backoff = min(job.backoff * 2 if job.backoff else self.backoff_first, self.backoff_max)
        job.submit_due = now + job.backoff * self.jitter()
        self._schedule(job, _Timer.SUBMIT, job.submit_due)
        job.history.append(f"{now:.1f} submit failed ({error.kind}): {reason}; "
                           f"retry at {job.submit_due:.1f}")
        return []

    def cancel(self, key: Hashable) -> list[Action]:
        """treadle no longer wants the job: cancel it at the scheduler; it is never reported."""
        job = self._job(key, "cancel")
        native = job.native
        self._to(job, Phase.CANCELLED, None, "cancelled by treadle")
        self._forget(job)
        return [] if native is None else [Cancel(key, native)]

    # ---- what the schedulers say -----------------------------------------------------

    def observe(self, obs: Observation, now: float) -> list[Action]:
        """One observation of one job; ignored when its native id is not (or no longer) tracked."""
        job = self._by_native.get(obs.native)
        if job is None:
            return []
        if obs.state is State.GONE:
            job.gone = True
            return []
        job.gone = False
        job.absent = 0
        job.host = obs.host or job.host
        job.start = obs.start if obs.start is not None else job.start
        word = obs.word.split()[0].upper() if obs.word.strip() else ""
        if word in KILLED_HINTS:
            return self._killed(job, word, obs, now)
        if word in LOST_WORDS:
            return self._lose(job, f"{word}: {obs.reason}" if obs.reason else word, now)
        if word in REQUEUE_WORDS:
            return self._requeued(job, word, now)
        if obs.state is State.ENDED:
            return self._ended(job, word, obs, now)
        if obs.state is State.HELD or (obs.state is State.PENDING and obs.reason in SLURM_HOLDS):
            return self._held(job, obs, now)
        if obs.state is State.PENDING:
            return self._pending(job, obs, now)
        return self._started(job, obs, now)

    def poll_done(self, seen: Collection[str], now: float) -> list[Action]:
        """A poll listed ``seen``: settle jobs waiting on polls, and notice jobs that vanished.

        A job missing from one poll is looked up with ``final``; missing from two
        in a row (and not settled by ``final``) it is lost. A job the scheduler
        said ended without a status file, or whose status file shows a signal the
        scheduler has not explained, is settled after :data:`POLLS_TO_WAIT` polls.
        """
        self._polls += 1
        listed = seen if isinstance(seen, set | frozenset) else set(seen)
        actions: list[Action] = []
        for job in list(self._by_native.values()):
            assert job.native is not None  # only submitted jobs have a native id
            absent = job.gone or job.native not in listed
            job.gone = False
            if job.signalled is not None:
                if self._polls - job.signalled_mark >= POLLS_TO_WAIT and now - job.signalled_at >= SECONDS_TO_WAIT:
                    actions += self._exited(job, job.signalled, now)
                elif absent and job.absent == 0:
                    job.absent = 1
                    actions.append(AskFinal(job.key, job.native))
            elif job.ended_word:
                if self._polls - job.ended_mark >= POLLS_TO_WAIT and now - job.ended_at >= SECONDS_TO_WAIT:
                    actions += self._finish(job, Outcome(
                        Phase.FAILED, job.native, reason=NO_STATUS_FILE.format(native=job.native),
                        host=job.host, start=job.start), now)
            elif not absent:
                job.absent = 0
            else:
                actions += self._vanished(job, now)
        return actions

    def tick(self, now: float) -> list[Action]:
        """Fire the timers due by ``now``: submission backoffs, pending graces, hold timeouts."""
        actions: list[Action] = []
        while self._timers and self._timers[0][0] <= now:
            due, _, job, timer = heapq.heappop(self._timers)
            if self._jobs.get(job.key) is not job:
                continue
            if timer is _Timer.SUBMIT and job.submit_due == due:
                job.submit_due = None
                job.asked = True
                job.history.append(f"{now:.1f} resubmit after backoff")
                actions.append(Submit(job.key))
            elif timer is _Timer.GRACE and job.grace_due == due:
                actions += self._unstartable(job, now)
            elif timer is _Timer.HOLD and job.hold_due == due:
                reason = f"held for {self.hold_timeout:.0f} s ({job.hold_reason})"
                actions += self._lose(job, reason, now, cancel=True)
        return actions

    # ---- the named transitions observations lead to ---------------------------------

    def _started(self, job: _Job, obs: Observation, now: float) -> list[Action]:
        """Running (Slurm RUNNING/COMPLETING, HTCondor 001)."""
        if job.phase is Phase.RUNNING:
            return []
        job.requeue_counted = False
        self._to(job, Phase.RUNNING, now, obs.host)
        assert job.native is not None
        return [Notify(job.key, "running", job.native, obs.host)]

    def _pending(self, job: _Job, obs: Observation, now: float) -> list[Action]:
        """Waiting in the queue: a release, a requeue (PENDING after it ran), or more waiting."""
        if job.phase is Phase.RUNNING or job.signalled is not None:
            return self._requeued(job, obs.word or "PENDING", now)
        if job.phase is Phase.HELD:
            self._released(job, obs, now)
        if obs.reason not in UNCLEARABLE:
            job.grace_due = None
            return []
        if job.grace_due is not None:
            return []
        job.grace_due = now + self.pending_grace
        job.grace_reason = obs.reason
        self._schedule(job, _Timer.GRACE, job.grace_due)
        job.history.append(f"{now:.1f} pending for {obs.reason}: grace until {job.grace_due:.1f}")
        assert job.native is not None
        return [Notify(job.key, "warning", job.native,
                       f"pending for {obs.reason}, which does not clear by waiting: "
                       f"cancelled in {self.pending_grace:.0f} s unless it starts")]

    def _released(self, job: _Job, obs: Observation, now: float) -> None:
        """Held, now waiting again (Slurm release, HTCondor 013): the hold timer stops."""
        self._to(job, Phase.QUEUED, now, f"released ({obs.word or obs.reason})")

    def _vanished(self, job: _Job, now: float) -> list[Action]:
        """Missing from a poll: ask ``final`` the first time, lost the second time in a row."""
        assert job.native is not None
        job.absent += 1
        if job.absent < POLLS_TO_WAIT:
            return [AskFinal(job.key, job.native)]
        return self._lose(job, f"job {job.native} is no longer known to the scheduler", now)

    def _unstartable(self, job: _Job, now: float) -> list[Action]:
        """Pending for a reason that cannot clear, for the whole grace: cancel, fail for good."""
        assert job.native is not None
        cancel = Cancel(job.key, job.native)
        hint = "the scheduler will never start it as asked: change its resources or batch options"
        return [cancel, *self._finish(job, Outcome(Phase.UNSTARTABLE, job.native,
                                                   reason=job.grace_reason, hint=hint,
                                                   retry=False), now)]

    def _held(self, job: _Job, obs: Observation, now: float) -> list[Action]:
        """Held: a hold that would repeat fails the job at once; any other waits ``hold_timeout``."""
        assert job.native is not None
        if obs.hold_subcode == WALL_TIME_SUBCODE:
            failure = self._failure(job, "TIMEOUT", obs, KILLED_HINTS["TIMEOUT"])
        elif obs.hold_code == HOLD_OUT_OF_MEMORY:
            failure = self._failure(job, obs.reason or "memory over the request",
                                    obs, KILLED_HINTS["OUT_OF_MEMORY"])
        elif obs.hold_code in HOLD_TRANSFER:
            failure = self._failure(job, obs.reason or f"file transfer failed (hold code "
                                                       f"{obs.hold_code})", obs, "")
        else:
            return self._hold(job, obs.reason or obs.word or "held", now)
        return [Cancel(job.key, job.native), *self._finish(job, failure, now)]

    def _hold(self, job: _Job, reason: str, now: float) -> list[Action]:
        """Into HELD (once), with a timer: a held job never hangs the run."""
        if job.phase is Phase.HELD and job.hold_due is not None:
            return []
        if job.phase is not Phase.HELD:
            self._to(job, Phase.HELD, now, reason)
        job.hold_due = now + self.hold_timeout
        job.hold_reason = reason
        self._schedule(job, _Timer.HOLD, job.hold_due)
        assert job.native is not None
        return [Notify(job.key, "held", job.native, reason)]

    def _requeued(self, job: _Job, word: str, now: float) -> list[Action]:
        """Back in the queue under the same id: one lost attempt (counted once per queue stay)."""
        if job.phase is not Phase.RUNNING and job.requeue_counted:
            return []
        assert job.native is not None
        notify = Notify(job.key, "requeued", job.native, word)
        if job.lost >= self.lost_retries:
            reason = f"requeued {job.lost + 1} times ({word})"
            return [notify, Cancel(job.key, job.native),
                    *self._finish(job, Outcome(Phase.LOST, job.native, reason=reason,
                                               host=job.host), now)]
        job.lost += 1
        job.requeue_counted = True
        self._clear_waits(job)
        if job.phase is Phase.QUEUED:
            job.history.append(f"{now:.1f} requeued ({word})")
        else:
            self._to(job, Phase.QUEUED, now, f"requeued ({word})")
        return [notify]

    def _ended(self, job: _Job, word: str, obs: Observation, now: float) -> list[Action]:
        """Ended with a word that is neither a kill nor a loss: COMPLETED, FAILED, a status file, 005."""
        verdict = word not in ("", STATUS_WORD)
        if job.signalled is not None and verdict:
            return self._exited(job, job.signalled, now)
        if obs.exit is None and obs.signal is None:
            if job.signalled is None and not job.ended_word:
                job.ended_word = word or "ENDED"
                job.ended_mark = self._polls
                job.ended_at = now
                job.history.append(f"{now:.1f} {job.ended_word}: waiting for its status file")
            return []
        if (not verdict and not job.ended_word and obs.exit is not None and obs.exit > 128
                and obs.signal in SCHEDULER_SIGNALS):
            if job.signalled is None:
                job.signalled_mark = self._polls
                job.signalled_at = now
                job.history.append(f"{now:.1f} status file says signal {obs.signal}: "
                                   f"waiting for the scheduler's word")
            job.signalled = obs
            return []
        return self._exited(job, obs, now)

    def _exited(self, job: _Job, obs: Observation, now: float) -> list[Action]:
        """The command ended by itself, with an exit code or a signal."""
        return self._finish(job, Outcome(
            Phase.EXITED, job.last_native, exit=obs.exit, signal=obs.signal,
            host=obs.host or job.host, start=obs.start if obs.start is not None else job.start,
            end=obs.end, usage=obs.usage), now)

    def _killed(self, job: _Job, word: str, obs: Observation, now: float) -> list[Action]:
        """Killed by the scheduler for a reason that would repeat (TIMEOUT, OUT_OF_MEMORY, DEADLINE)."""
        return self._finish(job, self._failure(job, word, obs, KILLED_HINTS[word]), now)

    def _failure(self, job: _Job, reason: str, obs: Observation, hint: str) -> Outcome:
        """A FAILED outcome, with what a status file already told of the end."""
        told = job.signalled or obs
        return Outcome(Phase.FAILED, job.last_native, exit=told.exit, signal=told.signal,
                       reason=reason, hint=hint, retry=False, host=job.host, start=job.start,
                       end=told.end if told.end is not None else obs.end,
                       usage=told.usage or obs.usage)

    def _lose(self, job: _Job, reason: str, now: float, *, cancel: bool = False) -> list[Action]:
        """Lost (node failure, cancelled behind treadle's back, vanished, held too long).

        Submitted again under the same key while lost retries remain; else LOST.
        """
        native = job.native
        assert native is not None
        actions: list[Action] = [Cancel(job.key, native)] if cancel else []
        actions.append(Notify(job.key, "lost", native, reason))
        if job.lost >= self.lost_retries:
            return actions + self._finish(job, Outcome(Phase.LOST, native, reason=reason,
                                                       host=job.host), now)
        job.lost += 1
        del self._by_native[native]
        job.native = None
        job.host = ""
        job.start = None
        job.requeue_counted = False
        job.absent = 0
        self._clear_waits(job)
        self._to(job, Phase.SUBMITTING, now, f"lost ({reason}): submit again")
        job.asked = True
        return actions + [Submit(job.key)]

    # ---- bookkeeping -----------------------------------------------------------------

    def _new(self, key: Hashable, phase: Phase, now: float, what: str) -> _Job:
        job = _Job(key, phase, deque([f"{now:.1f} {what}: {phase.value}"], maxlen=HISTORY_LENGTH))
        self._jobs[key] = job
        self._live[phase] += 1
        return job

    def _to(self, job: _Job, phase: Phase, now: float | None, detail: str) -> None:
        """The one place a job changes phase; refuses what ``_NEXT`` does not allow."""
        if phase not in _NEXT[job.phase]:
            raise self._illegal(job, f"{job.phase.value} -> {phase.value}")
        when = "" if now is None else f"{now:.1f} "
        job.history.append(f"{when}{job.phase.value} -> {phase.value}"
                           + (f" ({detail})" if detail else ""))
        self._live[job.phase] -= 1
        if phase is not Phase.QUEUED:
            job.grace_due = None
        if phase is not Phase.HELD:
            job.hold_due = None
        if phase in TERMINAL:
            self._over[phase] += 1
        else:
            self._live[phase] += 1
        job.phase = phase

    def _finish(self, job: _Job, outcome: Outcome, now: float) -> list[Action]:
        """Into a reported terminal phase: report once, forget."""
        self._to(job, outcome.phase, now, outcome.reason)
        self._forget(job)
        return [Report(job.key, outcome)]

    def _forget(self, job: _Job) -> None:
        del self._jobs[job.key]
        if job.native is not None:
            del self._by_native[job.native]

    def _set_native(self, job: _Job, native: str) -> None:
        job.native = job.last_native = native
        self._by_native[native] = job

    def _clear_waits(self, job: _Job) -> None:
        """A new run of the job: evidence about the previous one no longer applies."""
        job.signalled = None
        job.ended_word = ""

    def _schedule(self, job: _Job, timer: _Timer, due: float) -> None:
        heapq.heappush(self._timers, (due, next(self._seq), job, timer))

    def _job(self, key: Hashable, doing: str) -> _Job:
        job = self._jobs.get(key)
        if job is None:
            raise TrackerError(f"{doing}: no job {key!r} is tracked "
                               f"(never added, or already reported or cancelled)")
        return job

    def _asked(self, key: Hashable, doing: str) -> _Job:
        """The job, if a Submit for it is out and unanswered."""
        job = self._job(key, doing)
        if job.phase is not Phase.SUBMITTING or not job.asked:
            raise self._illegal(job, f"{doing}: no submission of it was asked")
        return job

    def _check_native_free(self, key: Hashable, native: str) -> None:
        other = self._by_native.get(native)
        if other is not None:
            raise self._illegal(other, f"{native} given to {key!r} is already job {other.key!r}'s")

    def _illegal(self, job: _Job, what: str) -> TrackerError:
        return TrackerError(f"job {job.key!r} ({job.phase.value}): illegal {what}; "
                            f"history: {'; '.join(job.history)}")


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""
