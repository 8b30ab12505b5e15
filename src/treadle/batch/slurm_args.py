"""What treadle asks of ``sbatch``: the user's Slurm choices, resource options, ``-B`` checks, argv.

Everything here is pure (no command runs), so every rule shape can be checked
against a golden argv without a cluster (docs/batch.md, "Resources").
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from treadle.batch.base import Request
from treadle.errors import UsageError

# Options treadle sets itself; in -B or BATCH_OPTIONS they would break tracking
# (name, comment, array, log) or the answer's format (--parsable).
SLURM_OWNED = ("--parsable", "-J", "--job-name", "-o", "--output", "-e", "--error", "-a",
               "--array", "-D", "--chdir", "--wrap", "--comment")

_OWNED_LONG = tuple(option for option in SLURM_OWNED if option.startswith("--"))
_OWNED_SHORT = {option[1] for option in SLURM_OWNED if not option.startswith("--")}
# sbatch's short options that take no value, so that more letters may follow in one word
# (``-vJname`` is -v then -J); the first letter that takes a value ends the flags.
_FLAG_LETTERS = set("hHkOQsuvVW")


@dataclass(frozen=True, slots=True)
class SlurmSettings:
    """The user's Slurm choices (``-T slurm`` options, factory options); defaults live here only.

    ``array``: "auto" (chunks of up to 1000), "off" (one job per rule) or a
    chunk size; ``disk``: "tmp" sends DISK as ``--tmp`` (many sites leave it
    unset, so "off" by default); ``gpu_flag``: ``--gres=gpu:N`` or
    ``--gpus=N``; ``status``: where endings are read ("auto" uses accounting
    when the cluster has it). ``safe_submit`` sends no resource options at all
    and ``ignore_memory`` no ``--mem``, as the reference's flags of the same names.
    """

    array: str = "auto"
    disk: str = "off"
    gpu_flag: str = "gres"
    status: str = "auto"
    safe_submit: bool = False
    ignore_memory: bool = False

    def __post_init__(self) -> None:
        if self.array not in ("auto", "off") and not (self.array.isdigit() and int(self.array) > 0):
            raise UsageError(f"--slurm-array must be auto, off or a positive number, not {self.array!r}")
        for option, value, allowed in (("--slurm-disk", self.disk, ("off", "tmp")),
                                       ("--slurm-gpu-flag", self.gpu_flag, ("gres", "gpus")),
                                       ("--slurm-status", self.status, ("auto", "squeue", "sacct"))):
            if value not in allowed:
                raise UsageError(f"{option} must be {' or '.join(allowed)}, not {value!r}")

    def chunk_limit(self, max_array_size: int) -> int:
        """The most jobs one array may hold: the user's choice, within the cluster's MaxArraySize."""
        wanted = {"auto": 1000, "off": 1}.get(self.array) or int(self.array)
        return max(1, min(wanted, max_array_size - 1))


def _positive(value: int | None) -> int | None:
    """A requested amount, or None when not asked: Slurm reads 0 as "all" (--mem) or "no limit" (--time)."""
    return value if value is not None and value > 0 else None


def resource_args(request: Request, settings: SlurmSettings) -> list[str]:
    """The ``sbatch`` options for a request: one node; cores split over the MPI processes.

    Raises :class:`UsageError` when the cores do not split evenly over the
    processes, since Slurm can only give each process the same number of CPUs.
    """
    if settings.safe_submit:
        return []
    args: list[str] = []
    cores, procs = _positive(request.cores), _positive(request.procs)
    if cores is not None or procs is not None:
        tasks = procs or 1
        args += ["--nodes=1", f"--ntasks={tasks}"]
        if cores is not None:
            if cores % tasks:
                raise UsageError(f"{cores} cores do not split evenly over {tasks} MPI processes")
            args.append(f"--cpus-per-task={cores // tasks}")
    memory = _positive(request.memory)
    if memory is not None and not settings.ignore_memory:
        args.append(f"--mem={memory}M")
    disk = _positive(request.disk)
    if disk is not None and settings.disk == "tmp":
        args.append(f"--tmp={disk}M")
    gpus = _positive(request.gpus)
    if gpus is not None:
        args.append(f"--gres=gpu:{gpus}" if settings.gpu_flag == "gres" else f"--gpus={gpus}")
    wall = _positive(request.wall)
    if wall is not None:
        args.append(f"--time={math.ceil(wall / 60)}")
    return args


def _owned_long(word: str) -> str | None:
    """The owned option a long option names, abbreviations included (sbatch accepts ``--out=``)."""
    name = word.split("=", 1)[0]
    if len(name) <= 2:
        return None  # "--" alone ends the options; nothing owned is spelled that way
    matches = [option for option in _OWNED_LONG if option.startswith(name)]
    return name if name in matches else (matches[0] if matches else None)


def _owned_short(word: str) -> str | None:
    """The owned letter in a word of short options (``-J x``, ``-Jx``, ``-vJx``), if any."""
    for letter in word[1:]:
        if letter in _OWNED_SHORT:
            return f"-{letter}"
        if letter not in _FLAG_LETTERS:
            return None  # this letter takes a value: the rest of the word is that value
    return None


def check_options(options: Sequence[str]) -> None:
    """Refuse options treadle sets itself (job name, log, array...), naming the first one found."""
    for word in options:
        if word.startswith("--"):
            owned = _owned_long(word)
        elif word.startswith("-") and len(word) > 1:
            owned = _owned_short(word)
        else:
            owned = None
        if owned is not None:
            shown = "" if word.split("=", 1)[0] == owned else f" ({owned})"
            raise UsageError(f"batch option {word!r}{shown} is set by treadle itself; "
                             f"treadle sets {', '.join(SLURM_OWNED)}")


def split_options(text: str | None) -> tuple[str, ...]:
    """Split ``-B`` or ``BATCH_OPTIONS`` text as a shell would, but run no shell."""
    if not text:
        return ()
    try:
        return tuple(shlex.split(text))
    except ValueError as error:
        raise UsageError(f"cannot split batch options {text!r}: {error}") from None


def sbatch_argv(*, tag: str, comment: str, workdir: str, output: str | None, request: Request,
                options: Sequence[str], settings: SlurmSettings, elements: int,
                target: Sequence[str]) -> list[str]:
    """The whole ``sbatch`` command for one job (``elements == 1``) or one array.

    ``target`` is the batch script and its argument (the wrapper and a job
    script or chunk directory). The job name carries the run's tag, so one
    ``squeue -n`` finds every job of the run; the comment carries the handle
    or chunk, so jobs can be matched again after the engine restarts.
    """
    argv = ["sbatch", "--parsable", f"--job-name=treadle-{tag}"]
    if comment:
        argv.append(f"--comment={comment}")
    argv += ["--export=ALL", "-D", workdir]
    if elements > 1:
        argv.append(f"--array=0-{elements - 1}")
    if output is not None:
        argv.append(f"--output={output}")
    return argv + resource_args(request, settings) + list(options) + list(target)
