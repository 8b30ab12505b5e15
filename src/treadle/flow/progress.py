"""Progress of a run for a person watching: rules waiting, running, done and failed, rate, ETA.

On a terminal it is a rich live line on stderr (stdout keeps the lines that
scripts grep). Elsewhere it is a plain line on stderr at most every
``PLAIN_INTERVAL`` seconds, so short runs print nothing extra. rich is
imported only when a terminal is there to draw on, which keeps start-up fast.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live

PLAIN_INTERVAL = 10.0  # seconds between two plain progress lines
LIVE_INTERVAL = 0.25  # seconds between two redraws of the live line: smooth, yet cheap for fast rules


def clock(seconds: float) -> str:
    """``H:MM:SS``, for elapsed times and ETAs."""
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def terminal_console(stream: TextIO, force: bool = False) -> Console | None:
    """A rich Console drawing on ``stream`` when it is a terminal (or ``force``); None for plain lines.

    The one place that decides rich or plain, for ``treadle run`` and the
    native abstractions alike. rich is imported only when there is a terminal
    to draw on, which keeps start-up fast for runs whose stderr goes to a file
    or a pipe.
    """
    if not (force or stream.isatty()):
        return None
    from rich.console import Console

    return Console(file=stream)


class Progress:
    """Call :meth:`update` with the five state counts whenever they change (it is cheap)."""

    def __init__(self, total: int, stream: TextIO | None = None, live: bool | None = None):
        self.total = total
        self.stream = stream or sys.stderr
        # live None: rich on a terminal, plain elsewhere; True or False forces one form.
        self._console = terminal_console(self.stream, force=bool(live)) if live is not False else None
        self.live = self._console is not None
        self._t0 = time.monotonic()
        self._done0: int | None = None
        # The live line draws from the first update; plain lines wait a whole interval so
        # that a short run off a terminal prints nothing extra.
        self._next = self._t0 if self.live else self._t0 + PLAIN_INTERVAL
        self._counts = [total, 0, 0, 0, 0]
        self._live: Live | None = None

    def _start_live(self) -> None:
        """The live line appears with the first update: the run's start-up lines come before it."""
        from rich.live import Live

        # Lines printed to stdout go above the display only when stdout is that same
        # terminal; redirected to a file they must stay on stdout, untouched.
        self._live = Live(
            console=self._console,
            refresh_per_second=4,
            transient=False,
            redirect_stdout=sys.stdout.isatty(),
            redirect_stderr=False,
        )
        self._live.start()

    def update(self, counts: list[int]) -> None:
        if self.live and self._live is None:
            self._start_live()
        self._counts = counts
        if self._done0 is None:
            self._done0 = counts[2]
        now = time.monotonic()
        if now < self._next:
            return
        if self._live is not None:
            self._next = now + LIVE_INTERVAL
            self._live.update(self._render(), refresh=True)
        else:
            self._next = now + PLAIN_INTERVAL
            self.stream.write(self.text() + "\n")
            self.stream.flush()

    def text(self) -> str:
        w, r, c, f, a = self._counts
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        done_now = c - (self._done0 or 0)
        rate = done_now / elapsed
        left = w + r
        eta = clock(left / rate) if rate > 0 and left else "-"
        return f"progress: {w} waiting, {r} running, {c} done, {f + a} failed of {self.total} ({rate:.1f} rules/s, ETA {eta})"

    def _render(self):
        from rich.text import Text

        w, r, c, f, a = self._counts
        bar_width = 20
        filled = int(bar_width * c / self.total) if self.total else bar_width
        line = Text()
        line.append("━" * filled, style="green")
        line.append("━" * (bar_width - filled), style="grey37")
        line.append(f" {c}/{self.total} done  ")
        line.append(f"{r} running  ", style="cyan")
        line.append(f"{w} waiting  ")
        if f + a:
            line.append(f"{f + a} failed  ", style="red")
        line.append(self.text().split("(", 1)[1].rstrip(")"), style="dim")
        return line

    def stop(self) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.stop()
            self._live = None
