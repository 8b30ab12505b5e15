"""``treadle monitor``: the progress of running or finished workflows, read from their logs.

Each log is read incrementally (only the bytes appended since the last poll),
so watching a million-rule workflow costs nothing. A workflow has finished
when ``# COMPLETED``, ``# FAILED`` or ``# ABORTED`` follows its last
``# STARTED`` (see docs/makeflow.md, 'The log').
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import click


@dataclass(slots=True)
class LogView:
    """What one log says so far."""

    path: str
    offset: int = 0
    partial: bytes = b""
    started: float | None = None
    last_event: float | None = None
    status: str = "waiting"  # waiting, running, completed, failed, aborted
    counts: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0])
    total: int = 0
    done_at_start: int = 0

    def poll(self) -> None:
        """Read what was appended since the last call."""
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:  # the log was replaced
                    self.offset, self.partial = 0, b""
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        for raw in lines:
            self._line(raw.decode("utf-8", "replace"))

    def _line(self, line: str) -> None:
        parts = line.split()
        if not parts:
            return
        if parts[0] == "#":
            if len(parts) < 3 or not parts[2].isdigit():
                return
            label, ts = parts[1], int(parts[2]) / 1e6
            if label == "STARTED":
                self.started, self.status = ts, "running"
                self.done_at_start = self.counts[2]
            elif label in ("COMPLETED", "FAILED", "ABORTED"):
                self.status = label.lower()
            self.last_event = ts
            return
        if len(parts) >= 10 and all(p.lstrip("-").isdigit() for p in parts[:10]):
            self.counts = [int(p) for p in parts[4:9]]
            self.total = int(parts[9])
            self.last_event = int(parts[0]) / 1e6

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "aborted")

    @property
    def progress(self) -> float:
        return self.counts[2] / self.total if self.total else (1.0 if self.finished else 0.0)

    def row(self, now: float) -> str:
        w, r, c, f, a = self.counts
        end = self.last_event if self.finished and self.last_event else now
        elapsed = end - self.started if self.started else 0.0
        rate = (c - self.done_at_start) / elapsed if elapsed > 0 else 0.0
        left = w + r
        if self.finished or not rate or not left:
            eta = "-"
        else:
            eta = _hms(left / rate)
        return (
            f"{self.path:<30} {self.status:<9} {100 * self.progress:5.1f}% {c:>7}/{self.total:<7} "
            f"{w:>7} {r:>7} {f + a:>7} {_hms(elapsed):>9} {rate:8.2f} {eta:>9}"
        )


HEADER = (
    f"{'LOG':<30} {'STATUS':<9} {'DONE':>6} {'RULES':>15} {'WAITING':>7} {'RUNNING':>7} "
    f"{'FAILED':>7} {'ELAPSED':>9} {'RULES/S':>8} {'ETA':>9}"
)


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def render(views: list[LogView], sort: bool, hide_finished: bool) -> list[str]:
    """The table for one poll."""
    now = time.time()
    shown = [v for v in views if not (hide_finished and v.finished)]
    if sort:
        shown.sort(key=lambda v: v.progress, reverse=True)
    return [HEADER, *(v.row(now) for v in shown)]


@click.command("monitor", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-t", "interval", type=click.FloatRange(0.05, 3600), default=1.0, show_default=True,
              metavar="S", help="Seconds between polls.")
@click.option("-S", "sort", is_flag=True, help="Sort the workflows by progress.")
@click.option("-H", "hide", is_flag=True, help="Hide finished workflows.")
@click.argument("logs", nargs=-1, required=True)
def command(interval: float, sort: bool, hide: bool, logs: tuple[str, ...]) -> None:
    """Show the progress of workflows from their logs (LOG is a DAGFILE.makeflowlog).

    Exits once every workflow has finished, so it can follow a run in a script.

    \b
    Example:
      treadle run -l wf.log wf.mf &   then   treadle monitor wf.log
    """
    views = [LogView(p) for p in logs]
    for path in logs:
        if not os.path.exists(path):
            # It may be a workflow about to start; more likely a typo, which would wait forever.
            click.echo(f"treadle monitor: warning: {path} does not exist (yet); waiting for it", err=True)
    tty = sys.stdout.isatty()
    try:
        while True:
            for v in views:
                v.poll()
            lines = render(views, sort, hide)
            if tty:
                click.echo("\x1b[H\x1b[J", nl=False)
            click.echo("\n".join(lines))
            if all(v.finished for v in views):
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return
