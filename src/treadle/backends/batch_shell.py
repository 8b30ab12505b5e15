"""One engine backend over any batch system: the engine's calls in, the tracker's actions out.

::

    engine ──submit(Job)──▶ BatchShell ──render (subclass)──▶ BatchJob ──round──▶ BatchSystem.submit
    engine ◀──wait()─JobResult──┘   ▲ Report / Submit / Cancel / AskFinal / Notify
                                    └── BatchTracker ◀── harvest() every tick, poll(tag) and final(ids) now and then

The shell holds no opinion about what an observation means (that is the
:class:`~treadle.batch.tracker.BatchTracker`'s, the same for every system) and
runs no command itself (that is the :class:`~treadle.batch.base.BatchSystem`'s).
What it owns is the clock (docs/batch.md, "Tracking"):

* ``submit`` writes nothing to the scheduler: it renders the job and returns a
  handle at once; the next ``wait`` submits everything queued in one round,
  so a thousand ready rules become a few ``sbatch`` calls, not a thousand.
  Rounds are paced by a token bucket (``--submit-rate`` commands per second);
  a "submit limit" refusal caps the jobs in flight at what the scheduler holds
  now, one more per completion.
* ``harvest`` (status files, a user log: no scheduler query) runs every tick;
  ``poll`` (one query for the whole run) runs on an interval that is
  ``--poll-min`` after each submission round and doubles while nothing
  unexpected happens, up to ``--poll-max``. A failed query doubles the
  interval, up to five minutes, and never stops the run.
* cancels are gathered for :data:`CANCEL_GATHER` seconds into one command;
  ``close`` with jobs still in the scheduler makes one ``cancel_tag``.

A job the scheduler lost is resubmitted under the same handle, so the engine
sees one result per handle, as with a lost Work Queue worker.
"""

from __future__ import annotations

import abc
import collections
import os
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from treadle.backends.base import Job, JobResult
from treadle.backends.logs import cap_file
from treadle.batch.base import BatchJob, BatchSystem, Observation, Request, State
from treadle.batch.tracker import (
    SCHEDULER_SIGNALS,
    Action,
    AskFinal,
    BatchTracker,
    Cancel,
    Notify,
    Outcome,
    Phase,
    Report,
    Submit,
)
from treadle.errors import BatchError, UsageError

TICK = 0.25  # seconds between two harvests while wait() blocks: a finished job is seen within this
CANCEL_GATHER = 0.2  # seconds cancels wait for company, so an abort of many jobs is one command
FAILED_POLL_MAX = 300.0  # a scheduler that keeps failing is asked every five minutes at most
PENDING_WARNING_EVERY = 600.0  # seconds between two "N jobs pending for ..." lines
HINT_AFTER = 100  # completions after which the short-rules hint is considered
HINT_MIN_RULES = 500  # ... in runs of more rules than this (a small run is over before it matters)
SHORT_RULE = 60.0  # seconds: a median rule shorter than this pays mostly the scheduler's cadence
ALIVE = {State.PENDING: Phase.QUEUED, State.RUNNING: Phase.RUNNING, State.HELD: Phase.HELD}


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """The options every batch backend shares, named as ``treadle run``'s option table names them.

    Durations in seconds. ``batch_dir`` ``None`` means ``DAGFILE.batch``.
    """

    submission_timeout: float = 600.0
    batch_dir: str | None = None
    submit_rate: float = 10.0
    poll_min: float = 2.0
    poll_max: float = 30.0
    lost_retries: int = 3
    pending_grace: float = 60.0
    hold_timeout: float = 600.0
    keep_batch_logs: str = "failed"  # failed, all or none

    def check(self) -> None:
        """Refuse settings that cannot work together, in one line, before anything is submitted."""
        if self.poll_min <= 0 or self.poll_max < self.poll_min:
            raise UsageError(f"--poll-min ({self.poll_min:g}) must be above 0 and at most --poll-max "
                             f"({self.poll_max:g})")
        if self.keep_batch_logs not in ("failed", "all", "none"):
            raise UsageError(f"--keep-batch-logs must be failed, all or none, not {self.keep_batch_logs!r}")


def request_of(job: Job) -> Request:
    """The batch layer's request for a rule's resources (after category fallback), converted once here."""
    r = job.resources
    return Request(cores=r.cores, memory=r.memory, disk=r.disk, gpus=r.gpus, wall=r.wall_time,
                   procs=r.mpi_processes)


def refused(message: str) -> BatchError:
    """A job the batch system must never be given as it stands (its own ``-B``, its resources).

    Fed to the tracker as a permanent submission error, the rule fails at once
    with ``message``, and ``-r`` does not repeat it.
    """
    return BatchError(message, kind="permanent", stderr=message)


def tracker_for(options: BatchOptions) -> BatchTracker:
    """The tracker a run's options ask for; resubmission backoffs get ±20 % jitter, so retries spread."""
    return BatchTracker(pending_grace=options.pending_grace, hold_timeout=options.hold_timeout,
                        lost_retries=options.lost_retries, submission_timeout=options.submission_timeout,
                        jitter=lambda: random.uniform(0.8, 1.2))


@dataclass(slots=True)
class _Entry:
    """What the shell keeps about one handle until its result is handed over."""

    job: Job | None  # None for a job adopted from a previous engine: it cannot be rendered again
    attempt: int = 0
    queued_at: float = 0.0  # Unix time of the last submission, for a result with no times of its own


class BatchShell(abc.ABC):
    """A :class:`~treadle.backends.base.Backend` built on one batch system and one tracker.

    Subclasses name the backend and say how a job becomes a
    :class:`~treadle.batch.base.BatchJob` (:meth:`render`), where the
    scheduler's log of a native id is (:meth:`log_of`) and which handle an
    observation found at recovery belongs to (:meth:`handle_of`).
    """

    name: ClassVar[str]
    sandboxed: ClassVar[bool]
    runs_in_place: ClassVar[bool] = False
    submit_command: ClassVar[str]  # the program one submission round runs (counted for --submit-rate)

    def __init__(self, system: BatchSystem, tracker: BatchTracker, *, tag: str, first_handle: int,
                 notify: Callable[..., None] | None, options: BatchOptions, rule_count: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.system = system
        self.tracker = tracker
        self.tag = tag
        self.options = options
        self.poll_max = options.poll_max
        self._notify = notify
        self._clock = clock
        self._next_handle = first_handle
        self._entries: dict[int, _Entry] = {}
        self._to_submit: dict[int, None] = {}  # handles waiting for the next round, in order
        self._ready: collections.deque[JobResult] = collections.deque()
        self._ask_final: dict[str, None] = {}
        self._cancels: list[str] = []
        self._cancel_since: float | None = None
        now = clock()
        self._tokens = max(1.0, options.submit_rate)
        self._tokens_at = now
        self._cap: int | None = None  # jobs in flight allowed after a submit-limit refusal
        self._interval = options.poll_min
        self._next_poll = now + options.poll_min
        self._poll_failures = 0
        self._submit_trouble = False  # a submission failed for a moment and the user was told
        self._next_pending_warning = now + PENDING_WARNING_EVERY
        self._durations: list[float] = []
        self._hinted = rule_count <= HINT_MIN_RULES  # nothing to advise a small run
        self._closed = False

    # --- what a subclass provides -------------------------------------------------------

    @abc.abstractmethod
    def render(self, handle: int, job: Job, attempt: int) -> BatchJob:
        """The batch job for this attempt (its script written); ``BatchError`` refuses it for good."""

    @abc.abstractmethod
    def log_of(self, native: str) -> str | None:
        """The scheduler's stdout/stderr file of a job, if it keeps one."""

    @abc.abstractmethod
    def handle_of(self, observation: Observation) -> int | None:
        """The handle a job found at recovery was submitted for (from its label), or ``None``."""

    def keep_job_logs(self, job: Job, native: str) -> str | None:
        """Leave the job's stdout and stderr in the rule's log files, capped; the reason if that failed.

        Where the job writes those files itself (a shared filesystem), only the
        cap is left to apply (docs/batch.md, "Run layout").
        """
        for path in (job.stdout, job.stderr):
            if path is not None:
                try:
                    cap_file(path)
                except OSError as e:
                    return f"could not keep its log {path}: {e.strerror}"
        return None

    def hint_line(self) -> str | None:
        """One line for runs of many short rules, or ``None`` when the system has no better way."""
        return None

    # --- Backend protocol ----------------------------------------------------------------

    def greeting(self) -> str | None:
        return None

    def submit(self, job: Job) -> int:
        """Queue the job for the next submission round; returns its handle at once."""
        handle = self._next_handle
        self._next_handle += 1
        self._entries[handle] = _Entry(job)
        self._run(self.tracker.add(handle, self._clock()))
        return handle

    def wait(self, timeout: float | None) -> JobResult | None:
        """Submit what is queued, then watch until a job ends or ``timeout`` passes (``None``: while any runs)."""
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            self._step(self._clock())
            if self._ready:
                return self._ready.popleft()
            if not self._entries:
                return None
            pause = TICK if deadline is None else min(TICK, deadline - self._clock())
            if pause <= 0:
                return None
            time.sleep(pause)

    def cancel(self, job_id: int) -> None:
        """Forget the job and cancel it at the scheduler (gathered with others); no result is reported."""
        self._to_submit.pop(job_id, None)
        if self._entries.pop(job_id, None) is not None:
            self._run(self.tracker.cancel(job_id))
        if any(r.job_id == job_id for r in self._ready):
            self._ready = collections.deque(r for r in self._ready if r.job_id != job_id)

    def close(self) -> None:
        """Cancel, in one command, everything of the run the scheduler still holds."""
        if self._closed:
            return
        self._closed = True
        if self._cancels or self.tracker.active():
            try:
                self.system.cancel_tag(self.tag)
            except BatchError as e:
                self._warn(f"could not cancel the run's jobs (treadle-{self.tag}): {e}")
        self._cancels.clear()
        self._entries.clear()
        self._to_submit.clear()
        self._ready.clear()

    def recover(self, previous: Mapping[int, str]) -> set[int]:
        """Adopt the jobs a previous engine of this run left queued, running or finished (docs/batch.md, "Recovery").

        One scheduler query and one scan of the finished jobs. A job counts as
        the previous one only if its label names the handle and, when a native
        id was journalled, the ids agree (a restarted test cluster reuses ids).
        Jobs of the run that no handle claims are cancelled.
        """
        now = self._clock()
        alive = self.system.poll(self.tag)
        finished = self.system.harvest()
        adopted: set[int] = set()
        orphans: list[str] = []
        for obs in alive:
            phase = ALIVE.get(obs.state)
            if phase is None:
                continue
            handle = self._claim(obs, previous)
            if handle is None or handle in adopted:
                orphans.append(obs.native)
                continue
            self._adopt(handle, obs.native, phase, now)
            adopted.add(handle)
        for obs in finished:
            handle = self._claim(obs, previous) if obs.state is State.ENDED else None
            if handle is None:
                continue  # earlier news of a job (a replayed log): the scheduler's answer above is newer
            if handle not in adopted:
                self._adopt(handle, obs.native, Phase.RUNNING, now)
                adopted.add(handle)
            self._run(self.tracker.observe(obs, now))
        if orphans:
            try:
                self.system.cancel(orphans)
            except BatchError as e:
                self._warn(f"could not cancel jobs no rule claims ({' '.join(orphans)}): {e}")
        return adopted

    # --- the loop --------------------------------------------------------------------------

    def _step(self, now: float) -> None:
        """One tick: news without a query, a submission round, a poll when due, timers, gathered cancels."""
        self._observe(self.system.harvest(), now)
        if self._to_submit:
            self._submit_round(now)
        if now >= self._next_poll:
            self._poll(now)
        self._run(self.tracker.tick(now))
        if self._cancel_since is not None and now - self._cancel_since >= CANCEL_GATHER:
            self._flush_cancels()

    def _observe(self, observations: Sequence[Observation], now: float) -> None:
        for obs in observations:
            if obs.signal in SCHEDULER_SIGNALS:
                # The scheduler's word decides whether this was a timeout, a preemption or a cancel: ask soon.
                self._interval = self.options.poll_min
                self._next_poll = min(self._next_poll, now + self._interval)
            self._run(self.tracker.observe(obs, now))

    def _submit_round(self, now: float) -> None:
        """Everything queued, in one ``BatchSystem.submit``, as far as the token bucket and a submit cap allow."""
        rate = self.options.submit_rate
        if rate > 0:
            self._tokens = min(max(1.0, rate), self._tokens + (now - self._tokens_at) * rate)
            self._tokens_at = now
            if self._tokens < 1:
                return
        room = len(self._to_submit)
        if self._cap is not None:
            room = max(0, self._cap - len(self.tracker.active()))
        handles = list(self._to_submit)[:room]
        jobs: list[BatchJob] = []
        going: list[int] = []
        for handle in handles:
            del self._to_submit[handle]
            entry = self._entries.get(handle)
            if entry is None or self.tracker.phase(handle) is not Phase.SUBMITTING:
                continue
            if entry.job is None:
                self._lost_after_restart(handle)
                continue
            entry.attempt += 1
            try:
                jobs.append(self.render(handle, entry.job, entry.attempt))
            except BatchError as e:
                self._run(self.tracker.submit_failed(handle, e, now))
                continue
            except OSError as e:
                self._run(self.tracker.submit_failed(handle, refused(f"could not write its job script: {e.strerror}"),
                                                     now))
                continue
            entry.queued_at = time.time()
            going.append(handle)
        if not jobs:
            return
        before = self._submit_calls()
        answers = self.system.submit(jobs)
        if rate > 0:
            self._tokens -= max(1, self._submit_calls() - before)
        for handle, answer in zip(going, answers, strict=True):
            if isinstance(answer, BatchError):
                if _is_submit_limit(answer):
                    self._cap = len(self.tracker.active())
                if answer.kind != "permanent" and not self._submit_trouble:
                    self._submit_trouble = True  # once per outage: a round may hold thousands of jobs
                    self._warn(f"{self.submit_command} failed ({answer.stderr.strip() or answer}); submitting again "
                               f"after a pause, for up to {self.options.submission_timeout:g} s (-S)")
                self._run(self.tracker.submit_failed(handle, answer, now))
            else:
                if self._submit_trouble:
                    self._submit_trouble = False
                    self._warn(f"{self.submit_command} works again")
                self._run(self.tracker.submitted(handle, answer, now))
        self._interval = self.options.poll_min
        self._next_poll = min(self._next_poll, now + self._interval)

    def _submit_calls(self) -> int:
        """Submit commands run so far, where the system counts them (else each round counts as one)."""
        commands: collections.Counter[str] | None = getattr(self.system, "commands", None)
        return commands[self.submit_command] if commands is not None else 0

    def _poll(self, now: float) -> None:
        """One query for the whole run, then one ``final`` for the jobs it no longer lists."""
        if not self.tracker.active() and not self._ask_final:
            self._next_poll = now + self._interval
            return
        try:
            listed = self.system.poll(self.tag)
            self._cancel_doubles(listed)
            actions = self._feed(listed, now)
            actions += self.tracker.poll_done([o.native for o in listed], now)
            self._run(actions)
            if self._ask_final:
                ids = list(self._ask_final)
                self._ask_final.clear()
                final = self._feed(self.system.final(ids), now)
                self._run(final)
                actions += final
        except BatchError as e:
            self._poll_failures += 1
            self._interval = min(max(self._interval, self.options.poll_min) * 2, FAILED_POLL_MAX)
            self._next_poll = now + self._interval
            if self._poll_failures == 1:
                self._warn(f"batch error: {e}; asking again in {self._interval:g} s")
            return
        self._poll_failures = 0
        if now >= self._next_pending_warning:
            self._warn_pending(listed, now)
        if any(_unexpected(a) for a in actions):
            self._interval = self.options.poll_min
        else:
            self._interval = min(self._interval * 2, self.poll_max)
        self._next_poll = now + self._interval

    def _cancel_doubles(self, listed: Sequence[Observation]) -> None:
        """Cancel a second live job of one handle: a submission that timed out may have made its
        job after all, and the handle was submitted again; only the job the tracker follows runs."""
        doubles = [obs.native for obs in listed
                   if obs.state in ALIVE and self.tracker.key_of(obs.native) is None
                   and obs.native not in self._cancels
                   and (handle := self.handle_of(obs)) is not None and handle in self._entries]
        if doubles:
            self._warn(f"cancelling {' '.join(doubles)}: made by a submission that had timed out, "
                       "for rules submitted again since")
            self._cancels.extend(doubles)
            self._cancel_since = self._cancel_since or self._clock()

    def _warn_pending(self, listed: Sequence[Observation], now: float) -> None:
        """Every ten minutes, one line on the jobs still waiting in the queue, by the scheduler's reason."""
        reasons = collections.Counter(o.reason or o.word or "no reason given" for o in listed
                                      if o.state is State.PENDING and self.tracker.key_of(o.native) is not None)
        if not reasons:
            return
        self._next_pending_warning = now + PENDING_WARNING_EVERY
        waiting = sum(reasons.values())
        why = ", ".join(f"{reason}: {n}" for reason, n in reasons.most_common())
        self._warn(f"{waiting} {'job is' if waiting == 1 else 'jobs are'} still pending in {self.name} ({why})")

    def _feed(self, observations: Sequence[Observation], now: float) -> list[Action]:
        actions: list[Action] = []
        for obs in observations:
            actions += self.tracker.observe(obs, now)
        return actions

    def _flush_cancels(self) -> None:
        ids, self._cancels, self._cancel_since = self._cancels, [], None
        try:
            self.system.cancel(ids)
        except BatchError as e:
            self._warn(f"could not cancel {' '.join(ids)}: {e}")

    # --- the tracker's actions ----------------------------------------------------------

    def _run(self, actions: Sequence[Action]) -> None:
        for action in actions:
            if isinstance(action, Submit):
                if action.key in self._entries:
                    self._to_submit[_handle(action)] = None
            elif isinstance(action, Cancel):
                if self._cancel_since is None:
                    self._cancel_since = self._clock()
                self._cancels.append(action.native)
            elif isinstance(action, AskFinal):
                self._ask_final[action.native] = None
            elif isinstance(action, Report):
                self._report(_handle(action), action.outcome)
            elif isinstance(action, Notify):
                self._tell(action)

    def _tell(self, action: Notify) -> None:
        if self._notify is None:
            return
        fields: dict[str, Any] = {"native": action.native}
        if action.event == "running":
            fields["host"] = action.detail
        elif action.event == "warning":
            fields["message"] = action.detail
        elif action.detail:
            fields["reason"] = action.detail
        self._notify(action.key, action.event, **fields)

    def _warn(self, message: str) -> None:
        """A line for the user about the run as a whole (handle 0 names no rule)."""
        if self._notify is not None:
            self._notify(0, "warning", message=message)

    def _report(self, handle: int, outcome: Outcome) -> None:
        """A terminal outcome becomes the engine's :class:`JobResult`; the scheduler's log kept as asked."""
        entry = self._entries.pop(handle, None)
        if entry is None:
            return
        if self._cap is not None:
            self._cap += 1
        job = entry.job
        exited = outcome.phase is Phase.EXITED
        stdout, stderr = (job.stdout, job.stderr) if job is not None else (None, None)
        if not outcome.native:  # never reached the scheduler: no log was ever written
            stdout = stderr = None
        result = JobResult(
            handle,
            exit_code=outcome.exit if exited and outcome.signal is None else None,
            signal=outcome.signal if exited else None,
            error=None if exited else self._why(outcome),
            started=outcome.start or entry.queued_at,
            finished=outcome.end or time.time(),
            stdout=stdout,
            stderr=stderr,
            native=outcome.native or None,
            host=outcome.host or None,
            log=self.log_of(outcome.native) if outcome.native else None,
            reason=outcome.reason or None,
            hint=_with_request(outcome.hint, job) or None,
            retry=outcome.retry,
            usage=dict(outcome.usage),
        )
        if job is not None and outcome.native:
            trouble = self.keep_job_logs(job, outcome.native)
            if trouble is not None:
                result = replace(result, error=trouble)
        result = self._keep_or_drop_log(result)
        if result.succeeded:
            self._count_completion(result)
        self._ready.append(result)

    def _why(self, outcome: Outcome) -> str:
        """The error of a job that did not exit by itself; the scheduler's reason goes beside it, in ``reason``."""
        if outcome.phase is Phase.FAILED:
            return f"stopped by {self.name}"
        if outcome.phase is Phase.LOST:
            return f"lost by {self.name}"
        if outcome.native:
            return f"{self.name} cannot start it"
        return outcome.reason or f"{self.name} refused it"  # refused at submission: the message is the news

    def _keep_or_drop_log(self, result: JobResult) -> JobResult:
        """``--keep-batch-logs``: failed (default) keeps a failed job's scheduler log, all keeps every one."""
        keep = self.options.keep_batch_logs
        if result.log is None or keep == "all" or (keep == "failed" and not result.succeeded):
            return result
        try:
            os.unlink(result.log)
        except OSError:
            pass
        return replace(result, log=None)

    def _count_completion(self, result: JobResult) -> None:
        """After :data:`HINT_AFTER` completions, say once if the rules are too short for one job each."""
        if self._hinted:
            return
        self._durations.append(max(0.0, result.finished - result.started))
        if len(self._durations) < HINT_AFTER:
            return
        self._hinted = True
        line = self.hint_line()
        if line is not None and statistics.median(self._durations) < SHORT_RULE:
            self._warn(line)
        self._durations.clear()

    def _lost_after_restart(self, handle: int) -> None:
        """An adopted job was lost: its rule was rendered by the previous engine, so it fails here and reruns."""
        self._run(self.tracker.cancel(handle))
        self._entries.pop(handle, None)
        self._ready.append(JobResult(handle, error="the job was lost after the engine restarted; run the "
                                                   "workflow again to resubmit it"))

    # --- recovery --------------------------------------------------------------------------

    def _claim(self, obs: Observation, previous: Mapping[int, str]) -> int | None:
        """The previous handle ``obs`` is the job of, or ``None`` (label and journalled id must agree)."""
        handle = self.handle_of(obs)
        if handle is None or handle not in previous:
            return None
        native = previous[handle]
        return handle if native in ("", obs.native) else None

    def _adopt(self, handle: int, native: str, phase: Phase, now: float) -> None:
        self._entries[handle] = _Entry(None, attempt=1, queued_at=time.time())
        self._run(self.tracker.adopt(handle, native, phase, now))


def _with_request(hint: str, job: Job | None) -> str:
    """A hint that names what the rule asked for: ``raise WALL_TIME (was 60 s)``."""
    if job is None or "(" in hint:
        return hint
    resources = job.resources
    if hint == "raise WALL_TIME" and resources.wall_time is not None:
        return f"{hint} (was {resources.wall_time} s)"
    if hint == "raise MEMORY" and resources.memory is not None:
        return f"{hint} (was {resources.memory} MB)"
    return hint


def _handle(action: Submit | Report) -> int:
    """The engine handle an action is about: the shell gives the tracker its int handles as keys."""
    assert isinstance(action.key, int)
    return action.key


def _is_submit_limit(error: BatchError) -> bool:
    """A refusal because the user has too many jobs queued: wait for completions, do not add more."""
    text = error.stderr.lower()
    return "submit limit" in text or "maxsubmit" in text


def _unexpected(action: Action) -> bool:
    """An action that means the scheduler is doing something worth a closer look soon."""
    if isinstance(action, Notify):
        return action.event in ("requeued", "lost", "held")
    return isinstance(action, (Submit, Cancel, AskFinal, Report))
