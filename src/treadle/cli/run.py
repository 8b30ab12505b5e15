"""``treadle run``: run a Makeflow workflow, accepting the reference ``makeflow``'s command line.

The options are parsed here by hand, getopt-style, because the reference's
command line has two things argparse cannot express: ``-c``
takes an optional argument that must be attached (``-coutputs``,
``--clean=outputs``), and long options may be abbreviated to any unique
prefix. The result is one :class:`~treadle.flow.options.RunOptions`;
:func:`treadle.flow.run.run_workflow` then runs the workflow and returns the exit status.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import click

from treadle import __version__
from treadle.backends.logs import LOG_CAP
from treadle.cli import CONTEXT_SETTINGS
from treadle.cli.ranges import AMOUNT, BYTES, COUNT, PORT, RATE, SECONDS, WHOLE_SECONDS
from treadle.errors import TreadleError, UsageError
from treadle.flow.options import (
    CLEAN_MODES,
    DEFAULT_RETRIES_WITH_R,
    GC_METHODS,
    RunOptions,
)
from treadle.flow.run import run_workflow
from treadle.flow.wrappers import DOCKER_CLIS

DEBUG_SUBSYSTEMS = ("all", "makeflow", "makeflow_parser", "makeflow_lexer", "makeflow_run", "batch", "wq")


@dataclass(frozen=True, slots=True)
class Opt:
    """One option of the reference's command line: its names, whether it takes a value, and how to show it."""

    short: str | None
    longs: tuple[str, ...]
    arg: bool
    dest: str
    help: str
    metavar: str = ""  # how --help names the value
    type: click.ParamType | None = None  # a number's range; the value is converted and checked with it


# The fast-abort multiplier of Work Queue; a negative one turns fast abort off, as in the reference.
FAST_ABORT = click.FloatRange(-1, RATE.max)

OPTIONS: tuple[Opt, ...] = (
    Opt("T", ("batch-type",), True, "batch_type", "where rules run: local (default), wq, slurm, condor, dryrun",
        "TYPE"),
    Opt("j", ("max-local",), True, "max_local", "most local jobs at once (default: cores)", "N", COUNT),
    Opt("J", ("max-remote",), True, "max_remote", "most remote jobs at once (100; 1000 for wq)", "N", COUNT),
    Opt("c", ("clean",), False, "clean", "delete what the workflow made: all, outputs, intermediates, cache",
        "MODE"),
    Opt("l", ("makeflow-log",), True, "log_path", "transaction log (default: DAGFILE.makeflowlog)", "FILE"),
    Opt("L", ("batch-log",), True, "batch_log", "batch system log", "FILE"),
    Opt("R", ("retry",), False, "retry", "retry failed rules up to 5 times"),
    Opt("r", ("retry-count",), True, "retries", "retry failed rules up to N times", "N", AMOUNT),
    Opt("g", ("gc",), True, "gc", "garbage collection: none, ref_cnt, on_demand, all", "METHOD"),
    Opt("G", ("gc-count",), True, "gc_count", "files kept before on_demand collection", "N", AMOUNT),
    Opt(None, ("gc-size",), True, "gc_size", "collect when free disk falls below BYTES", "BYTES", BYTES),
    Opt("f", ("summary-log",), True, "summary_log", "write a summary of the run to FILE", "FILE"),
    Opt("m", ("email",), True, "email", "no effect: treadle sends no mail (-f FILE writes the summary)",
        "ADDRESS"),
    Opt("d", ("debug",), True, "debug", "debug output for a subsystem (all, makeflow, batch, wq, ...)",
        "SUBSYSTEM"),
    Opt("o", ("debug-file",), True, "debug_file", "write debug output to FILE", "FILE"),
    Opt(None, ("json",), False, "json", "the workflow is JSON"),
    Opt(None, ("jx",), False, "jx", "the workflow is JX"),
    Opt(None, ("jx-args",), True, "jx_args", "JX arguments file", "FILE"),
    Opt(None, ("jx-define",), True, "jx_define", "define a JX variable: VAR=EXPR", "VAR=EXPR"),
    Opt(None, ("argv",), True, "argv", "read options from a JSON file", "FILE"),
    Opt(None, ("skip-file-check",), False, "skip_file_check",
        "skip the start-up check of inputs and of finished rules' outputs"),
    Opt(None, ("checksum-sources",), False, "checksum_sources", "also hash original inputs to detect changes"),
    Opt("N", ("project-name",), True, "project_name", "Work Queue project name (turns on the catalog)", "NAME"),
    Opt("p", ("port",), True, "port", "Work Queue port (default 9123; 0 picks a free one, printed at start)",
        "PORT", PORT),
    Opt(None, ("bind",), True, "bind", "listen for workers on this address only (default: every interface)",
        "ADDRESS"),
    Opt("Z", ("port-file",), True, "port_file", "write the Work Queue port to FILE", "FILE"),
    Opt("C", ("catalog-server",), True, "catalog", "catalog server HOST:PORT", "HOST:PORT"),
    Opt(None, ("password",), True, "password_file", "Work Queue password file", "FILE"),
    Opt("a", ("advertise",), False, "advertise", "advertise the manager to the catalog"),
    Opt("F", ("fast-abort", "wq-fast-abort"), True, "fast_abort", "Work Queue fast-abort multiplier",
        "MULTIPLIER", FAST_ABORT),
    Opt("t", ("keepalive-timeout", "wq-keepalive-timeout"), True, "keepalive_timeout",
        "Work Queue keepalive timeout", "S", WHOLE_SECONDS),
    Opt("u", ("keepalive-interval", "wq-keepalive-interval"), True, "keepalive_interval",
        "Work Queue keepalive interval", "S", WHOLE_SECONDS),
    Opt("W", ("schedule", "wq-schedule"), True, "schedule", "Work Queue scheduling mode", "MODE"),
    Opt("P", ("priority",), True, "priority", "no effect yet: the manager's priority among managers (issue 15)",
        "N"),
    Opt(None, ("factory",), True, "factory",
        "start Work Queue workers as batch jobs from inside the run, e.g. slurm:max=20,cores=4", "SPEC"),
    Opt("B", ("batch-options",), True, "batch_options", "text added to every remote submission", "TEXT"),
    Opt("S", ("submission-timeout",), True, "submission_timeout",
        "keep retrying a refused batch submission for S seconds (default 600)", "S", SECONDS),
    Opt(None, ("batch-dir",), True, "batch_dir",
        "job scripts, status files and job logs of -T slurm/condor (default: DAGFILE.batch)", "DIR"),
    Opt(None, ("submit-rate",), True, "submit_rate", "most submit commands per second (default 10)", "R", RATE),
    Opt(None, ("poll-min",), True, "poll_min", "seconds between scheduler queries after a submission (default 2)",
        "S", SECONDS),
    Opt(None, ("poll-max",), True, "poll_max",
        "longest interval between scheduler queries (default 30; at most Slurm's MinJobAge/3)", "S", SECONDS),
    Opt(None, ("lost-retries",), True, "lost_retries",
        "resubmit a job the scheduler lost (node failure, cancelled) up to N times (default 3)", "N", AMOUNT),
    Opt(None, ("pending-grace",), True, "pending_grace",
        "fail a job pending for a reason that cannot clear after S seconds (default 60)", "S", SECONDS),
    Opt(None, ("hold-timeout",), True, "hold_timeout", "cancel and resubmit a job held longer than S seconds "
        "(default 600)", "S", SECONDS),
    Opt(None, ("keep-batch-logs",), True, "keep_batch_logs",
        "keep the scheduler's job logs: failed (default), all or none", "WHICH"),
    Opt(None, ("slurm-array",), True, "slurm_array",
        "group jobs of one shape into Slurm arrays: auto (default), off, or at most N per array", "auto|off|N"),
    Opt(None, ("slurm-status",), True, "slurm_status",
        "how ended jobs are looked up: auto (default), squeue or sacct", "SOURCE"),
    Opt(None, ("slurm-disk",), True, "slurm_disk", "send DISK to Slurm as --tmp (tmp) or not at all (off, default)",
        "tmp|off"),
    Opt(None, ("slurm-gpu-flag",), True, "slurm_gpu_flag", "ask Slurm for GPUS with --gres (default) or --gpus",
        "gres|gpus"),
    Opt(None, ("safe-submit-mode",), False, "safe_submit_mode", "send no resource options to the batch system"),
    Opt(None, ("ignore-memory-spec",), False, "ignore_memory_spec", "send no memory request to the batch system"),
    Opt(None, ("verbose-jobnames",), False, "verbose_jobnames", "no effect: batch jobs are named treadle-TAG"),
    Opt(None, ("working-dir",), True, "working_dir",
        "no effect: batch jobs run in the workflow's directory, wq tasks in a sandbox", "DIR|URL"),
    Opt(None, ("disable-heartbeat",), False, "disable_heartbeat",
        "no effect: batch jobs are watched through the batch system, not a heartbeat"),
    Opt(None, ("batch-mem-type",), True, "batch_mem_type", "no effect: SGE's memory resource (no -T sge)", "TYPE"),
    Opt(None, ("condor-requirements",), True, "condor_requirements", "HTCondor requirements of every job", "EXPR"),
    Opt(None, ("condor-autosize",), False, "condor_autosize",
        "let HTCondor jobs grow to fill the slot they land on"),
    Opt(None, ("condor-getenv",), True, "condor_getenv",
        "environment HTCondor jobs take from the engine: all (default), none, or a list of names", "none|all|LIST"),
    Opt(None, ("local-cores",), True, "local_cores", "cores the local executor may use", "N", COUNT),
    Opt(None, ("local-memory",), True, "local_memory", "memory (MB) the local executor may use", "MB", AMOUNT),
    Opt(None, ("local-disk",), True, "local_disk", "disk (MB) the local executor may use", "MB", AMOUNT),
    Opt(None, ("log-verbose",), False, "log_verbose", "write the DAG structure into a new log"),
    Opt("X", ("change-directory",), True, "change_directory", "change to DIR first", "DIR"),
    Opt(None, ("send-environment",), False, "send_environment", "send the whole environment to remote jobs"),
    Opt(None, ("do-not-save-failed-output",), False, "no_save_failed", "do not keep makeflow.failed.ID/"),
    Opt(None, ("keep-logs",), False, "keep_logs",
        "keep successful rules' logs too: each attempt's stdout and stderr go to .LOG.logs/ID.ATTEMPT.out "
        "and .err beside the log (LOG: its name less .makeflowlog; over wq both streams are in .out), "
        f"capped to the first and last {LOG_CAP // 2048} KiB; failed rules' logs are always kept"),
    Opt(None, ("wait-for-files-upto",), True, "wait_for_files", "wait up to N s for outputs to appear",
        "N", WHOLE_SECONDS),
    Opt(None, ("shared-fs",), True, "shared_fs",
        "DIR (absolute) is a filesystem the workers share: files under it are checked, never transferred; "
        "repeatable", "DIR"),
    Opt(None, ("mounts",), True, "mounts",
        "fetch the files FILE maps (TARGET SOURCE a line; SOURCE a path or http(s) URL) before the run", "FILE"),
    Opt(None, ("cache",), True, "cache", "where the mount file's sources are kept once fetched (default: DAGFILE.cache)", "DIR"),
    Opt("z", ("zero-length-error",), False, "zero_length_error", "an empty output counts as missing"),
    Opt(None, ("sandbox",), False, "sandbox", "run each local rule in a private directory"),
    Opt(None, ("storage-type",), True, "storage_type", "storage allocation type (0 MAX, 1 MIN, 2 OUTPUT, 3 OFF)",
        "TYPE", click.IntRange(0, 3)),
    Opt(None, ("storage-limit",), True, "storage_limit", "storage allocation limit", "BYTES", BYTES),
    Opt(None, ("storage-print",), True, "storage_print", "write storage use to FILE", "FILE"),
    Opt(None, ("archive",), False, "archive",
        "restore finished rules from the archive instead of running them, and store the ones that run", "DIR"),
    Opt(None, ("archive-read",), False, "archive_read", "restore from the archive, store nothing"),
    Opt(None, ("archive-write",), False, "archive_write", "store in the archive, restore nothing"),
    Opt(None, ("archive-dir",), True, "archive_dir",
        "the archive's directory (default: $XDG_CACHE_HOME/treadle/archive, else ~/.cache/treadle/archive)", "DIR"),
    Opt(None, ("wrapper",), True, "wrappers",
        "run every rule's command inside CMD: at its first {}, quoted at [], or appended; repeatable, the first "
        "given innermost; %% becomes the rule's id", "CMD"),
    Opt(None, ("wrapper-input",), True, "wrapper_inputs",
        "a file every job needs (shipped like an input; %% becomes the rule's id; LOCAL=REMOTE renames)", "FILE"),
    Opt(None, ("wrapper-output",), True, "wrapper_outputs",
        "a file every job makes (brought back like an output; %% becomes the rule's id)", "FILE"),
    Opt(None, ("docker",), True, "docker",
        "run every rule in a new container of IMAGE (working directory mounted, removed afterwards)", "IMAGE"),
    Opt(None, ("docker-tar",), True, "docker_tar", "load the container image from TAR once before the run", "TAR"),
    Opt(None, ("docker-opt",), True, "docker_opt", "more options for the container's `run`", "TEXT"),
    Opt(None, ("docker-cmd",), True, "docker_cmd",
        "the docker-compatible command: docker (default) or podman; also TREADLE_DOCKER", "CMD"),
    Opt(None, ("singularity",), True, "singularity", "run every rule with singularity (or apptainer) in IMAGE",
        "IMAGE"),
    Opt(None, ("singularity-opt",), True, "singularity_opt", "more options for `singularity exec`", "TEXT"),
    Opt(None, ("dry-run",), False, "dry_run", "print what would run into DAGFILE.sh; run nothing"),
    Opt("b", ("bundle-dir",), True, "bundle_dir",
        "copy the workflow and every input it names into DIR, to run there unchanged; run nothing", "DIR"),
    Opt("h", ("help",), False, "help", "show this help"),
    Opt("v", ("version",), False, "version", "show the version"),
)
# The sections of --help, named and filled as the reference makeflow's are (by dest).
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Basic options", ("clean", "debug", "debug_file", "batch_type", "dry_run", "bundle_dir", "argv", "version",
                       "help")),
    ("Workflow handling", ("advertise", "log_path", "batch_log", "json", "jx", "jx_args", "jx_define",
                           "log_verbose", "max_local", "max_remote", "retry", "retries", "send_environment",
                           "summary_log", "email", "keep_logs")),
    ("Data handling", ("change_directory", "gc", "gc_size", "gc_count", "skip_file_check", "checksum_sources",
                       "no_save_failed", "storage_limit", "storage_type", "storage_print", "wait_for_files",
                       "shared_fs", "mounts", "cache", "zero_length_error", "archive", "archive_read", "archive_write", "archive_dir")),
    ("Work Queue options", ("catalog", "password_file", "port", "bind", "port_file", "project_name",
                            "fast_abort", "keepalive_timeout", "keepalive_interval", "schedule", "priority", "factory")),
    ("Batch system options", ("batch_options", "local_cores", "local_memory", "local_disk", "submission_timeout",
                              "batch_dir", "submit_rate", "poll_min", "poll_max", "lost_retries",
                              "pending_grace", "hold_timeout", "keep_batch_logs", "slurm_array", "slurm_status",
                              "slurm_disk", "slurm_gpu_flag", "safe_submit_mode", "ignore_memory_spec",
                              "verbose_jobnames", "working_dir", "disable_heartbeat", "batch_mem_type",
                              "condor_requirements", "condor_autosize", "condor_getenv")),
    ("Containers and wrappers", ("sandbox", "wrappers", "wrapper_inputs", "wrapper_outputs", "docker", "docker_tar",
                                 "docker_opt", "docker_cmd", "singularity", "singularity_opt")),
)
_SHORT = {o.short: o for o in OPTIONS if o.short}
_LONG = {name: o for o in OPTIONS for name in o.longs}


class _Exit(Exception):
    def __init__(self, status: int):
        self.status = status


def _resolve_long(name: str) -> Opt:
    """An exact long name, or the one option that ``name`` is a prefix of."""
    opt = _LONG.get(name)
    if opt is not None:
        return opt
    hits = {o.dest: o for n, o in _LONG.items() if n.startswith(name)}
    if len(hits) == 1:
        return next(iter(hits.values()))
    if not hits:
        raise UsageError(f"unrecognized option '--{name}' (see treadle run --help)")
    names = ", ".join(sorted(f"--{n}" for n, o in _LONG.items() if n.startswith(name)))
    raise UsageError(f"option '--{name}' is ambiguous; possibilities: {names}")


def tokenize(argv: Sequence[str]) -> tuple[list[tuple[Opt, str | None]], list[str]]:
    """Split a reference-style command line into (option, value) pairs and positional words."""
    pairs: list[tuple[Opt, str | None]] = []
    words: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if a == "--":
            words += args[i:]
            break
        if a.startswith("--"):
            name, eq, value = a[2:].partition("=")
            opt = _resolve_long(name)
            if opt.dest == "clean":
                pairs.append((opt, value if eq else "all"))
            elif opt.dest == "archive":
                pairs.append((opt, value if eq else None))
            elif opt.arg:
                if not eq:
                    if i >= len(args):
                        raise UsageError(f"option '--{name}' requires an argument")
                    value = args[i]
                    i += 1
                pairs.append((opt, value))
            else:
                if eq:
                    raise UsageError(f"option '--{name}' doesn't allow an argument")
                pairs.append((opt, None))
            if opt.dest == "argv":
                args[i:i] = _argv_file(pairs.pop()[1] or "")
            continue
        if a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                ch = a[j]
                short = _SHORT.get(ch)
                if short is None:
                    raise UsageError(f"unrecognized option '-{ch}' (see treadle run --help)")
                opt = short
                rest = a[j + 1 :]
                if opt.dest == "clean":
                    pairs.append((opt, rest or "all"))
                    break
                if opt.arg:
                    if not rest:
                        if i >= len(args):
                            raise UsageError(f"option '-{ch}' requires an argument")
                        rest = args[i]
                        i += 1
                    pairs.append((opt, rest))
                    break
                pairs.append((opt, None))
                j += 1
            continue
        words.append(a)
    return pairs, words


def _argv_file(path: str) -> list[str]:
    """Options from a JSON object (``--argv``): long names as keys, ``MAKEFLOW`` for the dagfile."""
    try:
        with open(path, encoding="utf-8") as f:
            items = json.load(f, object_pairs_hook=list)
    except OSError as e:
        raise UsageError(f"cannot read --argv file {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}:{e.lineno}:{e.colno}: error: {e.msg}") from None
    if not isinstance(items, list):
        raise UsageError(f"--argv file {path} must hold a JSON object")
    out: list[str] = []
    for key, value in items:
        values = value if isinstance(value, list) else [value]
        for v in values:
            if key == "MAKEFLOW":
                out.append(str(v))
            elif key == "argv":
                out += _argv_file(str(v))
            elif v is None or v is True:
                out.append(f"--{key}")
            elif v is False:
                continue
            else:
                out.append(f"--{key}={v}")
    return out


def _number(opt: Opt, value: str | None) -> int | float:
    """``value`` converted and checked by the option's range: one line for a bad one, never a traceback."""
    assert opt.type is not None
    try:
        return opt.type.convert(value or "", None, None)
    except click.BadParameter as e:
        raise UsageError(f"option --{opt.longs[0]}: {e.message}") from None


FLAG_DESTS = {
    "skip_file_check", "checksum_sources", "advertise", "log_verbose", "send_environment",
    "zero_length_error", "sandbox", "keep_logs", "safe_submit_mode", "ignore_memory_spec", "condor_autosize",
    "verbose_jobnames", "disable_heartbeat",
}


_RUN_FIELDS = {f.name for f in dataclasses.fields(RunOptions)}


def parse_args(argv: Sequence[str], environ: dict[str, str] | None = None) -> RunOptions:
    """The run options for a reference-style command line (see docs/cli.md)."""
    from treadle.backends.registry import check_batch_type

    env = os.environ if environ is None else environ
    pairs, words = tokenize(argv)
    fields: dict[str, Any] = {}
    debug: list[str] = []
    jx_args: list[str] = []
    jx_define: list[str] = []
    repeated: dict[str, list[str]] = {"wrappers": [], "wrapper_inputs": [], "wrapper_outputs": [], "shared_fs": []}
    for opt, value in pairs:
        dest = opt.dest
        if dest == "help":
            click.echo(usage())
            raise _Exit(0)
        if dest == "version":
            click.echo(f"treadle run version {__version__} (Makeflow-compatible)")
            raise _Exit(0)
        if opt.type is not None:
            fields[dest] = _number(opt, value)
        elif dest in FLAG_DESTS:
            fields[dest] = True
        elif dest == "retry":
            fields["retries"] = DEFAULT_RETRIES_WITH_R
        elif dest == "clean":
            if value not in CLEAN_MODES:
                raise UsageError(f"unknown clean mode {value!r} (expected {', '.join(CLEAN_MODES)})")
            fields["clean"] = value
        elif dest == "gc":
            method = {"ref_count": "ref_cnt", "demand": "on_demand"}.get(value or "", value)
            if method not in GC_METHODS:
                raise UsageError(f"invalid garbage collection method {value!r} (expected {', '.join(GC_METHODS)})")
            fields["gc"] = method
        elif dest == "debug":
            for sub in (value or "").split(","):
                if sub not in DEBUG_SUBSYSTEMS:
                    click.echo(f"treadle run: warning: unknown debug subsystem {sub!r}", err=True)
                debug.append(sub)
        elif dest == "json":
            fields["fmt"] = "json"
        elif dest == "jx":
            fields["fmt"] = "jx"
        elif dest == "jx_args":
            jx_args.append(value or "")
            fields.setdefault("fmt", "jx")
        elif dest == "jx_define":
            jx_define.append(value or "")
            fields.setdefault("fmt", "jx")
        elif dest == "archive":
            fields["archive_read"] = fields["archive_write"] = True
            if value:
                fields["archive_dir"] = value
        elif dest in ("archive_read", "archive_write"):
            fields[dest] = True
        elif dest == "dry_run":
            fields["batch_type"] = "dryrun"
        elif dest == "no_save_failed":
            fields["save_failed_output"] = False
        elif dest == "shared_fs":
            if not os.path.isabs(value or ""):
                raise UsageError(f"--shared-fs {value}: the shared filesystem must be given as an absolute path")
            repeated[dest].append(os.path.normpath(value or ""))
        elif dest in repeated:
            repeated[dest].append(value or "")
        else:
            fields[dest] = value
    if len(words) > 1:
        raise UsageError(f"only one workflow file may be given, got: {' '.join(words)}")
    if words:
        fields["dagfile"] = words[0]
    batch_type = str(fields.get("batch_type") or env.get("MAKEFLOW_BATCH_QUEUE_TYPE") or "local")
    check_batch_type(batch_type)
    fields["batch_type"] = batch_type
    for dest, var in (("max_local", "MAKEFLOW_MAX_LOCAL_JOBS"), ("max_remote", "MAKEFLOW_MAX_REMOTE_JOBS")):
        if dest in fields and env.get(var, "").strip().isdigit():
            fields[dest] = min(int(fields[dest]), int(env[var]))
    if "batch_options" not in fields and env.get("BATCH_OPTIONS"):
        fields["batch_options"] = env["BATCH_OPTIONS"]
    if fields.get("clean"):
        fields["batch_type"] = "local"
    fields.update({dest: tuple(values) for dest, values in repeated.items()})
    _check_containers(fields, env)
    # What RunOptions has no field for belongs to one backend (-p, -N... for wq): it reads them itself.
    settings = {dest: fields.pop(dest) for dest in list(fields) if dest not in _RUN_FIELDS}
    return RunOptions(
        **fields,
        backend_settings=settings,
        debug=tuple(debug),
        jx_args=tuple(jx_args),
        jx_define=tuple(jx_define),
        command_line=("makeflow" if os.path.basename(sys.argv[0]) == "makeflow" else "treadle run", *argv),
    )


def _check_containers(fields: dict[str, Any], env: Mapping[str, str]) -> None:
    """The container options, settled: one container at most, and the docker command chosen."""
    if fields.get("docker") and fields.get("singularity"):
        raise UsageError("--docker and --singularity cannot be used together: choose one container")
    for dest, needs in (("docker_tar", "docker"), ("docker_opt", "docker"), ("singularity_opt", "singularity")):
        if fields.get(dest) and not fields.get(needs):
            raise UsageError(f"--{dest.replace('_', '-')} needs --{needs} IMAGE")
    cli = fields.get("docker_cmd") or env.get("TREADLE_DOCKER") or "docker"
    if cli not in DOCKER_CLIS:
        raise UsageError(f"unknown docker command {cli!r} (expected {' or '.join(DOCKER_CLIS)})")
    fields["docker_cmd"] = cli


EXAMPLES = (
    ("treadle run -j 4 wf.mf", "run on this machine, 4 jobs at a time"),
    ("treadle run -T wq -p 0 wf.mf", "run on Work Queue workers; prints the port picked. The manager "
                                     "listens on every interface (workers are remote) unless --bind ADDRESS"),
    ("treadle run --dry-run wf.mf", "write what would run to wf.mf.sh"),
    ("treadle run -c wf.mf", "delete everything the workflow made"),
    ("treadle run -b bundle wf.mf", "copy wf.mf and its inputs into bundle/ (then: cd bundle && treadle run wf.mf)"),
)


def usage() -> str:
    """The help, in sections as the reference makeflow groups its options, wrapped at the terminal's width."""
    formatter = click.HelpFormatter(max_width=CONTEXT_SETTINGS["max_content_width"])
    formatter.write_usage("treadle run", "[OPTIONS] [DAGFILE]")
    formatter.write_paragraph()
    with formatter.indentation():
        formatter.write_text("Run a Makeflow workflow (default DAGFILE: ./Makeflow). The options are the "
                             "reference makeflow's, so `alias makeflow='treadle run'` works in its scripts. "
                             "Long options may be abbreviated to any unique prefix.")
    with formatter.section("Examples"):
        formatter.write_dl(EXAMPLES)
    by_dest = {o.dest: o for o in OPTIONS}
    grouped = {dest for _, dests in GROUPS for dest in dests}
    sections = [*GROUPS, ("Other options", tuple(d for d in by_dest if d not in grouped))]
    for title, dests in sections:
        if dests:
            with formatter.section(title):
                formatter.write_dl([_help_row(by_dest[d]) for d in dests])
    return formatter.getvalue().rstrip("\n")


def _help_row(o: Opt) -> tuple[str, str]:
    if o.dest == "clean":
        return f"-c, --clean[={o.metavar}]", o.help
    if o.dest == "archive":
        return f"--archive[={o.metavar}]", o.help
    names = ", ".join(([f"-{o.short}"] if o.short else []) + [f"--{n}" for n in o.longs])
    return (f"{names} {o.metavar}" if o.arg else names), o.help


# --- running -----------------------------------------------------------------------------


def execute(opts: RunOptions) -> int:
    """Run the workflow the command line describes; the exit status (see :func:`run_workflow`)."""
    bundle_dir = opts.backend_settings.get("bundle_dir")
    if bundle_dir:
        return _bundle(opts, str(bundle_dir))
    return run_workflow(opts)


def _bundle(opts: RunOptions, bundle_dir: str) -> int:
    """``-b DIR``: write the bundle and run nothing (as the reference's ``makeflow_analyze -b``)."""
    from treadle.flow.bundle import bundle_workflow
    from treadle.flow.parser import parse_file

    if opts.change_directory:
        try:
            os.chdir(opts.change_directory)
        except OSError as e:
            raise UsageError(f"cannot change to directory {opts.change_directory}: {e.strerror}") from None
    wf = parse_file(opts.dagfile, fmt=opts.fmt, jx_args=list(opts.jx_args) or None,
                    jx_define=list(opts.jx_define) or None)
    for name in bundle_workflow(wf, opts.dagfile, opts.jx_args, bundle_dir):
        click.echo(f"{name}\t{os.path.join(bundle_dir, os.path.normpath(name))}")
    return 0


@click.command(
    "run",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args: tuple[str, ...]) -> None:
    """Run a Makeflow workflow (accepts the reference makeflow's options; see -h)."""
    try:
        opts = parse_args(args)
    except _Exit as e:
        sys.exit(e.status)
    try:
        status = execute(opts)
    except TreadleError:
        sys.stdout.flush()
        raise
    except BrokenPipeError:
        # stdout went away (`treadle run wf | head`): stop quietly, as the reference does on SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    sys.exit(status)
