"""Progress of a run for a person watching: rules waiting, running, done and failed, rate, ETA.

On a terminal it is a rich live line on stderr (stdout keeps the lines that
scripts grep). Elsewhere it is a plain line on stderr at most every
``PLAIN_INTERVAL`` seconds, so short runs print nothing extra. rich is
imported only when a terminal is there to draw on, which keeps start-up fast.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

PLAIN_INTERVAL = 10.0  # seconds between two plain progress lines
LIVE_INTERVAL = 0.25  # seconds between two redraws of the live line: smooth, yet cheap for fast rules


def _eta(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """Call :meth:`update` with the five state counts whenever they change (it is cheap)."""

    def __init__(self, total: int, stream: TextIO | None = None, live: bool | None = None):
        self.total = total
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._t0 = time.monotonic()
        self._done0: int | None = None
        # The live line draws from the first update; plain lines wait a whole interval so
        # that a short run off a terminal prints nothing extra.
        self._next = self._t0 if self.live else self._t0 + PLAIN_INTERVAL
        self._counts = [total, 0, 0, 0, 0]
        self._live = None
        if self.live:
            from rich.console import Console
            from rich.live import Live

            # Lines printed to stdout go above the display only when stdout is that same
            # terminal; redirected to a file they must stay on stdout, untouched.
            self._live = Live(
                console=Console(file=self.stream),
                refresh_per_second=4,
                transient=False,
                redirect_stdout=sys.stdout.isatty(),
                redirect_stderr=False,
            )
            self._live.start()
            self._live.update(self._render(), refresh=True)

    def update(self, counts: list[int]) -> None:
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
        eta = _eta(left / rate) if rate > 0 and left else "-"
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
