"""Progress lines on stderr: blocks done/total, pairs/s, ETA and workers, every 10 s."""

from __future__ import annotations

import sys
import time

INTERVAL = 10.0


class Progress:
    """Prints a plain line at most every INTERVAL seconds (and once at the end)."""

    def __init__(self, what: str, total_blocks: int, total_pairs: int, quiet: bool = False):
        self.what = what
        self.total_blocks = total_blocks
        self.total_pairs = total_pairs
        self.blocks = 0
        self.pairs = 0
        self.workers = 0
        self.quiet = quiet
        self.start = time.monotonic()
        self._last = self.start
        # epoch seconds when the first block was handed to a process or a worker (target A6)
        self.first_block: float | None = None

    def submitted(self) -> None:
        if self.first_block is None:
            self.first_block = time.time()

    def advance(self, blocks: int, pairs: int) -> None:
        self.blocks += blocks
        self.pairs += pairs
        now = time.monotonic()
        if now - self._last >= INTERVAL:
            self._last = now
            self.show()

    def show(self) -> None:
        if self.quiet:
            return
        elapsed = max(1e-9, time.monotonic() - self.start)
        rate = self.pairs / elapsed
        left = self.total_pairs - self.pairs
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        workers = f", {self.workers} workers" if self.workers else ""
        print(f"{self.what}: blocks {self.blocks}/{self.total_blocks}, {rate:.0f} pairs/s, "
              f"ETA {eta}{workers}", file=sys.stderr, flush=True)
