"""What a finished run says about itself: the ``-f`` summary file and the failure report.

Both are written once, at the end of a run, from the engine's counters; the
summary file's tab-separated layout follows the reference's so
scripts that read it keep working.
"""

from __future__ import annotations

import os
import time

from treadle.flow.engine import Engine, _signame
from treadle.flow.journal import ABORTED, COMPLETE, FAILED


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def write_summary(path: str, engine: Engine, status: str, started: float, command_line: tuple[str, ...]) -> None:
    """The ``-f`` file. ``status`` is ``completed``, ``failed`` or ``aborted``."""
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
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write("\n".join(lines) + "\n")


def failure_report(engine: Engine) -> list[str]:
    """Lines for stderr after ``workflow failed.``: each failed rule, and what did not run."""
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
    if engine.not_run:
        lines.append(f"  {engine.not_run} rules not run because of the failures.")
    return lines
