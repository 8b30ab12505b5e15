"""HTCondor: submit descriptions, one ``condor_submit`` per round, the user log, ``condor_q``/``condor_rm``.

A run's submit description is fixed; what differs between its jobs travels as
item data, one row per job, so a dispatch round of any size is one
``condor_submit -terse`` (one more per distinct set of ``-B`` lines, one more
for the jobs that ask for GPUs). Proc ``p`` of the cluster it prints is row
``p``. Jobs are watched through the run's user log (:mod:`treadle.batch.condor_log`),
which needs no scheduler query; ``condor_q`` and ``condor_history`` are asked
only when the log has been silent too long (docs/batch.md, "HTCondor").

No shared filesystem is assumed: each job's script and inputs are transferred
into its sandbox (``preserve_relative_paths``), the script has no ``cd``, and
HTCondor brings back the new top-level files. Hence the rules of
:func:`check_files`.

The ``htcondor2`` bindings (the ``condor`` extra) are used, when importable,
only to check a description before anything is submitted (:func:`validate`).
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from treadle.batch import condor_log
from treadle.batch.base import BatchJob, Observation, Request, State, Submitted
from treadle.errors import BatchError, UsageError, WorkflowError

DEFAULT_CPUS = 1
DEFAULT_MEMORY = 1024  # MB, HTCondor's and the reference's default
DEFAULT_DISK = 1024  # MB; request_disk is in KB
WALL_HOLD_SUBCODE = 42
"""The hold subcode of treadle's wall-time ``periodic_hold``: the tracker reads it as TIMEOUT."""

REFUSED_KEYS = ("queue", "executable", "log", "arguments", "transfer_input_files", "batch_name")
"""Submit keys treadle sets itself; a ``-B`` line that sets one would break tracking or transfer."""

COLUMNS = ("handle", "script", "cpus", "memory", "disk", "wall", "gpus", "inputs")
"""Item data columns, in order. Only the last may hold commas or spaces: it is the input list."""

COMMAND_TIMEOUT = 300.0
"""Seconds a condor command may take before it counts as a transient failure (a busy schedd)."""

TASK_WRAPPER = """#!/bin/sh
# treadle: run one job script in its HTCondor sandbox; its exit status is the job's.
exec /bin/sh "$1"
"""

Runner = Callable[[Sequence[str], str | None], subprocess.CompletedProcess[str]]
"""Runs one command (argv, working directory) and returns its result, as ``subprocess.run`` does."""


def run_command(argv: Sequence[str], cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """The default :data:`Runner`: the command with its output captured, bounded by :data:`COMMAND_TIMEOUT`."""
    return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True,  # noqa: S603 - argv list
                          stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT, check=False)


# --- what a user may give -------------------------------------------------------------------------


def _option_key(line: str) -> str:
    """The submit key a description line sets (``queue`` for a queue statement), lower case."""
    stripped = line.strip()
    word = re.split(r"[\s=]", stripped, maxsplit=1)[0].lower()
    if word == "queue":
        return "queue"
    key = stripped.split("=", 1)[0].strip().lower()
    return key[3:] if key.startswith("my.") else key.lstrip("+")


def description_lines(text: str | None) -> tuple[str, ...]:
    """``-B``/``BATCH_OPTIONS`` text as submit description lines (a written ``\\n`` separates them too)."""
    if not text:
        return ()
    return tuple(line.strip() for line in text.replace("\\n", "\n").splitlines() if line.strip())


def check_options(options: Iterable[str]) -> None:
    """Refuse ``-B``/``BATCH_OPTIONS`` lines that set a key treadle owns (:data:`REFUSED_KEYS`)."""
    for line in options:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key = _option_key(line)
        if key in REFUSED_KEYS:
            raise UsageError(f"-B {line.strip()!r}: treadle sets {key!r} itself for -T condor "
                             f"(refused keys: {', '.join(REFUSED_KEYS)})")


def check_files(rule: str, inputs: Iterable[str], outputs: Iterable[str]) -> None:
    """Refuse, before the run, files HTCondor cannot move for ``rule`` (named in the message).

    ``transfer_input_files`` is a comma-separated list, so an input name with a
    comma or a newline cannot travel; HTCondor brings back only the sandbox's
    top-level files, so an output in a subdirectory would be lost; and a
    remote name (``local->remote``) needs remaps treadle does not write yet.
    """
    for name in inputs:
        if "->" in name:
            raise WorkflowError(f"{rule}: input {name!r} has a remote name (a->b), which -T condor does not support")
        if "," in name or "\n" in name:
            raise WorkflowError(f"{rule}: input {name!r} has a comma or a newline, which HTCondor's "
                                "transfer_input_files cannot carry; rename the file")
    for name in outputs:
        if "->" in name:
            raise WorkflowError(f"{rule}: output {name!r} has a remote name (a->b), which -T condor does not support")
        if "/" in name.strip("/") or os.path.isabs(name):
            raise WorkflowError(f"{rule}: output {name!r} is not in the job's top directory; HTCondor brings "
                                "back only top-level files (write it there, or use -T wq)")


def job_script(command: str, env: Mapping[str, str]) -> str:
    """The script one job runs in its sandbox: ``export`` lines, then the command under ``/bin/sh -c``.

    There is no ``cd``: the job starts in its sandbox, where its inputs were
    transferred. Values are quoted for the shell, so no ``environment`` key
    with its own quoting rules is needed. ``exec`` makes the command's exit
    status and signal the job's.
    """
    lines = ["#!/bin/sh"]
    for name, value in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"not a shell variable name: {name!r}")
        lines.append(f"export {name}={shlex.quote(value)}")
    lines.append(f"exec /bin/sh -c {shlex.quote(command)}")
    return "\n".join(lines) + "\n"


# --- rendering ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    """What is fixed for a run's descriptions (the ``--condor-*`` options)."""

    requirements: str | None = None
    autosize: bool = False
    getenv: str = "all"  # "all", "none", or a comma-separated list of variable names


def _getenv_value(getenv: str) -> str:
    if getenv == "all":
        return "true"
    if getenv == "none":
        return "false"
    return getenv


def _request_lines(autosize: bool, gpus: bool) -> list[str]:
    """request_* keys; with autosize a job takes the whole slot when the slot is larger."""
    pairs = (("cpus", "TotalSlotCpus"), ("memory", "TotalSlotMemory"), ("disk", "TotalSlotDisk"))
    if autosize:
        lines = [f"request_{name} = ifThenElse($({name}) > {slot}, $({name}), {slot})" for name, slot in pairs]
    else:
        lines = [f"request_{name} = $({name})" for name, _ in pairs]
    if gpus:
        lines.append("request_gpus = $(gpus)")
    return lines


def wall_hold_lines(wall: str) -> list[str]:
    """Hold a job running longer than ``wall`` seconds (a number or a macro), with subcode 42."""
    return [f"periodic_hold = {wall} > 0 && JobStatus == 2 && time() - EnteredCurrentStatus > {wall}",
            'periodic_hold_reason = "treadle: WALL_TIME exceeded"',
            f"periodic_hold_subcode = {WALL_HOLD_SUBCODE}"]


def render_description(*, executable: str, workdir: str, user_log: str, batch_name: str, log_dir: str,
                       items: str, settings: Settings, options: Sequence[str] = (),
                       gpus: bool = False) -> str:
    """The submit description of one round: fixed keys, ``-B`` lines, the queue statement over ``items``."""
    lines = [
        "universe = vanilla",
        f"executable = {executable}",
        "transfer_executable = true",
        "arguments = $(script)",
        f"initialdir = {workdir}",
        "transfer_input_files = $(inputs)",
        "preserve_relative_paths = true",
        "should_transfer_files = YES",
        "when_to_transfer_output = ON_EXIT",
        f"log = {user_log}",
        f"batch_name = {batch_name}",
        '+TreadleHandle = "$(handle)"',
        f"output = {log_dir}/$(Cluster).$(Process).out",
        f"error = {log_dir}/$(Cluster).$(Process).err",
        *_request_lines(settings.autosize, gpus),
        *wall_hold_lines("$(wall)"),
        "notification = never",
        "keep_claim_idle = 30",
        "+JobMaxSuspendTime = 0",
        f"getenv = {_getenv_value(settings.getenv)}",
    ]
    if settings.requirements:
        lines.append(f"requirements = {settings.requirements}")
    lines += [line.strip() for line in options if line.strip()]
    lines.append(f"queue {', '.join(COLUMNS)} from {items}")
    return "\n".join(lines) + "\n"


def _splits(text: str) -> bool:
    """Whether ``text`` would split an item row's column (a space, a tab, a comma or a newline)."""
    return not text or " " in text or "," in text or "\t" in text or "\n" in text


def item_row(job: BatchJob) -> str:
    """One job's item data row (:data:`COLUMNS`); raises ``ValueError`` for a field that would split.

    Called once per job of every round, so it is kept to string work (a
    10,000-rule round renders in a few milliseconds).
    """
    request = job.request
    script = job.script if os.path.isabs(job.script) else os.path.join(job.workdir, job.script)
    label, name = job.comment or "-", script.rsplit("/", 1)[-1]
    if _splits(label) or _splits(name):
        raise ValueError(f"item field {label if _splits(label) else name!r} has a space or a comma")
    files = ",".join((script, *job.inputs))
    if "\n" in files or files.count(",") != len(job.inputs):
        bad = next(f for f in (script, *job.inputs) if "," in f or "\n" in f)
        raise ValueError(f"{bad!r} has a comma or a newline")
    return (f"{label} {name} {request.cores or DEFAULT_CPUS} {request.memory or DEFAULT_MEMORY} "
            f"{(request.disk or DEFAULT_DISK) * 1024} {request.wall or 0} {request.gpus or 0} {files}")


def parse_terse(text: str) -> list[str]:
    """Job ids from ``condor_submit -terse`` output (``C.P - C.Q`` lines), in proc order."""
    ids: list[str] = []
    for line in text.splitlines():
        m = re.fullmatch(r"\s*(\d+)\.(\d+)\s*-\s*(\d+)\.(\d+)\s*", line)
        if m:
            cluster, first, last = m[1], int(m[2]), int(m[4])
            ids += [f"{cluster}.{p}" for p in range(first, last + 1)]
    return ids


# --- validation with the bindings -----------------------------------------------------------------


def _expression_keys(keys: Iterable[str]) -> list[str]:
    """Keys whose values are ClassAd expressions: request_*, periodic_*, requirements, +Attr (MY.Attr)."""
    out = []
    for key in keys:
        low = key.lower()
        if low.startswith(("request_", "periodic_", "my.")) or low == "requirements":
            out.append(key)
    return out


def validate(description: str, items: Sequence[Sequence[str]]) -> bool:
    """Check a description with HTCondor's own parser; ``False`` when the bindings are not installed.

    The description is parsed by ``htcondor2.Submit``; then, row by row, the
    item values are set and every expression key is expanded and parsed as a
    ClassAd expression, so a malformed ``-B`` line or requirement fails here,
    with the bindings' message (as :class:`UsageError`), before any submission.
    """
    try:  # optional, and untyped: imported by name so the rest of the module needs neither
        htcondor2 = importlib.import_module("htcondor2")
        classad2 = importlib.import_module("classad2")
    except ImportError:
        return False
    try:
        submit = htcondor2.Submit(description)
    except (ValueError, RuntimeError, htcondor2.HTCondorException) as e:
        raise UsageError(f"HTCondor refuses the submit description (check -B and the requirements): {e}") from None
    qargs = submit.getQArgs() or ""
    names = [n.strip() for n in qargs.split(" from ", 1)[0].split(",")] if " from " in qargs else []
    keys = _expression_keys(submit.keys())
    for row in items or [()]:
        for name, value in zip(names, row, strict=False):
            submit[name] = value
        for key in keys:
            try:
                text = submit.expand(key)
                classad2.ExprTree(text)
            except (KeyError, ValueError, classad2.ClassAdException) as e:
                raise UsageError(f"HTCondor refuses {key} = {submit.get(key, '')!r}: {e}") from None
    return True


# --- reading condor's answers ---------------------------------------------------------------------

_TRANSIENT = (
    "Failed to connect", "Can't connect", "Connection refused", "timed out", "Timeout",
    "Can't find address", "Failed to end classad message", "Failed to fetch ads",
    "Resource temporarily unavailable", "MAX_JOBS_", "Too many open files", "SECMAN:2007",
)
_PERMANENT = (
    "ERROR: on Line", "Parse error", "Submit validation", "No such file", "does not exist",
    "Permission denied", "Unknown universe", "is not a valid", "Invalid",
)


def classify(command: Sequence[str], returncode: int, stdout: str, stderr: str) -> BatchError:
    """The :class:`BatchError` for a failed condor command: transient, permanent or unknown by its words."""
    text = stderr.strip() or stdout.strip()
    first = text.splitlines()[0] if text else f"exit status {returncode}"
    if not text or any(w in text for w in _TRANSIENT):
        kind = "transient"
    elif any(w in text for w in _PERMANENT):
        kind = "permanent"
    else:
        kind = "unknown"
    return BatchError(f"{command[0]} failed: {first}", kind=kind, command=tuple(command),
                      returncode=returncode, stderr=text)


def _host(address: str, body: Sequence[str]) -> str:
    """The execute host: the machine of ``SlotName: slot1@host`` if given, else the ``<ip:port?...>`` ip."""
    for line in body:
        if line.startswith("SlotName:"):
            name = line.split(":", 1)[1].strip().strip('"')
            return name.rsplit("@", 1)[-1]
    m = re.match(r"<\[?([^\]>?]*?)\]?:\d+", address)
    return m[1] if m else address.strip("<>")


def observation(event: condor_log.Event, label: str = "") -> Observation | None:
    """What a user-log event says about its job, or ``None`` for events that change nothing."""
    job = event.job
    code = event.code
    if code == condor_log.SUBMIT:
        return Observation(job, State.PENDING, "SUBMITTED", label=label)
    if code == condor_log.EXECUTE:
        return Observation(job, State.RUNNING, "RUNNING", label=label,
                           host=_host(event.host, event.body), start=event.time)
    if code in (condor_log.EVICTED, condor_log.SHADOW_EXCEPTION, condor_log.RECONNECT_FAILED):
        word = {condor_log.EVICTED: "EVICTED", condor_log.SHADOW_EXCEPTION: "SHADOW_EXCEPTION",
                condor_log.RECONNECT_FAILED: "RECONNECT_FAILED"}[code]
        return Observation(job, State.PENDING, word, reason=event.reason, label=label)
    if code == condor_log.TERMINATED:
        if event.signal is not None:
            word = "SIGNALED"
        else:
            word = "COMPLETED" if event.exit == 0 else "FAILED"
        return Observation(job, State.ENDED, word, label=label, exit=event.exit, signal=event.signal,
                           end=event.time, usage=dict(event.usage))
    if code == condor_log.ABORTED:
        return Observation(job, State.ENDED, "ABORTED", reason=event.reason, label=label, end=event.time)
    if code == condor_log.HELD:
        return Observation(job, State.HELD, "HELD", reason=event.reason, label=label,
                           hold_code=event.hold_code, hold_subcode=event.hold_subcode)
    if code == condor_log.RELEASED:
        return Observation(job, State.PENDING, "RELEASED", reason=event.reason, label=label)
    return None


# JobStatus values: 1 idle, 2 running, 3 removed, 4 completed, 5 held, 6 transferring output, 7 suspended
_JOB_STATUS = {
    "1": (State.PENDING, "IDLE"), "2": (State.RUNNING, "RUNNING"), "3": (State.ENDED, "REMOVED"),
    "4": (State.ENDED, "COMPLETED"), "5": (State.HELD, "HELD"), "6": (State.RUNNING, "TRANSFERRING_OUTPUT"),
    "7": (State.RUNNING, "SUSPENDED"),
}
Q_ATTRS = ("JobStatus", "HoldReasonCode", "HoldReasonSubCode", "TreadleHandle", "HoldReason")
HISTORY_ATTRS = ("JobStatus", "ExitBySignal", "ExitCode", "ExitSignal", "CompletionDate", "TreadleHandle")


def _int(word: str) -> int | None:
    try:
        return int(word)
    except ValueError:
        return None


def _label(word: str) -> str:
    return "" if word == "undefined" else word.strip('"')


def parse_q(text: str) -> list[Observation]:
    """Observations from ``condor_q -af:j`` + :data:`Q_ATTRS` lines (HoldReason last: it has spaces)."""
    out = []
    for line in text.splitlines():
        parts = line.split(None, len(Q_ATTRS))
        if len(parts) < len(Q_ATTRS) or parts[1] not in _JOB_STATUS:
            continue
        state, word = _JOB_STATUS[parts[1]]
        reason = parts[5] if len(parts) > 5 and parts[5] != "undefined" else ""
        out.append(Observation(parts[0], state, word, reason=reason, label=_label(parts[4]),
                               hold_code=_int(parts[2]), hold_subcode=_int(parts[3])))
    return out


def parse_history(text: str) -> list[Observation]:
    """Observations from ``condor_history -af:j`` + :data:`HISTORY_ATTRS` lines."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < len(HISTORY_ATTRS) + 1 or parts[1] not in _JOB_STATUS:
            continue
        state, word = _JOB_STATUS[parts[1]]
        by_signal = parts[2] == "true"
        exit_code = None if by_signal else _int(parts[3])
        signal = _int(parts[4]) if by_signal else None
        if word == "COMPLETED":
            word = "SIGNALED" if by_signal else ("COMPLETED" if exit_code == 0 else "FAILED")
        end = _int(parts[5])
        out.append(Observation(parts[0], state, word, label=_label(parts[6]), exit=exit_code, signal=signal,
                               end=float(end) if end else None))
    return out


def batch_name(tag: str) -> str:
    """The ``JobBatchName`` every job of the run named ``tag`` carries; one constraint finds them all."""
    return f"treadle-{tag}"


def tag_constraint(tag: str) -> str:
    return f'JobBatchName == "{batch_name(tag)}"'


def ids_constraint(ids: Iterable[str]) -> str:
    """A ClassAd constraint matching exactly these ``C.P`` ids, one term per cluster."""
    procs: dict[str, list[str]] = {}
    for native in ids:
        cluster, _, proc = native.partition(".")
        procs.setdefault(cluster, []).append(proc or "0")
    return " || ".join(f"(ClusterId == {c} && member(ProcId, {{{', '.join(p)}}}))" for c, p in procs.items())


# --- the batch system -----------------------------------------------------------------------------


def _group_key(job: BatchJob) -> tuple[str, str, tuple[str, ...], bool]:
    """Jobs that can share one description: same run, directory, ``-B`` lines, and GPUs or not."""
    return (job.tag, job.workdir, job.options, bool(job.request.gpus))


class CondorSystem:
    """``-T condor``'s :class:`~treadle.batch.base.BatchSystem` (see the module docstring).

    ``batch_dir`` holds the task wrapper, the rounds' descriptions and item
    files, and ``logs/``; ``user_log`` is the run's HTCondor user log, read by
    :meth:`harvest` from where it stopped (from the start at first, which is
    how a resumed run replays what happened while it was away).
    """

    name = "condor"

    def __init__(self, batch_dir: str, user_log: str, *, requirements: str | None = None,
                 autosize: bool = False, getenv: str = "all", runner: Runner | None = None) -> None:
        self.batch_dir = os.path.abspath(batch_dir)
        self.user_log = os.path.abspath(user_log)
        self.settings = Settings(requirements=requirements, autosize=autosize, getenv=getenv)
        self._run = runner or run_command
        self._tail = condor_log.UserLogTail(self.user_log)
        self._labels: dict[str, str] = {}  # native id -> the job's comment (the engine's handle)
        self._rounds = 0
        self.schedd = ""  # the submit host's address, from the first 000 event

    @property
    def wrapper(self) -> str:
        return os.path.join(self.batch_dir, "condor-task.sh")

    @property
    def log_dir(self) -> str:
        return os.path.join(self.batch_dir, "logs")

    def log_paths(self, native: str) -> tuple[str, str]:
        """Where HTCondor puts job ``C.P``'s stdout and stderr when it ends."""
        base = os.path.join(self.log_dir, native)
        return base + ".out", base + ".err"

    def description(self, jobs: Sequence[BatchJob], items: str) -> str:
        """The description for a group of jobs that share :func:`_group_key`."""
        first = jobs[0]
        return render_description(executable=self.wrapper, workdir=os.path.abspath(first.workdir),
                                  user_log=self.user_log, batch_name=batch_name(first.tag),
                                  log_dir=self.log_dir, items=items, settings=self.settings,
                                  options=first.options, gpus=bool(first.request.gpus))

    def check(self, options: Sequence[str] = ()) -> bool:
        """Check ``-B`` lines and the run's description before the run; ``False`` if no bindings checked it.

        Raises :class:`UsageError` naming the refused key or quoting the bindings' message.
        """
        check_options(options)
        sample = BatchJob(tag="check", script="job.sh", workdir=self.batch_dir, options=tuple(options),
                          request=Request(cores=1, memory=DEFAULT_MEMORY, disk=DEFAULT_DISK, wall=60))
        text = self.description([sample], os.path.join(self.batch_dir, "items-check.txt"))
        return validate(text, [item_row(sample).split(" ", len(COLUMNS) - 1)])

    def _prepare(self) -> None:
        os.makedirs(self.log_dir, exist_ok=True)
        if not os.path.exists(self.wrapper):
            tmp = self.wrapper + ".tmp"
            with open(tmp, "w") as f:
                f.write(TASK_WRAPPER)
            os.chmod(tmp, 0o755)
            os.replace(tmp, self.wrapper)

    def _call(self, argv: Sequence[str], cwd: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run one condor command; its failure (or absence) becomes a classified :class:`BatchError`."""
        try:
            result = self._run(argv, cwd)
        except FileNotFoundError:
            raise BatchError(f"{argv[0]} not found: is HTCondor installed on this machine?", kind="permanent",
                             command=tuple(argv)) from None
        except subprocess.TimeoutExpired:
            raise BatchError(f"{argv[0]} did not answer in {COMMAND_TIMEOUT:g} s", kind="transient",
                             command=tuple(argv)) from None
        if result.returncode != 0:
            raise classify(argv, result.returncode, result.stdout or "", result.stderr or "")
        return result

    def submit(self, jobs: Sequence[BatchJob]) -> list[Submitted]:
        """One ``condor_submit -terse`` per group of jobs sharing a description; ids or errors, in order."""
        results: dict[int, Submitted] = {}
        groups: dict[tuple[str, str, tuple[str, ...], bool], list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(_group_key(job), []).append(i)
        if groups:
            self._prepare()
        for indexes in groups.values():
            ready: list[int] = []
            rows: list[str] = []
            for i in indexes:
                try:
                    rows.append(item_row(jobs[i]))
                    ready.append(i)
                except ValueError as e:
                    results[i] = BatchError(f"cannot submit {jobs[i].script} to HTCondor: {e}", kind="permanent")
            if ready:
                outcomes = self._submit_group([jobs[i] for i in ready], rows)
                results.update(zip(ready, outcomes, strict=True))
        return [results[i] for i in range(len(jobs))]

    def _submit_group(self, jobs: list[BatchJob], rows: list[str]) -> list[Submitted]:
        self._rounds += 1
        items = os.path.join(self.batch_dir, f"items-{self._rounds}.txt")
        path = os.path.join(self.batch_dir, f"submit-{self._rounds}.sub")
        with open(items, "w") as f:
            f.write("\n".join(rows) + "\n")
        with open(path, "w") as f:
            f.write(self.description(jobs, items))
        try:
            ids = self.submit_file(path, os.path.abspath(jobs[0].workdir), len(jobs))
        except BatchError as e:
            return [e] * len(jobs)
        for native, job in zip(ids, jobs, strict=True):
            self._labels[native] = job.comment
        return list(ids)

    def submit_file(self, path: str, cwd: str, count: int) -> list[str]:
        """Run ``condor_submit -terse`` on a description that queues ``count`` jobs; their ids.

        Raises :class:`BatchError` when condor_submit refuses, or answers
        another number of ids than ``count``.
        """
        argv = ("condor_submit", "-terse", path)
        result = self._call(argv, cwd=cwd)
        ids = parse_terse(result.stdout)
        if len(ids) != count:
            raise BatchError(f"condor_submit answered {len(ids)} job ids for {count} jobs",
                             kind="unknown", command=argv, returncode=0, stderr=result.stdout)
        return ids

    def harvest(self) -> list[Observation]:
        """What the user log says since the last look; costs no scheduler query."""
        out = []
        for event in self._tail.read():
            if event.code == condor_log.SUBMIT and not self.schedd:
                self.schedd = event.host
            seen = observation(event, self._labels.get(event.job, ""))
            if seen is not None:
                out.append(seen)
        return out

    def poll(self, tag: str) -> list[Observation]:
        """One ``condor_q`` for every job of the run named ``tag``."""
        result = self._call(("condor_q", "-constraint", tag_constraint(tag), "-af:j", *Q_ATTRS))
        return parse_q(result.stdout)

    def final(self, ids: Sequence[str]) -> list[Observation]:
        """One ``condor_history`` for jobs gone from the queue; jobs it does not know are GONE."""
        if not ids:
            return []
        result = self._call(("condor_history", "-constraint", ids_constraint(ids), "-af:j", *HISTORY_ATTRS))
        seen = {o.native: o for o in parse_history(result.stdout)}
        return [seen.get(native) or Observation(native, State.GONE) for native in ids]

    def cancel(self, ids: Sequence[str]) -> None:
        """One ``condor_rm`` for all these jobs; jobs already gone are not an error."""
        if ids:
            self._remove(("condor_rm", *ids))

    def cancel_tag(self, tag: str) -> None:
        """Remove every job of the run named ``tag`` (abort)."""
        self._remove(("condor_rm", "-constraint", tag_constraint(tag)))

    def _remove(self, argv: Sequence[str]) -> None:
        try:
            self._call(argv)
        except BatchError as e:
            # condor_rm fails when some job has already left the queue: that is what we wanted
            gone = ("not found", "Couldn't find", "No jobs", "nonexistent")
            if e.returncode is None or not e.stderr or not any(w in e.stderr for w in gone):
                raise
