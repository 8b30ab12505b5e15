"""Running one workflow from its options: the sequence behind ``treadle run``, Weaver's ``--run`` and the API.

::

    parse, check ──▶ lock the log ──▶ recover, scan files ──▶ clean, or build the backends and run

:func:`run_workflow` is that sequence; it returns the exit status and prints
what the reference makeflow prints. The backends are built by the registry
from the options (``from_options``), so nothing here names a backend.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from treadle import __version__
from treadle.backends.base import Backend, BackendConfig, ChecksFiles, FileSpec, Recovering
from treadle.backends.registry import backend_class
from treadle.errors import UsageError
from treadle.flow import journal as jr
from treadle.flow import recovery
from treadle.flow.checks import check_workflow
from treadle.flow.clean import clean
from treadle.flow.engine import Engine, Graph, LocalCapacity, Out
from treadle.flow.gc import GarbageCollector
from treadle.flow.model import Workflow
from treadle.flow.mounts import parse_mounts, prepare_mounts
from treadle.flow.options import RunOptions, local_cores
from treadle.flow.parser import parse_file
from treadle.flow.summary import failure_report, write_summary
from treadle.flow.wrappers import singularity_cli


def run_workflow(opts: RunOptions, out: Out | None = None) -> int:
    """Run (or clean, or dry-run) one workflow; return the exit status (0: everything completed).

    User mistakes (a bad workflow file, an unknown ``-T``) raise
    :class:`~treadle.errors.TreadleError`. ``out`` receives the progress lines
    (default: this process's stdout and stderr).
    """
    started = time.time()
    out = out or Out()
    for note in _inert_options(opts):
        out.warn(f"warning: {note}")
    debug_file = None
    if opts.debug:
        if opts.debug_file:
            try:
                debug_file = open(opts.debug_file, "a", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
            except OSError as e:
                raise UsageError(f"cannot open debug file {opts.debug_file}: {e.strerror}") from None
        out.debug_stream = debug_file or sys.stderr
        out.debug(f"treadle {__version__} run options: {' '.join(opts.command_line)}")
    try:
        return _execute(opts, out, started)
    finally:
        if debug_file is not None:
            debug_file.close()


def _inert_options(opts: RunOptions) -> list[str]:
    """Reference options that are accepted, so scripts keep working, but change nothing here."""
    notes = []
    if opts.storage_type is not None or opts.storage_limit is not None or opts.storage_print:
        notes.append("--storage-type, --storage-limit and --storage-print have no effect: "
                     "treadle does not allocate storage yet")
    if opts.backend_settings.get("schedule") is not None:
        notes.append("-W has no effect: treadle's manager always prefers the worker that "
                     "already caches most of a task's input bytes (like -W files)")
    settings = opts.backend_settings
    notes += [f"{name} has no effect: {why}" for dest, (name, why) in INERT_OPTIONS.items()
              if settings.get(dest) is not None]
    own = backend_class(opts.batch_type).options_type
    understood = {f.name for f in dataclasses.fields(own)} if own is not None else set()
    notes += [f"{name} has no effect with -T {opts.batch_type}: {why}"
              for dest, (name, why) in BACKEND_ONLY_OPTIONS.items()
              if settings.get(dest) is not None and dest not in understood]
    return notes


# Reference options accepted so that scripts keep working, with why each changes nothing here (by dest).
INERT_OPTIONS: dict[str, tuple[str, str]] = {
    "email": ("-m/--email", "treadle sends no mail; -f FILE writes the summary, which a script can mail"),
    "priority": ("-P/--priority", "a manager's priority among managers sharing workers is not implemented "
                                  "(issue 15)"),
    "verbose_jobnames": ("--verbose-jobnames", "batch jobs are named treadle-TAG, the name treadle finds "
                                               "its own jobs by; each job's script is in DAGFILE.batch/"),
    "working_dir": ("--working-dir", "-T slurm and -T condor jobs run in the workflow's directory "
                                     "(a shared filesystem), -T wq tasks in the worker's sandbox"),
    "disable_heartbeat": ("--disable-heartbeat", "treadle watches batch jobs through the batch system's own "
                                                 "records, not a heartbeat file"),
    "batch_mem_type": ("--batch-mem-type", "it names SGE's memory resource, and treadle has no -T sge"),
}
# Options only some backends read (their options dataclass has the field), with what reads them (by dest).
BACKEND_ONLY_OPTIONS: dict[str, tuple[str, str]] = {
    "submission_timeout": ("-S/--submission-timeout", "only -T slurm and -T condor submit jobs that a batch "
                                                      "system can refuse"),
    "safe_submit_mode": ("--safe-submit-mode", "only -T slurm sends resource requests"),
    "ignore_memory_spec": ("--ignore-memory-spec", "only -T slurm sends a memory request"),
}


def _local_resources(opts: RunOptions) -> tuple[int, int, int]:
    cores = opts.local_cores or local_cores()
    memory = opts.local_memory
    if memory is None:
        try:
            memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1 << 20)
        except (ValueError, OSError):
            memory = 0
    disk = opts.local_disk
    if disk is None:
        try:
            disk = shutil.disk_usage(".").free // (1 << 20)
        except OSError:
            disk = 0
    return cores, memory, disk


def _structure(journal: jr.Journal, wf: Workflow, graph: Graph) -> None:
    """``--log-verbose``: the DAG's structure as tab-separated ``#`` lines (new logs only)."""
    for r in wf.rules:
        i = r.id
        journal.line(f"# NODE\t{i}\t{r.command}")
        journal.line(f"# CATEGORY\t{i}\t{r.category}")
        journal.line(f"# SYMBOL\t{i}\t{r.category}")
        journal.line(f"# PARENTS\t{i}\t" + "\t".join(str(p) for p in graph.parents[i]))
        journal.line(f"# SOURCES\t{i}\t" + "\t".join(jr.escape_name(s) for s in r.sources))
        journal.line(f"# TARGETS\t{i}\t" + "\t".join(jr.escape_name(t) for t in graph.outputs[i]))
        journal.line(f"# COMMAND\t{i}\t{r.command}")


class _Plan:
    """What the run was told and what it derived before the log is locked."""

    def __init__(self, opts: RunOptions, started: float) -> None:
        self.opts = opts
        self.started = started
        self.cores, self.memory, self.disk = _local_resources(opts)
        # The dry run stands in for the local executor; a remote -T adds a second one.
        self.local_cls = backend_class("dryrun" if opts.dry_run else "local")
        self.remote_cls = backend_class(opts.batch_type) if opts.remote else None
        limits_from = self.remote_cls or self.local_cls
        self.max_local, self.max_remote = opts.job_limits(self.cores, limits_from.default_max_remote)
        self.log_path = opts.resolved_log_path()
        self.batch_log = opts.resolved_batch_log(backend_class(opts.batch_type).log_suffix)

    def backends(self, tag: str, first_handle: int, rule_count: int,
                 notify: Callable[..., None]) -> tuple[Backend, Backend | None]:
        """(local, remote) built from the options; the remote one is ``None`` unless ``-T`` names one.

        ``tag`` names the run's jobs at a batch system, ``first_handle`` is
        above every job id in the log, ``notify`` reaches the engine.
        """
        opts = self.opts
        config = BackendConfig(workdir=os.getcwd(), log_path=self.batch_log,
                               send_environment=opts.send_environment, settings=opts.backend_settings,
                               dagfile=opts.dagfile, batch_options=opts.batch_options, tag=tag,
                               first_handle=first_handle, rule_count=rule_count, keep_logs=opts.keep_logs,
                               notify=notify, shared_fs=opts.shared_fs)
        local = self.local_cls.from_options(config)
        try:
            remote = self.remote_cls.from_options(config) if self.remote_cls is not None else None
        except BaseException:
            local.close()
            raise
        return local, remote


def _execute(opts: RunOptions, out: Out, started: float) -> int:
    """Parse and check the workflow, lock its log, then recover and run."""
    if opts.change_directory:
        try:
            os.chdir(opts.change_directory)
        except OSError as e:
            raise UsageError(f"cannot change to directory {opts.change_directory}: {e.strerror}") from None
    dagfile = opts.dagfile
    out.say(f"parsing {dagfile}...")
    out.flush()
    wf = parse_file(
        dagfile,
        fmt=opts.fmt,
        jx_args=list(opts.jx_args) or None,
        jx_define=list(opts.jx_define) or None,
        notice=lambda m: out.warn(m),
    )
    plan = _Plan(opts, started)
    out.say(f"local resources: {plan.cores} cores, {plan.memory} MB memory, {plan.disk} MB disk")
    if opts.batch_type != "local":
        out.say(f"max running remote jobs: {plan.max_remote}")
    out.say(f"max running local jobs: {plan.max_local}")
    out.say(f"checking {dagfile} for consistency...")
    check_workflow(wf, sandboxed=bool(opts.clean) or bool(plan.remote_cls is not None and plan.remote_cls.sandboxed),
                   remote=plan.remote_cls is not None)
    if isinstance(plan.remote_cls, ChecksFiles):
        for rule in wf.rules:
            if not rule.local:
                plan.remote_cls.check_files(rule.where, [FileSpec(s, rule.remote_name(s)) for s in rule.sources],
                                            [FileSpec(t, rule.remote_name(t)) for t in rule.targets])
    _check_shared_fs(opts, wf)
    if opts.mounts and not opts.clean:
        out.say(f"fetching the files {opts.mounts} names...")
        prepare_mounts(parse_mounts(opts.mounts), opts.cache or f"{dagfile}.cache")
    out.say(f"{dagfile} has {len(wf.rules)} rules.")
    journal = jr.NullJournal() if opts.dry_run else jr.Journal(plan.log_path)
    journal.open()
    try:
        return _execute_locked(plan, wf, journal, out)
    finally:
        journal.close()
        for rule in wf.rules:
            if rule.workflow_args:
                # JX "args" objects were written to files for the nested runs
                try:
                    os.unlink(rule.workflow_args)
                except OSError:
                    pass


def _check_shared_fs(opts: RunOptions, wf: Workflow) -> None:
    """Refuse a ``->`` rename of a file on a ``--shared-fs`` directory, as the reference does.

    Such a file is not transferred: the command reads or writes it by its
    path on the shared filesystem, so a sandbox name would name nothing.
    """
    if not opts.shared_fs:
        return
    for rule in wf.rules:
        for name in (*rule.sources, *rule.targets):
            remote = rule.remote_name(name)
            shared = opts.on_shared_fs(name)
            if shared is not None and remote != name:
                raise UsageError(f"{rule.where}: {name}->{remote}: {name} is on the shared filesystem {shared} "
                                 "(--shared-fs), so the command uses it by its path; remove the rename")


def _prepare_containers(opts: RunOptions, out: Out) -> None:
    """Check that the container command exists where rules run here, and load ``--docker-tar`` once.

    Remote rules run where the workers are: the command must exist there, and
    the image must be there (a tar is loaded on this machine only).
    """
    local_rules = not opts.remote
    if opts.singularity and local_rules and singularity_cli() is None:
        raise UsageError(f"--singularity {opts.singularity}: neither singularity nor apptainer is on PATH "
                         "(install one, or run the rules on workers that have it with -T wq)")
    if not opts.docker:
        return
    if (local_rules or opts.docker_tar) and shutil.which(opts.docker_cmd) is None:
        raise UsageError(f"--docker {opts.docker}: the container command {opts.docker_cmd!r} is not on PATH "
                         "(install it, or choose another with --docker-cmd or TREADLE_DOCKER)")
    if opts.docker_tar:
        out.say(f"loading container image from {opts.docker_tar}...")
        done = subprocess.run([opts.docker_cmd, "load", "-q", "-i", opts.docker_tar],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["exit status " + str(done.returncode)])[-1]
            raise UsageError(f"--docker-tar {opts.docker_tar}: {opts.docker_cmd} load failed: {why}")


def _execute_locked(plan: _Plan, wf: Workflow, journal: jr.Journal, out: Out) -> int:
    """Everything after the log is locked: recovery, the file scan, then clean or run."""
    opts = plan.opts
    graph = Graph(wf)
    identities = jr.rule_identities(wf.rules, opts.container_image)
    history = recovery.replay(plan.log_path, identities, graph.outputs)
    if history.exists:
        out.say(f"recovering from log file {plan.log_path}...")
        out.say("checking for old running or failed jobs...")
    else:
        out.say(f"creating new log file {plan.log_path}...")
    local: Backend | None = None
    remote: Backend | None = None
    progress = None
    gc = None
    hooks: dict[str, Any] = {}
    started_us = jr.now_us()
    tag = history.run_tag(plan.log_path, started_us)
    engine_cell: list[Engine] = []  # the backends exist before the engine they report to

    def notify(handle: int, event: str, **fields: object) -> None:
        engine_cell[0].backend_event(handle, event, **fields)

    if not opts.clean:
        if not opts.dry_run:
            _prepare_containers(opts, out)
        if opts.gc != "none":
            gc = GarbageCollector(wf, graph.producer, opts.gc, opts.gc_count, opts.gc_size)
            hooks.update(on_file_complete=gc.file_complete, gc_tick=gc.tick)
        local, remote = plan.backends(tag, history.max_job_id + 1, len(wf.rules), notify)
        if opts.progress and not os.environ.get("TREADLE_NESTED"):
            from treadle.flow.progress import Progress  # rich, only when a run shows progress

            progress = Progress(len(wf.rules))
            hooks["progress"] = progress.update
    engine = Engine(wf, opts, journal, identities, bytearray(history.states), out=out, graph=graph,
                    touch_files=not opts.dry_run, local=local, remote=remote,
                    max_remote=plan.max_remote if remote is not None else 0,
                    capacity=LocalCapacity(plan.max_local, plan.cores, plan.memory, plan.disk),
                    check_outputs=not opts.dry_run, **hooks)
    engine_cell.append(engine)
    ran = False
    try:
        engine.set_file_states(history.file_states)
        recovering = remote if isinstance(remote, Recovering) else None
        journal.start_segment(plan.batch_log, __version__, started_us,
                              batch=(opts.batch_type, tag) if recovering is not None else None)
        if opts.log_verbose and not history.exists:
            _structure(journal, wf, graph)
            journal.flush()
        if recovering is not None:
            _adopt(engine, recovering, history.previous_jobs(tag))
        recovery.reset_unfinished(engine, history, quiet=bool(opts.clean))
        if opts.skip_file_check:
            out.say("skipping file checks.")
        else:
            out.say("checking files for unexpected changes...  (use --skip-file-check to skip this step)")
            errors = recovery.scan_files(engine, history, missing_input_is_error=not opts.clean)
            if errors:
                journal.marker("FAILED")
                out.flush()
                return 1
        if opts.clean:
            out.say("cleaning filesystem...")
            if not clean(engine, history, opts.clean, plan.log_path, plan.batch_log):
                journal.marker("COMPLETED")
            out.say("nothing left to do.")
            out.flush()
            return 0
        ran = True
        return _run(plan, engine, out, gc)
    finally:
        if progress is not None:
            progress.stop()
        if not ran:
            for backend in (local, remote):
                if backend is not None:
                    backend.close()


def _adopt(engine: Engine, backend: Recovering, previous: dict[int, tuple[int, str]]) -> None:
    """Let the batch backend take over the jobs the previous engine of this run left behind."""
    if not previous:
        return
    adopted = backend.recover({handle: native for handle, native in previous.values()})
    for rid, (handle, native) in previous.items():
        if handle in adopted:
            engine.adopt(rid, handle, native)


def _run(plan: _Plan, engine: Engine, out: Out, gc: GarbageCollector | None) -> int:
    """Run the engine to the end (or an abort signal), then write the end marker and the summary."""
    opts = plan.opts
    engine.prepare()
    out.say("starting workflow....")
    for backend in (engine.local, engine.remote):
        greeting = backend.greeting() if backend is not None else None
        if greeting:
            out.say(f"{greeting}.")
    out.flush()
    previous = {}

    def on_signal(signum: int, frame: object) -> None:
        engine.request_abort()

    if threading.current_thread() is threading.main_thread():  # Python delivers signals there only
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        engine.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if not engine.aborted:  # an abort has closed them already
            for backend in (engine.local, engine.remote):
                if backend is not None:
                    backend.close()
    journal = engine.journal
    if engine.aborted:
        status, code = "aborted", 1
        journal.marker("ABORTED")
        out.warn("workflow was aborted.")
    elif engine.failures:
        status, code = "failed", 1
        journal.marker("FAILED")
        out.warn("workflow failed.")
        for line in failure_report(engine):
            out.warn(line)
    else:
        status, code = "completed", 0
        if gc is not None:
            gc.collect(engine)
        journal.marker("COMPLETED")
        out.say("nothing left to do.")
    out.flush()
    if opts.summary_log:
        write_summary(opts.summary_log, engine, status, plan.started, opts.command_line)
        out.warn(f"writing summary to {opts.summary_log}.")
    return code
