"""What a finished run says about itself: the ``-f`` summary file and the failure report.

Both are written once, at the end of a run, from the engine's counters; the
summary file's tab-separated layout follows the reference's so
scripts that read it keep working.
"""

from __future__ import annotations

import os
import time

from treadle.errors import WorkflowError
from treadle.flow.engine import Engine, Failure, _signame
from treadle.flow.journal import ABORTED, COMPLETE, FAILED
from treadle.flow.lexer import excerpt

TAIL_LINES = 10  # lines of a failed rule's stderr in the failure report
_TAIL_BYTES = 64 * 1024  # read from the end of a log for them: a huge log costs no more


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def write_summary(path: str, engine: Engine, status: str, started: float, command_line: tuple[str, ...]) -> None:
    """The ``-f`` file. ``status`` is ``completed``, ``failed`` or ``aborted``.

    A file that cannot be written (a full disk) is a ``WorkflowError``: one line, exit status 1.
    """
    n = len(engine.rules)
    counts = engine.counts
    lines = [
        " ".join(command_line),
        f"Workflow {status}:\t {time.ctime()}",
        f"Total runtime:\t\t {_hms(time.time() - started)}",
        f"Workflow file:\t\t {engine.wf.path}",
        f"Number of tasks:\t {n}",
        f"Completed tasks:\t {counts[COMPLETE]}/{n}",
    ]
    if counts[ABORTED]:
        lines.append(f"Aborted tasks:\t {counts[ABORTED]}/{n}")
    if engine.not_run and status != "completed":
        lines.append(f"Tasks not run:\t {engine.not_run}/{n}")
    if engine.failures or counts[FAILED]:
        lines.append(f"Failed tasks:\t {len(engine.failures)}/{n}")
        lines += [f"\t{engine.command_of(f.rule)}" for f in engine.failures]
    lines.append("Output files:")
    for name in engine.wf.final_outputs():
        try:
            size = os.stat(name).st_size
        except OSError:
            continue
        lines.append(f"\t{name}\t{size}")
    try:
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write("\n".join(lines) + "\n")
    except OSError as e:
        raise WorkflowError(f"could not write the summary file {path}: {e.strerror}") from None


def failure_report(engine: Engine) -> list[str]:
    """Lines for stderr after ``workflow failed.``: each failed rule, and what did not run.

    Under each rule come the last lines of its last attempt's stderr and the
    path of the whole log, as Snakemake and Nextflow show them: the reason a
    rule failed is usually there.
    """
    lines = []
    for f in engine.failures:
        if f.signal is not None:
            how = f"killed by signal {f.signal} ({_signame(f.signal)})"
        elif f.exit_code is not None and f.exit_code != 0:
            how = f"exit status {f.exit_code}"
        else:
            how = f.reason
        tries = "attempt" if f.attempts == 1 else "attempts"
        lines.append(f"  {f.rule.where}: {engine.command_of(f.rule)}: {how} ({f.attempts} {tries})")
        lines += _log_tail(f)
        if f.batch_log is not None:
            lines.append(f"    the batch system's log of the job: {f.batch_log}")
    if engine.not_run:
        lines.append(f"  {engine.not_run} rules not run because of the failures.")
    return lines


def _log_tail(failure: Failure) -> list[str]:
    """The failure report's lines for one rule's log: a heading with its path, then its last lines."""
    path = failure.stderr
    if path is None:
        return []
    what = "stdout and stderr together" if path == failure.stdout else "stderr"
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - _TAIL_BYTES))
            data = f.read()
    except OSError as e:
        return [f"    {what}: {path} could not be read: {e.strerror}"]
    tail = data.decode("utf-8", "replace").splitlines()[-TAIL_LINES:]
    if not tail:
        return [f"    {what}: empty ({path})"]
    return [f"    last lines of {what} (all of it in {path}):", *(f"      {excerpt(line)}" for line in tail)]
