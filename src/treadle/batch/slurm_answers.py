"""Reading what Slurm's commands answer: job ids, queue lines, accounting rows, status files, errors.

Pure functions of text, so each is tested on recorded answers without a
cluster; none raises on text it does not understand (a line it cannot read is
left out), because a status query must never abort a run (docs/batch.md,
"When things go wrong" and "Tracking").
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence

from treadle.batch.base import Observation, State
from treadle.errors import BatchError

# Matched (lower case) in stderr. Transient: the controller is busy or out of reach, or a
# submit limit that clears as jobs end; the same command later will likely work.
_TRANSIENT = (
    "socket timed out",
    "unable to contact slurm controller",
    "unexpected message received",
    "resource temporarily unavailable",
    "job violates accounting/qos policy",
    "temporarily unable to accept job",
    "zero bytes were transmitted or received",
    "communication connection failure",
)
# Permanent: the same request is refused again however long one waits.
_PERMANENT = (
    "invalid account or account/partition combination",
    "requested node configuration is not available",
    "invalid partition name specified",
    "invalid qos specification",
    "requested time limit is invalid",
    "invalid generic resource (gres) specification",
    "invalid feature specification",
    "specification can not be satisfied",  # memory, temporary disk
    "node count specification invalid",
    "unrecognized option",
    "invalid option",
    "invalid --",  # a bad value: "Invalid --time specification"
    "accounting storage is disabled",
)

# squeue and sacct state words that mean the job will not run until someone acts.
_HELD_WORDS = {"REQUEUE_HOLD", "SPECIAL_EXIT", "RESV_DEL_HOLD"}
_PENDING_WORDS = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED"}
_RUNNING_WORDS = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
                  "RESIZING"}


def classify(stderr: str, returncode: int, command: Sequence[str]) -> BatchError:
    """The :class:`BatchError` for a failed Slurm command: transient, permanent or unknown.

    A failure with no message at all is transient (a command killed or cut
    off mid-call says nothing). The command's last line of stderr makes the
    message, the whole of it stays in ``stderr``.
    """
    name = os.path.basename(command[0]) if command else "slurm command"
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    lowered = stderr.lower()
    if not lines:
        kind = "transient"
    elif any(pattern in lowered for pattern in _TRANSIENT):
        kind = "transient"
    elif any(pattern in lowered for pattern in _PERMANENT):
        kind = "permanent"
    else:
        kind = "unknown"
    # The last line the command signed is its verdict ("Try sbatch --help" may follow it).
    signed = [line for line in lines if line.startswith(f"{name}:")] or lines
    said = signed[-1].removeprefix(f"{name}:").strip().removeprefix("error:").strip() if signed else ""
    said = said or "no message"
    return BatchError(f"{name} failed (exit {returncode}): {said}", kind=kind,
                      command=tuple(command), returncode=returncode, stderr=stderr)


def job_id(stdout: str) -> str | None:
    """The id in ``sbatch --parsable``'s answer (``1234`` or ``1234;cluster``), or None."""
    first = stdout.strip().split("\n", 1)[0].split(";", 1)[0].strip()
    return first if first.isdigit() else None


def queue_state(word: str, reason: str) -> State:
    """Where a job is, from squeue's or sacct's state word (and the reason, for holds)."""
    if word == "PENDING" and reason.startswith("JobHeld"):
        return State.HELD
    if word in _HELD_WORDS:
        return State.HELD
    if word in _PENDING_WORDS:
        return State.PENDING
    if word in _RUNNING_WORDS:
        return State.RUNNING
    return State.ENDED


def _blank(value: str) -> str:
    """Slurm's way of saying "nothing" (``None``, ``(null)``) as an empty string."""
    return "" if value in ("None", "(null)", "Unknown") else value


def parse_queue(text: str) -> list[Observation]:
    """``squeue -h -o '%i|%T|%r|%N|%k'`` lines as observations; the comment may hold ``|``."""
    found = []
    for line in text.splitlines():
        fields = line.split("|", 4)
        if len(fields) != 5 or not fields[0]:
            continue
        native, word, reason, host, comment = fields
        found.append(Observation(native.strip(), queue_state(word, reason), word=word,
                                 reason=_blank(reason), host=_blank(host), label=_blank(comment)))
    return found


def _timestamp(value: str) -> float | None:
    """sacct's local ``2026-12-07T18:20:32`` as Unix seconds; None for ``Unknown``/``None``."""
    try:
        return time.mktime(time.strptime(value, "%Y-%m-%dT%H:%M:%S"))
    except (ValueError, OverflowError):
        return None


def _duration(value: str) -> float | None:
    """sacct's ``[DD-[HH:]]MM:SS[.mmm]`` as seconds."""
    days, _, clock = value.rpartition("-")
    try:
        parts = [float(part) for part in clock.split(":")]
        seconds = sum(part * 60 ** power for power, part in enumerate(reversed(parts)))
        total = seconds + (int(days) * 86400 if days else 0)
    except ValueError:
        return None
    return total if value and math.isfinite(total) else None


def _megabytes(value: str) -> float | None:
    """sacct's ``MaxRSS`` (``1234K``, ``12M``, ``2G``, bare bytes) in MB."""
    scale = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0 ** 2}.get(value[-1:].upper())
    try:
        return float(value[:-1]) * scale if scale else float(value) / 1024 ** 2
    except ValueError:
        return None


def parse_accounting(text: str, wanted: Iterable[str]) -> list[Observation]:
    """``sacct -n -P -o JobID,State,ExitCode,Start,End,TotalCPU,MaxRSS,NodeList`` rows, one per wanted job.

    State and exit come from the job's own row; measured CPU and memory from
    its ``.batch`` step, where the job script ran (else from the job's row).
    """
    wanted = set(wanted)
    rows: dict[str, list[str]] = {}
    steps: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) != 8:
            continue
        native, _, step = fields[0].partition(".")
        if native not in wanted:
            continue
        if not step:
            rows[native] = fields
        elif step == "batch":
            steps[native] = fields
    found = []
    for native, (_, state, exit_code, start, end, _, _, nodes) in rows.items():
        code, _, signal = exit_code.partition(":")
        measured = steps.get(native, rows[native])
        usage = {key: value for key, value in (("cpu", _duration(measured[5])),
                                               ("rss", _megabytes(measured[6])))
                 if value is not None}
        word = state.split(" ", 1)[0]  # "CANCELLED by 0"
        found.append(Observation(
            native, queue_state(word, ""), word=word, host=_blank(nodes),
            exit=int(code) if code.isdigit() else None,
            signal=int(signal) if signal.isdigit() and int(signal) else None,
            start=_timestamp(start), end=_timestamp(end), usage=usage))
    return found


def parse_config(text: str) -> dict[str, str]:
    """``scontrol show config``'s ``Key = Value`` lines as a mapping."""
    config = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            config[key.strip()] = value.strip()
    return config


def status_observation(status: Mapping[str, object]) -> Observation | None:
    """The observation a wrapper's status file makes: the job ended, how, where, with what CPU.

    None when the file lacks the job's native id or exit status (not written by
    the wrapper).
    """
    native, code = status.get("native"), status.get("exit")
    if not isinstance(native, str) or not native or not isinstance(code, int):
        return None

    def number(key: str) -> float | None:
        value = status.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    signal, cpu = status.get("signal"), number("cpu")
    return Observation(native, State.ENDED, word="STATUS", label=str(status.get("handle", "")),
                       host=str(status.get("host", "")), exit=code,
                       signal=signal if isinstance(signal, int) else None,
                       start=number("start"), end=number("end"),
                       usage={"cpu": cpu} if cpu is not None else {})
