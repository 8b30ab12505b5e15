"""Progress of an All-Pairs or Wavefront run on stderr.

On a terminal it is a rich live line that redraws itself, so elapsed time and
ETA keep moving while a minute-long block runs. Elsewhere a background thread
prints a plain line every ``PLAIN_INTERVAL`` seconds, plus one at the end.
The engines only set counters; rendering happens on the display's own thread.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

from treadle.flow.progress import PLAIN_INTERVAL, clock, terminal_console

if TYPE_CHECKING:
    from rich.console import Console


def _counted(n: int, word: str) -> str:
    """'1 worker', '2 workers', '2 processes'."""
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word}es" if word.endswith("s") else f"{n} {word}s"


class Display:
    """Shows ``parts()`` as a rich live line or as plain lines; subclasses say what to show.

    ``console`` forces the rich form onto that console (tests give one with
    ``force_terminal``); by default the rich form is used when stderr is a terminal.
    """

    what = "progress"

    def __init__(self, quiet: bool = False, console: Console | None = None,
                 stream: TextIO | None = None, interval: float = PLAIN_INTERVAL):
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.interval = interval
        self._live = None
        self._plain: threading.Thread | None = None
        self._stop = threading.Event()
        self.quiet = quiet
        if quiet:
            return
        console = console or terminal_console(self.stream)
        if console is not None:
            from rich.live import Live

            # stdout carries results only after the run, so nothing needs redirecting.
            self._live = Live(self, console=console, refresh_per_second=4, transient=False,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        else:
            self._plain = threading.Thread(target=self._print_every_interval, daemon=True,
                                           name=f"{self.what}-progress")
            self._plain.start()

    def parts(self) -> list[tuple[str, str]]:
        """(text, rich style) pieces of the line, in order."""
        raise NotImplementedError

    def fraction(self) -> float:
        """How much of the run is done, 0 to 1, for the bar."""
        raise NotImplementedError

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def text(self) -> str:
        """The plain line."""
        return f"{self.what}: " + ", ".join(text for text, _ in self.parts())

    def __rich__(self):
        """Called by rich on every refresh, so the line is always current."""
        from rich.text import Text

        bar_width = 20
        filled = int(bar_width * min(1.0, self.fraction()))
        line = Text()
        line.append("━" * filled, style="green")
        line.append("━" * (bar_width - filled), style="grey37")
        for text, style in self.parts():
            line.append("  ")
            line.append(text, style=style)
        return line

    def _print_every_interval(self) -> None:
        while not self._stop.wait(self.interval):
            self._print_line()

    def _print_line(self) -> None:
        self.stream.write(self.text() + "\n")
        self.stream.flush()

    def stop(self) -> None:
        """Draw the final state once and stop redrawing."""
        if self.quiet:
            return
        self._stop.set()
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None
        if self._plain is not None:
            self._plain.join()
            self._plain = None
            self._print_line()
        self.quiet = True


class Progress(Display):
    """All-Pairs: blocks done/total, pairs/s, ETA and workers."""

    what = "allpairs"

    def __init__(self, total_blocks: int, total_pairs: int, quiet: bool = False,
                 console: Console | None = None, stream: TextIO | None = None,
                 interval: float = PLAIN_INTERVAL, blocks_done: int = 0):
        self.total_blocks = total_blocks
        self.total_pairs = total_pairs
        self.blocks = blocks_done
        self.pairs = 0
        self.workers = 0
        self.worker_kind = "worker"
        # epoch seconds when the first block was handed to a process or a worker (target A6)
        self.first_block: float | None = None
        super().__init__(quiet, console, stream, interval)

    def submitted(self) -> None:
        if self.first_block is None:
            self.first_block = time.time()

    def advance(self, blocks: int, pairs: int) -> None:
        self.blocks += blocks
        self.pairs += pairs

    def fraction(self) -> float:
        return self.blocks / self.total_blocks if self.total_blocks else 1.0

    def parts(self) -> list[tuple[str, str]]:
        rate = self.pairs / max(self.elapsed(), 1e-9)
        left = self.total_pairs - self.pairs
        if self.blocks >= self.total_blocks:
            eta = "0:00:00"
        else:
            eta = clock(left / rate) if rate > 0 else "?"
        return [(f"blocks {self.blocks}/{self.total_blocks}", ""),
                (f"{rate:.0f} pairs/s", "cyan"),
                (f"ETA {eta}", "dim"),
                (_counted(self.workers, self.worker_kind), "")]


class WaveProgress(Display):
    """Wavefront: percent complete, elapsed time, running/ready counts and workers."""

    what = "wavefront"

    def __init__(self, total_cells: int, quiet: bool = False, console: Console | None = None,
                 stream: TextIO | None = None, interval: float = PLAIN_INTERVAL):
        self.total_cells = total_cells
        self.cells = 0
        self.running = 0
        self.ready = 0
        self.workers = 0
        self.worker_kind = "worker"
        self.unit = "cell"
        super().__init__(quiet, console, stream, interval)

    def fraction(self) -> float:
        return self.cells / self.total_cells if self.total_cells else 1.0

    def parts(self) -> list[tuple[str, str]]:
        return [(f"{100 * self.fraction():.0f}% complete", ""),
                (f"{clock(self.elapsed())} elapsed", "dim"),
                (_counted(self.running, self.unit) + " running", "cyan"),
                (f"{self.ready} ready", ""),
                (_counted(self.workers, self.worker_kind), "")]
