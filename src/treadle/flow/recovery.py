"""Recovery at start-up (docs/makeflow.md, 'Recovery'): replay the log, then check the files.

Recovery is not a second engine: it reads the log into the rules' last
states, and every correction it makes (a rule that was running or failed, a
file someone deleted or changed) goes through :meth:`Engine.reset`, the same
journalled transition the engine uses everywhere else.

Log records are tied to rules by identity (a hash of targets and command), so an edited workflow never
marks the wrong rule done [F-c]. Logs written by the reference have no
identities; their records are trusted only when the rule count matches and the
outputs were logged as created.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from treadle.flow import journal as jr
from treadle.flow.engine import Engine, fingerprint
from treadle.flow.journal import COMPLETE, RUNNING, WAITING
from treadle.flow.lexer import excerpt


@dataclass(slots=True)
class History:
    """What the log says about the current workflow."""

    exists: bool
    states: bytearray
    file_states: dict[str, int] = field(default_factory=dict)
    created: dict[str, int] = field(default_factory=dict)  # name -> creation time, whole seconds
    sources: dict[str, tuple[int, int, str | None]] = field(default_factory=dict)
    files: set[str] = field(default_factory=set)  # every file the log names
    foreign_ignored: int = 0  # rules whose reference-written records could not be matched
    first_started: int | None = None  # time of the log's first ``# STARTED``, microseconds
    max_job_id: int = 0  # the largest job id any rule record holds
    # Rules last logged running in a segment that sent them to a batch system:
    # rule index -> (tag, handle); and the native ids journalled, by (tag, handle).
    batch_running: dict[int, tuple[str, int]] = field(default_factory=dict)
    natives: dict[tuple[str, int], str] = field(default_factory=dict)

    def run_tag(self, log_path: str, now: int) -> str:
        """The name of this run's jobs on a batch system: the same on every resume of one log.

        A hash of the log's absolute path and the time of its first segment, so
        a new log (or the same name reused after a clean) gets a new tag.
        """
        started = self.first_started if self.first_started is not None else now
        key = f"{os.path.abspath(log_path)}\0{started}".encode("utf-8", "surrogateescape")
        return hashlib.sha256(key).hexdigest()[:8]

    def previous_jobs(self, tag: str) -> dict[int, tuple[int, str]]:
        """Rule index -> (handle, native or ``""``) of rules last seen running under ``tag``."""
        return {rid: (handle, self.natives.get((t, handle), "")) for rid, (t, handle) in self.batch_running.items()
                if t == tag and self.states[rid] == RUNNING}


def replay(path: str, identities: list[str], outputs: list[tuple[str, ...]]) -> History:
    """The last state of every current rule according to the log at ``path``."""
    n = len(identities)
    states = bytearray(n)
    history = History(os.path.exists(path) and os.path.getsize(path) > 0, states)
    if not history.exists:
        return history
    index = {ident: i for i, ident in enumerate(identities)}
    fstates = history.file_states
    created = history.created
    binding: dict[int, int] = {}
    ours = False
    ignored: set[int] = set()
    tag = ""  # the batch tag of the segment being read
    for rec in jr.read_log(path):
        kind = rec[0]
        if kind == jr.R_RULE:
            _, _ts, rid, state, job, total = rec
            history.max_job_id = max(history.max_job_id, job)
            if ours:
                idx = binding.get(rid, -1)
            elif total == n and 0 <= rid < n and (
                state != COMPLETE or all(fstates.get(t) in (jr.F_EXISTS, jr.F_COMPLETE) for t in outputs[rid])
            ):
                idx = rid
            else:
                idx = -1
                ignored.add(rid)
            if idx >= 0 and 0 <= state <= jr.ABORTED:
                states[idx] = state
                if state == RUNNING and tag:
                    history.batch_running[idx] = (tag, job)
                elif state == RUNNING:
                    history.batch_running.pop(idx, None)
        elif kind == jr.R_FILE:
            _, ts, name, state, _size = rec
            fstates[name] = state
            history.files.add(name)
            if state == jr.F_EXISTS:
                created[name] = ts // 1_000_000
        elif kind == jr.R_BIND:
            binding[rec[1]] = index.get(rec[2], -1)
        elif kind == jr.R_SOURCE:
            _, _ts, name, size, mtime_ns, digest = rec
            history.sources[name] = (size, mtime_ns, digest)
        elif kind == jr.R_STARTED:
            binding = {}
            ours = False
            tag = ""
            if history.first_started is None:
                history.first_started = rec[1]
        elif kind == jr.R_BATCH:
            tag = rec[2]
        elif kind == jr.R_JOB:
            history.natives[(tag, rec[1])] = rec[2]
        elif kind == jr.R_TREADLE:
            ours = True
    history.foreign_ignored = len(ignored)
    return history


def reset_unfinished(engine: Engine, history: History, *, quiet: bool = False) -> None:
    """Step 3: rules last seen running, failed or aborted start over, with their dependents.

    Rules the batch backend adopted (:meth:`Engine.adopt`) are running again in
    this segment and are left alone.
    """
    if history.foreign_ignored:
        engine.out.warn(
            f"warning: {history.foreign_ignored} rules will run again because the log "
            "has no rule identities (it was written by another makeflow or for another file)"
        )
    for rid, state in enumerate(history.states):
        if state in (WAITING, COMPLETE) or engine.state[rid] == WAITING or rid in engine.adopted:
            continue
        if not quiet:
            what = "rule still running" if state == RUNNING else "will retry failed rule"
            engine.out.warn(f"{what}: {engine.command_of(engine.rules[rid])}")
        engine.reset(rid, quiet=quiet)


def scan_files(engine: Engine, history: History, *, missing_input_is_error: bool = True) -> int:
    """Step 4: check the files that should exist; return the number of errors.

    A missing original input is an error. A changed original input re-runs
    everything downstream of it [F-d]. A generated file that someone deleted
    resets its producer; one someone modified resets its consumers (the
    reference's behaviour, kept for compatibility).
    """
    out = engine.out
    g = engine.graph
    errors = warnings = 0
    for name in g.original_inputs:
        try:
            os.stat(name)
        except OSError:
            if missing_input_is_error:
                out.say(f"error: {excerpt(name)} does not exist, and is not created by any rule.")
                errors += 1
            continue
        old = history.sources.get(name)
        if old is None:
            continue
        now = fingerprint(name, old[2] is not None)
        if now is None or now[0] != old[0] or now[1] != old[1] or (old[2] is not None and now[2] != old[2]):
            consumers = [c for c in g.consumers.get(name, ()) if engine.state[c] != WAITING]
            if consumers:
                out.say(f"{excerpt(name)} has changed since the last run; the rules that use it will run again.")
            for c in consumers:
                engine.reset(c)
    fstates = history.file_states
    for rid, outs in enumerate(g.outputs):
        for name in outs:
            if engine.state[rid] != COMPLETE:
                break
            if fstates.get(name) not in (jr.F_EXISTS, jr.F_COMPLETE):
                continue
            try:
                st = os.stat(name)
            except OSError:
                out.say(f"warning: {excerpt(name)} was previously created by makeflow, but someone else deleted it!")
                warnings += 1
                engine.reset(rid)
                break
            logged = history.created.get(name)
            if logged is not None and not os.path.isdir(name) and int(st.st_mtime) > logged:
                out.say(f"warning: {excerpt(name)} was previously created by makeflow, but someone else modified it!")
                warnings += 1
                for c in g.consumers.get(name, ()):
                    engine.reset(c)
                # The new content is accepted as the file's: warn about it once, not every run.
                engine.journal.file_record(name, jr.F_EXISTS, st.st_size)
                engine.journal.flush()
    if errors or warnings:
        out.say(f"found {errors} errors and {warnings} warnings during consistency check.")
    return errors
