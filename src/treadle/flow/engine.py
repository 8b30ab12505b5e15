"""The DAG engine: rule states, their transitions, and the main loop.

Every rule is in one of the log's states (waiting, running, complete, failed,
aborted), kept in one ``bytearray``; every change goes through one method of
:class:`Engine` (``_start``, ``_complete``, ``_fail``, ``_abort_rule``,
``reset``), which journals the change before acting on it.

Scheduling is linear in the work done, not in the number of rules. Each rule keeps the number
of its parent rules that are not complete; when that number reaches zero the
rule enters a ready heap ordered by rule id, highest first (the dispatch
order the reference tests depend on). A dispatch pass pops from that heap
while slots and resources allow; a completion touches only the rule's
children. Nothing walks all rules during the run.

The main loop follows the reference's (docs/makeflow.md, 'Garbage collection'): one dispatch pass, one
completion from the remote executor (up to 5 s), one from the local executor
(blocking only when no remote job runs), then the garbage-collection barrier.
"""

from __future__ import annotations

import functools
import heapq
import json
import os
import shlex
import shutil
import signal
import stat
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TextIO

from treadle.backends.base import Backend, FileSpec, Job, JobResult, Resources
from treadle.backends.logs import LOG_CAP
from treadle.errors import TreadleError
from treadle.flow import journal as jr
from treadle.flow.archive import Archive, default_dir, file_sha256, rule_key
from treadle.flow.journal import ABORTED, COMPLETE, FAILED, RUNNING, WAITING, Journal
from treadle.flow.model import DEFAULT_FILE_SIZE_ESTIMATE, Rule, Workflow
from treadle.flow.options import TRANSIENT_EXIT_CODE, TRANSIENT_RETRIES, RunOptions
from treadle.flow.wrappers import Wrapping

REMOTE_WAIT = 5.0  # seconds the loop waits for a remote completion (reference value)
ABORT_POLL = 0.25  # seconds between checks for an abort signal while blocked


@dataclass(slots=True)
class Failure:
    """A rule whose attempts are used up, for the summary."""

    rule: Rule
    exit_code: int | None
    signal: int | None
    reason: str
    attempts: int
    stdout: str | None = None  # the last attempt's log files (the same file over Work Queue)
    stderr: str | None = None
    batch_log: str | None = None  # the batch system's own log of the last attempt's job


@dataclass(slots=True)
class LocalCapacity:
    """What the local executor may use at once (docs/makeflow.md, 'Categories and resources'): jobs, cores, memory MB, disk MB."""

    jobs: int
    cores: int
    memory: int
    disk: int
    used: list[int] = field(default_factory=lambda: [0, 0, 0])


class Graph:
    """The static structure of a workflow: who produces and who consumes each file."""

    def __init__(self, wf: Workflow):
        rules = wf.rules
        n = len(rules)
        producer: dict[str, int] = {}
        outputs: list[tuple[str, ...]] = []
        for r in rules:
            outs = r.targets
            if r.workflow is not None:
                sublog = sublog_name(r)
                if sublog not in outs:
                    outs = (*outs, sublog)
            outputs.append(outs)
            for t in outs:
                producer[t] = r.id
        consumers: dict[str, list[int]] = {}
        parents: list[tuple[int, ...]] = []
        children: list[list[int]] = [[] for _ in range(n)]
        for r in rules:
            ps: list[int] = []
            for s in r.sources:
                consumers.setdefault(s, []).append(r.id)
                p = producer.get(s)
                if p is not None and p != r.id and p not in ps:
                    ps.append(p)
            parents.append(tuple(ps))
            for p in ps:
                children[p].append(r.id)
        self.producer = producer
        self.outputs = outputs
        self.consumers = consumers
        self.parents = parents
        self.children = children
        self.original_inputs = [s for s in consumers if s not in producer]


def sublog_name(rule: Rule) -> str:
    """The log of a nested workflow run by a ``MAKEFLOW`` rule (an extra output of the rule)."""
    return f"{rule.workflow}.{rule.id}.makeflowlog"


def nested_command(rule: Rule, wf_fmt: str, resources: Resources, extra: tuple[str, ...] = ()) -> str:
    """The command that runs a sub-workflow with this same treadle (docs/makeflow.md, 'Sub-workflows')."""
    argv = [sys.executable, "-m", "treadle", "run", "-T", "local", rule.workflow or "", "-l", sublog_name(rule)]
    if wf_fmt in ("json", "jx"):
        argv.append("--jx")
    if rule.workflow_args:
        argv += ["--jx-args", rule.workflow_args]
    for opt, value in (("--local-cores", resources.cores), ("--local-memory", resources.memory), ("--local-disk", resources.disk)):
        if value is not None:
            argv += [opt, str(value)]
    argv += list(extra)
    return shlex.join(argv)


def sandboxed_command(command: str, sources: tuple[str, ...], targets: tuple[str, ...]) -> str:
    """``--sandbox``: the command run in a private temporary directory.

    The inputs are copied in (keeping their relative paths), the command runs
    there, and whatever outputs it made are moved back; the exit status is the
    command's. Written as one shell command so the local backend runs it like
    any other.
    """
    q = shlex.quote
    parts = ['_w="$PWD"; _d=$(mktemp -d) || exit 1;']
    if sources:
        parts.append(f'cp -R --parents -- {" ".join(q(s) for s in sources)} "$_d"/ || exit 1;')
    parts.append(f'(cd "$_d" && exec /bin/sh -c {q(command)}); _s=$?;')
    if targets:
        parts.append(
            f'cd "$_d" && for _f in {" ".join(q(t) for t in targets)}; do if [ -e "$_f" ]; then '
            'mkdir -p "$_w/$(dirname "$_f")" && mv -f -- "$_f" "$_w/$_f"; fi; done; cd "$_w";'
        )
    parts.append('rm -rf -- "$_d"; exit $_s')
    return " ".join(parts)


def job_environment(exported: Mapping[str, str]) -> dict[str, str]:
    """A rule's exported variables plus the ``CORES`` / ``OMP_NUM_THREADS`` defaults (docs/makeflow.md, 'Exported variables')."""
    env = dict(exported)
    cores = env.get("CORES")
    omp = env.get("OMP_NUM_THREADS")
    if omp is not None:
        env["CORES"] = omp
    elif cores is not None:
        env["OMP_NUM_THREADS"] = cores
    else:
        env["CORES"] = env["OMP_NUM_THREADS"] = "1"
    return env


class Out:
    """Where the engine's user-visible lines go (stdout for progress lines, stderr for trouble)."""

    def __init__(self, stdout=None, stderr=None):
        self._stdout = stdout
        self._stderr = stderr

    @property
    def stdout(self):
        return self._stdout or sys.stdout  # looked up late: a live display may redirect it

    @property
    def stderr(self):
        return self._stderr or sys.stderr

    def say(self, line: str) -> None:
        self.stdout.write(line + "\n")

    debug_stream: TextIO | None = None  # set by -d: where debug lines go (the -o file, or stderr)

    def debug(self, message: str) -> None:
        """One timestamped debug line (``-d``); callers test ``debug_stream`` first."""
        if self.debug_stream is None:
            return
        t = time.time()
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(t)) + f".{int(t * 100) % 100:02d}"
        self.debug_stream.write(f"{stamp} treadle[{os.getpid()}] debug: {message}\n")
        self.debug_stream.flush()

    def warn(self, line: str) -> None:
        self.stdout.flush()
        self.stderr.write(line + "\n")
        self.stderr.flush()

    def flush(self) -> None:
        self.stdout.flush()


class Engine:
    """Runs one workflow's rules through up to two executors, journalling every change."""

    def __init__(
        self,
        wf: Workflow,
        opts: RunOptions,
        journal: Journal,
        identities: list[str],
        states: bytearray,
        *,
        out: Out | None = None,
        graph: Graph | None = None,
        touch_files: bool = True,
        local: Backend | None = None,
        remote: Backend | None = None,
        max_remote: int = 0,
        capacity: LocalCapacity | None = None,
        check_outputs: bool = True,
        progress: Callable[[list[int]], None] | None = None,
        on_file_complete: Callable[[str], None] | None = None,
        gc_tick: Callable[[Engine], None] | None = None,
    ):
        """``local`` runs local rules (none: the engine only recovers or cleans); ``remote``,
        when given, runs the others, at most ``max_remote`` at once; ``capacity`` bounds
        the local ones. ``check_outputs`` false trusts every job (the dry run).
        ``progress`` gets the five state counts on each change; ``on_file_complete``
        and ``gc_tick`` are the garbage collector's hooks (see :mod:`treadle.flow.gc`).
        """
        self.wf = wf
        self.rules = wf.rules
        self.opts = opts
        self.journal = journal
        self.identities = identities
        self.graph = graph or Graph(wf)
        self.out = out or Out()
        self.touch_files = touch_files  # false in a dry run: nothing on disk changes
        self.state = states
        self.counts = [0, 0, 0, 0, 0]
        for s in states:
            self.counts[s] += 1
        self.local = local
        self.remote = remote
        self.capacity = capacity or LocalCapacity(1, 1, 0, 0)
        self.max_remote = max_remote
        self.check_outputs = check_outputs
        self.progress = progress
        self.on_file_complete = on_file_complete  # GC hook
        self.gc_tick = gc_tick  # called with the engine once per loop iteration
        self.files_created = 0  # files that reached state 2 in this run (for GC on_demand)
        self.failures: list[Failure] = []
        self.aborted = False
        self._abort_requested = False
        self.attempts: dict[int, int] = {}
        self._pending: list[int] = []
        self._remaining: dict[str, int] = {}  # generated file -> consumers not complete
        self._file_state: dict[str, int] = {}
        self._ready: dict[tuple, list[int]] = {}
        self._key_of: Callable[[Rule], tuple] = lambda r: (True, None)
        self._running: dict[tuple[bool, int], int] = {}  # (local?, job id) -> rule id
        self.adopted: set[int] = set()  # rules a batch backend took over from the previous engine
        self._running_local = 0
        self._running_remote = 0
        self._fingerprinted: set[str] = set()
        self._env_cache: dict[int, tuple[Mapping[str, str], dict[str, str]]] = {}
        self._commands: dict[int, str] = {}
        self.wrapping = Wrapping.from_options(opts)
        self.logs_dir = opts.resolved_logs_dir()
        self._logs_dir_made = False
        archiving = (opts.archive_read or opts.archive_write) and touch_files
        self.archive = Archive(opts.archive_dir or default_dir()) if archiving else None
        self._archive_keys: dict[int, str] = {}  # running rule -> its key, to store its outputs under
        self._input_digests: dict[str, str | None] = {}  # original inputs: they do not change during a run
        self._restored = False  # a dispatch pass restored a rule from the archive (its children may be ready)

    # --- set-up --------------------------------------------------------------------------

    def set_file_states(self, states: Mapping[str, int]) -> None:
        """File states as recovered from the log (generated files only matter)."""
        self._file_state = dict(states)

    def prepare(self) -> None:
        """Compute dependency counts, consumer counts and the ready set from the current states.

        Called once after recovery. A complete rule whose parent is not
        complete is not done (docs/makeflow.md, 'Recovery') and is reset first.
        """
        g = self.graph
        state = self.state
        producer = g.producer
        # A rule that will run needs its generated inputs: one that garbage collection or a
        # clean removed is made again by resetting its producer (upstream, recursively).
        stack = [i for i, s in enumerate(state) if s != COMPLETE]
        while stack:
            rid = stack.pop()
            for s in self.rules[rid].sources:
                p = producer.get(s)
                if p is not None and state[p] == COMPLETE and not os.path.lexists(s):
                    self.reset(p)
                    stack.append(p)
        stack = [i for i, s in enumerate(state) if s != COMPLETE]
        while stack:
            rid = stack.pop()
            for c in g.children[rid]:
                if state[c] == COMPLETE:
                    self.reset(c)
                    stack.append(c)
        self._pending = [sum(1 for p in ps if state[p] != COMPLETE) for ps in g.parents]
        remaining: dict[str, int] = {}
        for f, cons in g.consumers.items():
            if f in producer:
                remaining[f] = sum(1 for c in cons if state[c] != COMPLETE)
        self._remaining = remaining
        self._key_of = self._make_key_function()
        for r in self.rules:
            if state[r.id] == WAITING and self._pending[r.id] == 0:
                self._push_ready(r)
        if self.on_file_complete is not None:
            for f, n in remaining.items():
                if n == 0 and state[producer[f]] == COMPLETE and self._file_state.get(f) in (jr.F_EXISTS, jr.F_COMPLETE):
                    self.on_file_complete(f)

    def _make_key_function(self) -> Callable[[Rule], tuple]:
        """Rules are grouped for dispatch by executor and declared resources.

        Grouping keeps a dispatch pass linear: when one rule of a group does
        not fit, no rule of that group fits, so the whole group is skipped
        for the rest of the pass.
        """
        wf = self.wf
        remote = self.remote is not None
        packing = any(not c.resources.is_empty() for c in wf.categories.values()) or any(
            not r.resources.is_empty() for r in self.rules
        )

        def key(rule: Rule) -> tuple:
            # A nested workflow runs this same treadle, which exists only here.
            is_local = not remote or rule.local or rule.workflow is not None
            if not packing or not is_local:
                return (is_local, None)
            res = wf.resources_of(rule)
            return (True, (res.cores, res.memory, res.disk))

        return key

    def _push_ready(self, rule: Rule) -> None:
        key = self._key_of(rule)
        heap = self._ready.get(key)
        if heap is None:
            heap = self._ready[key] = []
        heapq.heappush(heap, -rule.id)

    # --- transitions ---------------------------------------------------------------------

    def _change(self, rid: int, new: int, job_id: int) -> None:
        """Record a rule's new state in memory and in the journal (flushed by the caller)."""
        counts = self.counts
        counts[self.state[rid]] -= 1
        counts[new] += 1
        self.state[rid] = new
        self.journal.rule_record(rid, self.identities[rid], new, job_id, counts)

    def reset(self, rid: int, quiet: bool = False) -> None:
        """Make a rule and everything downstream of it waiting again, deleting their outputs."""
        stack = [rid]
        g = self.graph
        while stack:
            r = stack.pop()
            if self.state[r] == WAITING:
                continue
            # Journal first: if we die before the files are gone, the rule simply runs again.
            self._change(r, WAITING, 0)
            self.journal.flush()
            for name in g.outputs[r]:
                self.delete_file(name, quiet=quiet)
            if self.out.debug_stream is not None:
                self.out.debug(f"rule {r} reset to waiting")
            stack.extend(reversed(g.children[r]))
        self.journal.flush()

    def forget(self, rid: int) -> None:
        """complete -> waiting, without touching files: its outputs were removed on purpose (clean)."""
        if self.state[rid] != WAITING:
            self._change(rid, WAITING, 0)

    def delete_file(self, name: str, quiet: bool = False) -> int:
        """Delete a file or directory, say so, and journal it as deleted (said even if it was already absent, as the reference does)."""
        try:
            st = os.lstat(name)
        except OSError:
            st = None
        size = st.st_size if st is not None else 0
        # Journal first: a file logged as deleted but still there is harmless; a file
        # gone but still logged as made would look deleted by someone else next run.
        self.journal.file_record(name, jr.F_DELETE, size)
        self.journal.flush()
        self._file_state[name] = jr.F_DELETE
        if self.touch_files and st is not None:
            try:
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(name, ignore_errors=True)
                else:
                    os.unlink(name)
            except FileNotFoundError:
                pass
            except OSError as e:
                self.out.warn(f"could not delete {name}: {e.strerror}")
        if not quiet:
            self.out.say(f"deleted {name}")
        return size

    def _start(self, rid: int, is_local: bool) -> None:
        """waiting -> running: journal the expected outputs, start the job, journal its id."""
        rule = self.rules[rid]
        j = self.journal
        sizes = self.wf.sizes
        for name in self.graph.outputs[rid]:
            j.file_record(name, jr.F_EXPECT, sizes.get(name, DEFAULT_FILE_SIZE_ESTIMATE))
        producer = self.graph.producer
        for s in rule.sources:
            if s not in producer and s not in self._fingerprinted:
                self._fingerprint(s)
        # These records reach the log with the rule line below, in one write: the
        # transition is journalled once the job has an id, before anything acts on it.
        # A crash in between leaves the rule waiting in the log, so it simply runs again.
        command = self.command_of(rule)
        if self.archive is not None and rule.workflow is None and self._from_archive(rule, command):
            return
        self.out.say(f"submitting job: {command}")
        backend = self.local if is_local else self.remote
        assert backend is not None  # a rule is keyed remote only when a remote backend exists
        run = command
        in_place = is_local and backend.runs_in_place
        wrapped = self.wrapping and rule.workflow is None
        if wrapped:
            run = self.wrapping.command(rid, command, self.environment_of(rule))
        if self.opts.sandbox and in_place and rule.workflow is None:
            sources = rule.sources + tuple(d for d, _ in self.wrapping.input_files(rid))
            targets = self.graph.outputs[rid] + tuple(d for d, _ in self.wrapping.output_files(rid))
            run = sandboxed_command(run, sources, targets)
        logs = self._log_paths(rid) if self.touch_files else (None, None)
        job = self._job(rule, run, full=not in_place, logs=logs, wrapped=bool(wrapped))
        try:
            if logs[0] is not None and not self._logs_dir_made:
                os.makedirs(self.logs_dir, exist_ok=True)
                self._logs_dir_made = True
            job_id = backend.submit(job)
        except (OSError, TreadleError) as e:  # TreadleError: a job the backend refuses (a path too long for wq)
            why = e.strerror if isinstance(e, OSError) else str(e)
            self.out.say("submitted job -1")
            self._change(rid, RUNNING, -1)
            self._fail(rid, JobResult(-1, error=f"could not start job: {why}"), f"{command} could not be started: {why}")
            return
        self.out.say(f"submitted job {job_id}")
        if self.out.debug_stream is not None:
            self.out.debug(f"rule {rid} ({rule.where}) submitted to {backend.name} as job {job_id}: {job.command}")
        self._change(rid, RUNNING, job_id)
        j.flush()
        self._running[(is_local, job_id)] = rid
        if is_local:
            self._running_local += 1
            res = self._res_key(rid)
            if res is not None:
                used = self.capacity.used
                for i, v in enumerate(res):
                    used[i] += v or 0
        else:
            self._running_remote += 1
        if self.progress is not None:
            self.progress(self.counts)

    def adopt(self, rid: int, handle: int, native: str) -> None:
        """A job of the previous engine still runs (or has finished) at the batch system: track it, do not resubmit.

        The rule is logged running in this segment under the same handle, so a
        second crash finds it again.
        """
        self.adopted.add(rid)
        self.out.say(f"adopting job {handle}{f' ({native})' if native else ''}: {self.command_of(self.rules[rid])}")
        # The state is already RUNNING (from the log); count it out and back in so the record is written.
        self.journal.rule_record(rid, self.identities[rid], RUNNING, handle, self.counts)
        if native:
            self.journal.job_record(handle, native)
        self.journal.flush()
        self._running[(False, handle)] = rid
        self._running_remote += 1

    def backend_event(self, handle: int, event: str, **fields: object) -> None:
        """What a batch backend reports about a job on the way (``BackendConfig.notify``).

        ``queued`` journals the job's native id at once: a crashed engine's
        successor finds the job by it. Trouble worth a user's attention
        (lost, requeued, held, warnings) becomes one line on stderr.
        """
        native = fields.get("native")
        if event == "queued" and native:
            self.journal.job_record(handle, str(native))
            self.journal.flush()
            return
        rid = self._running.get((False, handle))
        where = f" (rule {self.rules[rid].where})" if rid is not None else ""
        job = f"job {handle}{f' ({native})' if native else ''}{where}"
        if event == "warning":
            self.out.warn(f"warning: {fields.get('message', '')}")
        elif event == "lost":
            self.out.warn(f"{job} was lost: {fields.get('reason', '')}; submitting it again")
        elif event == "requeued":
            self.out.warn(f"{job} was requeued by the batch system")
        elif event == "held":
            self.out.warn(f"{job} is held: {fields.get('reason', '')}")
        elif self.out.debug_stream is not None:
            self.out.debug(f"{job}: {event} {fields}")

    def _finish(self, is_local: bool, result: JobResult) -> None:
        """A job ended: check its outputs and move its rule to complete or failed."""
        rid = self._running.pop((is_local, result.job_id), None)
        if rid is None:
            return
        if is_local:
            self._running_local -= 1
            res = self._res_key(rid)
            if res is not None:
                used = self.capacity.used
                for i, v in enumerate(res):
                    used[i] -= v or 0
        else:
            self._running_remote -= 1
        self.out.say(f"job {result.job_id} completed")
        if self.out.debug_stream is not None:
            self.out.debug(
                f"rule {rid} job {result.job_id} ended: exit {result.exit_code} signal {result.signal} "
                f"error {result.error} after {result.finished - result.started:.3f} s"
            )
        if not result.succeeded:
            self._fail(rid, result, self._failure_text(rid, result))
            return
        sizes = self._check_outputs(rid)
        if isinstance(sizes, str):
            self._fail(rid, result, sizes)
            return
        key = self._archive_keys.pop(rid, None)
        if key is not None and self.archive is not None:
            why = self.archive.store(key, self.graph.outputs[rid])
            if why is not None:
                self.out.warn(f"rule {rid} was not archived: {why}")
        self._complete(rid, result, sizes)

    def _complete(self, rid: int, result: JobResult, sizes: list[int]) -> None:
        """running -> complete; then release the children whose last parent this was."""
        j = self.journal
        g = self.graph
        fstate = self._file_state
        for name, size in zip(g.outputs[rid], sizes, strict=True):
            j.file_record(name, jr.F_EXISTS, size)
            fstate[name] = jr.F_EXISTS
        self.files_created += len(sizes)
        remaining = self._remaining
        finished: list[str] = []
        for s in self.rules[rid].sources:
            n = remaining.get(s)
            if n is not None:
                n -= 1
                remaining[s] = n
                if n == 0 and fstate.get(s) == jr.F_EXISTS:
                    j.file_record(s, jr.F_COMPLETE, _size(s))
                    fstate[s] = jr.F_COMPLETE
                    finished.append(s)
        self._change(rid, COMPLETE, result.job_id)
        j.flush()
        if not self.opts.keep_logs:
            for log in (result.stdout, result.stderr):
                if log is not None:
                    _remove(log)
        pending = self._pending
        rules = self.rules
        for c in g.children[rid]:
            pending[c] -= 1
            if pending[c] == 0 and self.state[c] == WAITING:
                self._push_ready(rules[c])
        if self.on_file_complete is not None:
            for name, _ in zip(g.outputs[rid], sizes, strict=True):
                if remaining.get(name, 0) == 0:
                    self.on_file_complete(name)
            for s in finished:
                self.on_file_complete(s)
        if self.progress is not None:
            self.progress(self.counts)

    def _fail(self, rid: int, result: JobResult, reason: str) -> None:
        """running -> failed, then back to waiting if a retry is due.

        The attempt's stdout/stderr logs are always kept; a failed-output
        directory that cannot be written (a full disk) adds its reason to the
        rule's, and the run goes on.
        """
        rule = self.rules[rid]
        self.out.warn(reason)
        failed_dir = f"makeflow.failed.{rid}"
        if self.opts.save_failed_output:
            self.out.warn(f"rule {rid} failed, moving any outputs to {failed_dir}")
            if os.path.lexists(failed_dir):
                shutil.rmtree(failed_dir, ignore_errors=True)
                self.journal.file_record(failed_dir, jr.F_DELETE, 0)
            self.journal.file_record(failed_dir, jr.F_COMPLETE, 0)
        self._change(rid, FAILED, result.job_id)
        self.journal.flush()
        if self.touch_files:
            if self.opts.save_failed_output:
                trouble = self._save_failed(rule, failed_dir, result)
                if trouble is not None:
                    self.out.warn(trouble)
                    reason = f"{reason}; {trouble}"
            else:
                for name in self.graph.outputs[rid]:
                    _remove(name)
        attempts = self.attempts.get(rid, 0) + 1
        self.attempts[rid] = attempts
        allowed = self.opts.retries
        if result.exit_code == TRANSIENT_EXIT_CODE:
            allowed = max(allowed, TRANSIENT_RETRIES)
        if attempts <= allowed and result.retry and not self._abort_requested:
            self._change(rid, WAITING, 0)
            self.journal.flush()
            self._push_ready(rule)
        else:
            self.failures.append(
                Failure(rule, result.exit_code, result.signal, reason, attempts, result.stdout, result.stderr,
                        result.log)
            )
        if self.progress is not None:
            self.progress(self.counts)

    def _abort_rule(self, rid: int, job_id: int) -> None:
        """running -> aborted: journal it, then delete what the job left behind."""
        self._change(rid, ABORTED, job_id)
        self.journal.flush()
        for name in self.graph.outputs[rid]:
            self.delete_file(name)

    # --- the main loop -------------------------------------------------------------------

    def run(self) -> None:
        """Run until nothing runs and nothing can start, or until an abort signal."""
        try:
            self._loop()
        finally:
            if self._logs_dir_made:
                try:
                    os.rmdir(self.logs_dir)  # only when empty: every rule succeeded and kept no log
                except OSError:
                    pass

    def _loop(self) -> None:
        gc_tick = self.gc_tick
        while True:
            if self._abort_requested:
                self._abort()
                return
            self._restored = False
            self._dispatch()
            if not self._running:
                if self._restored:
                    continue  # restored rules released children that a new pass may start
                return
            early: JobResult | None = None
            if self._running_remote:
                # A local completion cuts the remote wait short, so local rules never
                # sit finished for seconds while remote ones run.
                result, early = self._wait_remote()
                if result is not None:
                    self._finish(False, result)
            if self._running_local:
                block = self._running_remote == 0
                result = early or self._wait(self.local, None if block else 0.0)
                if result is not None:
                    self._finish(True, result)
            if gc_tick is not None:
                gc_tick(self)

    def _wait_remote(self) -> tuple[JobResult | None, JobResult | None]:
        """(remote result, local result): up to ``REMOTE_WAIT`` for a remote completion."""
        deadline = time.monotonic() + REMOTE_WAIT
        while not self._abort_requested:
            left = min(ABORT_POLL, deadline - time.monotonic())
            if left <= 0:
                break
            result = self.remote.wait(left)  # type: ignore[union-attr]  # called only with a remote backend
            if result is not None:
                return result, None
            if self._running_local:
                local = self.local.wait(0.0)  # type: ignore[union-attr]  # a local job runs, so a local backend
                if local is not None:
                    return None, local
        return None, None

    def _wait(self, backend: Backend | None, timeout: float | None) -> JobResult | None:
        """One completion, waiting at most ``timeout`` (None: until one), reacting to abort fast."""
        assert backend is not None
        if timeout == 0.0:
            return backend.wait(0.0)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._abort_requested:
            left = ABORT_POLL if deadline is None else min(ABORT_POLL, deadline - time.monotonic())
            if left <= 0:
                return None
            result = backend.wait(left)
            if result is not None:
                return result
        return None

    def _dispatch(self) -> None:
        """Submit ready rules, highest id first, while slots and resources allow."""
        ready = self._ready
        if not ready:
            return
        if len(ready) == 1:
            (key, heap), = ready.items()
            while heap and self._fits(key):
                self._start(-heapq.heappop(heap), key[0])
            return
        cand = [(heap[0], key) for key, heap in ready.items() if heap]
        heapq.heapify(cand)
        while cand:
            top, key = heapq.heappop(cand)
            if not self._fits(key):
                continue
            heap = ready[key]
            heapq.heappop(heap)
            self._start(-top, key[0])
            if heap:
                heapq.heappush(cand, (heap[0], key))

    def _fits(self, key: tuple) -> bool:
        is_local, res = key
        if not is_local:
            return self._running_remote < self.max_remote
        cap = self.capacity
        if self._running_local >= cap.jobs:
            return False
        if res is None:
            return True
        limits = (cap.cores, cap.memory, cap.disk)
        for want, used, limit in zip(res, cap.used, limits, strict=True):
            if want and used + want > limit and used > 0:
                return False
        return True

    def _res_key(self, rid: int) -> tuple | None:
        key = self._key_of(self.rules[rid])
        return key[1]

    def request_abort(self) -> None:
        """Called from a signal handler: the loop notices within ``ABORT_POLL`` seconds."""
        self._abort_requested = True

    def _abort(self) -> None:
        self.out.say("got abort signal...")
        running = list(self._running.items())
        for (is_local, job_id), _rid in running:
            self.out.say(f"aborting {'local' if is_local else 'remote'} job {job_id}")
            backend = self.local if is_local else self.remote
            if backend is not None:
                backend.cancel(job_id)
        for backend in (self.local, self.remote):
            if backend is not None:
                backend.close()
        for (_is_local, job_id), rid in running:
            self._abort_rule(rid, job_id)
        self._running.clear()
        self._running_local = self._running_remote = 0
        self.aborted = True

    # --- helpers -------------------------------------------------------------------------

    def command_of(self, rule: Rule, extra: tuple[str, ...] = ()) -> str:
        """The command a rule runs (a nested treadle for ``MAKEFLOW`` rules)."""
        if rule.workflow is None:
            return rule.command
        cmd = self._commands.get(rule.id) if not extra else None
        if cmd is None:
            cmd = nested_command(rule, self.opts.fmt, self.wf.resources_of(rule), extra)
            if not extra:
                self._commands[rule.id] = cmd
        return cmd

    def environment_of(self, rule: Rule) -> dict[str, str]:
        """The variables a rule's job gets on top of the engine's environment (one dict per mapping)."""
        src = rule.environment
        hit = self._env_cache.get(id(src))
        if hit is not None and hit[0] is src:
            return hit[1]
        env = job_environment(src)
        if rule.workflow is not None:
            env["TREADLE_NESTED"] = "1"
        else:
            self._env_cache[id(src)] = (src, env)
        return env

    def _log_paths(self, rid: int) -> tuple[str, str]:
        """This attempt's stdout and stderr files: ``<logs dir>/<rule id>.<attempt>.out`` / ``.err``.

        Attempts count from 1 within one run of the engine; a later run of the
        same workflow reuses the names.
        """
        stem = os.path.join(self.logs_dir, f"{rid}.{self.attempts.get(rid, 0) + 1}")
        return f"{stem}.out", f"{stem}.err"

    def _job(self, rule: Rule, command: str, full: bool, logs: tuple[str | None, str | None],
             wrapped: bool = False) -> Job:
        """The one place a rule becomes a ``Job``; ``wrapped`` adds the wrapper files to a full job."""
        env = self.environment_of(rule)
        stdout, stderr = logs
        if not full:
            return Job(rule.id, command, environment=env, stdout=stdout, stderr=stderr)
        inputs = [FileSpec(s, rule.remote_name(s)) for s in rule.sources]
        outputs = [FileSpec(t, rule.remote_name(t)) for t in self.graph.outputs[rule.id]]
        if wrapped:
            inputs += [FileSpec(d, t) for d, t in self.wrapping.input_files(rule.id)]
            outputs += [FileSpec(d, t) for d, t in self.wrapping.output_files(rule.id)]
        return Job(
            rule.id,
            command,
            inputs=tuple(inputs),
            outputs=tuple(outputs),
            resources=self.wf.resources_of(rule),
            environment=env,
            category=rule.category,
            batch_options=rule.batch_options or self.opts.batch_options,
            stdout=stdout,
            stderr=stderr,
        )

    def _from_archive(self, rule: Rule, command: str) -> bool:
        """``--archive``: restore the rule's outputs instead of running it; True when it is now complete.

        Also remembers the rule's key when ``--archive-write`` will store its
        outputs after it succeeds. A rule with an input that is not a regular
        file (a directory) is neither restored nor stored.
        """
        assert self.archive is not None
        inputs: list[tuple[str, str]] = []
        producer = self.graph.producer
        for s in rule.sources:
            if s in producer:
                digest = file_sha256(s)
            else:
                if s not in self._input_digests:
                    self._input_digests[s] = file_sha256(s)
                digest = self._input_digests[s]
            if digest is None:
                return False
            inputs.append((s, digest))
        rid = rule.id
        outputs = self.graph.outputs[rid]
        key = rule_key(command, rule.environment, self.opts.container_image, outputs, inputs)
        if self.opts.archive_write:
            self._archive_keys[rid] = key
        if not self.opts.archive_read:
            return False
        why = self.archive.restore(key, outputs)
        if why is not None:
            if why != "not in the archive":
                self.out.warn(f"rule {rid} not restored from the archive {self.archive.root}: {why}; running it")
            elif self.out.debug_stream is not None:
                self.out.debug(f"rule {rid} not in the archive (key {key})")
            return False
        self._archive_keys.pop(rid, None)
        self.out.say(f"restored from archive: {command}")
        self.journal.line(f"# ARCHIVE {jr.now_us()} {rid} restored {key}")
        self._change(rid, RUNNING, 0)
        self._restored = True
        self._complete(rid, JobResult(0, exit_code=0), [_size(name) for name in outputs])
        return True

    def _check_outputs(self, rid: int) -> list[int] | str:
        """Sizes of the rule's outputs, or the reason the rule failed (a missing output)."""
        if not self.check_outputs:
            return [0] * len(self.graph.outputs[rid])
        sizes = []
        deadline = time.monotonic() + self.opts.wait_for_files
        zero_bad = self.opts.zero_length_error
        for name in self.graph.outputs[rid]:
            while True:
                try:
                    st = os.stat(name)
                    if not (zero_bad and st.st_size == 0 and not os.path.isdir(name)):
                        sizes.append(st.st_size)
                        break
                except OSError:
                    pass
                if time.monotonic() >= deadline:
                    return f"{self.command_of(self.rules[rid])} did not create file {name}"
                time.sleep(0.1)
        return sizes

    def _failure_text(self, rid: int, result: JobResult) -> str:
        command = self.command_of(self.rules[rid])
        if result.error is not None:
            text = f"{command} failed: {result.error}"
        elif result.signal is not None:
            text = f"{command} crashed with signal {result.signal} ({_signame(result.signal)})"
        else:
            text = f"{command} failed with exit code {result.exit_code}"
        return text + _batch_details(self.rules[rid], result)

    def _save_failed(self, rule: Rule, failed_dir: str, result: JobResult) -> str | None:
        """Move the rule's outputs into ``failed_dir`` with its logs and ``INFO.json``.

        ``INFO.json`` names the attempt's log files (``stdout``, ``stderr``: the
        same file over Work Queue, said by ``stderr_in_stdout``) and the copies
        kept beside it (``INFO.stdout``, ``INFO.stderr``: hard links where the
        filesystem allows), so the directory is complete on its own. Returns why
        it could not be written (a full disk), or ``None``.
        """
        try:
            os.mkdir(failed_dir)
        except OSError as e:
            return f"could not create {failed_dir}: {e.strerror}"
        info_path = os.path.join(failed_dir, "INFO.json")
        try:
            outputs = []
            for name in self.graph.outputs[rule.id]:
                try:
                    size = os.lstat(name).st_size
                except OSError:
                    continue
                dest = os.path.join(failed_dir, name.lstrip("/"))
                os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
                try:
                    os.rename(name, dest)
                except OSError:
                    shutil.move(name, dest)
                outputs.append({"size": size, "dag_name": name})
            info = {
                "exit_code": result.exit_code if result.signal is None else -result.signal,
                "command": self.command_of(rule),
                "inputs": list(rule.sources),
                "outputs": outputs,
                "environment": self.environment_of(rule),
                "stdout": result.stdout,
                "stderr": result.stderr,
                "stderr_in_stdout": result.stderr is not None and result.stderr == result.stdout,
                "log_cap_bytes": LOG_CAP,
            }
            for key, log in (("stdout", result.stdout), ("stderr", result.stderr)):
                if log is not None and os.path.exists(log) and (key == "stdout" or log != result.stdout):
                    info[f"{key}_copy"] = _link_or_copy(log, os.path.join(failed_dir, f"INFO.{key}"))
            with open(info_path, "w", encoding="utf-8", errors="surrogateescape") as f:
                json.dump(info, f, indent=2)
        except OSError as e:
            _remove(info_path)  # a half-written INFO.json is worse than none
            return f"could not save the failed rule's files in {failed_dir}: {e.strerror}"
        return None

    def _fingerprint(self, name: str) -> None:
        """Write the ``# SOURCE`` record of an original input (docs/makeflow.md, 'The log') the first time it is read."""
        self._fingerprinted.add(name)
        fp = fingerprint(name, self.opts.checksum_sources)
        if fp is not None:
            self.journal.source_record(name, *fp)

    @property
    def not_run(self) -> int:
        return self.counts[WAITING]


def fingerprint(name: str, checksum: bool) -> tuple[int, int, str | None] | None:
    """(size, mtime_ns, sha256 or None) of a file, or of a whole directory tree."""
    import hashlib

    try:
        st = os.stat(name)
    except OSError:
        return None
    if not os.path.isdir(name):
        digest = None
        if checksum:
            h = hashlib.sha256()
            with open(name, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            digest = h.hexdigest()
        return st.st_size, st.st_mtime_ns, digest
    size, mtime = 0, st.st_mtime_ns
    tree_hash = hashlib.sha256() if checksum else None
    for root, dirs, files in os.walk(name):
        dirs.sort()
        for fn in sorted(files):
            p = os.path.join(root, fn)
            try:
                fst = os.stat(p)
            except OSError:
                continue
            size += fst.st_size
            mtime = max(mtime, fst.st_mtime_ns)
            if tree_hash is not None:
                tree_hash.update(os.path.relpath(p, name).encode("utf-8", "surrogateescape") + b"\0")
                with open(p, "rb") as f:
                    for block in iter(functools.partial(f.read, 1 << 20), b""):
                        tree_hash.update(block)
        for d in dirs:
            try:
                mtime = max(mtime, os.stat(os.path.join(root, d)).st_mtime_ns)
            except OSError:
                pass
    return size, mtime, tree_hash.hexdigest() if tree_hash is not None else None


def _size(name: str) -> int:
    try:
        return os.stat(name).st_size
    except OSError:
        return 0


def _link_or_copy(src: str, dest: str) -> str:
    """``dest``, made a hard link to ``src`` (no space used), or a copy across filesystems."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
    return dest


def _remove(name: str) -> None:
    try:
        if os.path.isdir(name) and not os.path.islink(name):
            shutil.rmtree(name, ignore_errors=True)
        else:
            os.unlink(name)
    except OSError:
        pass


def _batch_details(rule: Rule, result: JobResult) -> str:
    """What a batch system adds to a failure line: where the job ran, why it ended, what to change, its log."""
    if result.native is None:
        return ""
    parts = [f"rule {rule.where}, job {result.native}" + (f" on {result.host}" if result.host else "")]
    if result.reason:
        parts.append(result.reason)
    if result.hint:
        parts.append(result.hint)
    if result.log:
        parts.append(f"batch log {result.log}")
    return " (" + "; ".join(parts) + ")"


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return "unknown"
