"""Read what a running process prints, line by line, while it keeps running.

Commands announce things a test must act on before they end (the port a manager
picked with ``-p 0``, a warning before a retry); ``communicate()`` would wait for
the end. ``Lines`` polls the pipe without blocking, so a test that waits for a
line fails after its deadline instead of hanging.
"""

from __future__ import annotations

import os
import re
import selectors
import time
from typing import IO


class Lines:
    """The lines seen so far on one pipe of a process (``Popen(..., stdout=PIPE)``)."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._fd = pipe.fileno()
        os.set_blocking(self._fd, False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._fd, selectors.EVENT_READ)
        self._buf = b""
        self.lines: list[str] = []
        self.closed = False

    def _pump(self, timeout: float) -> None:
        if self.closed or not self._sel.select(timeout):
            return
        data = os.read(self._fd, 65536)
        if not data:
            self.closed = True
            data = b"\n" if self._buf else b""
        self._buf += data
        *done, self._buf = self._buf.split(b"\n")
        self.lines += [d.decode(errors="replace") for d in done]

    def wait(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first line matching ``pattern`` (regex search), waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for line in self.lines[seen:]:
                m = re.search(pattern, line)
                if m:
                    return m
            seen = len(self.lines)
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise AssertionError(f"no line matching {pattern!r}; got {self.lines!r}")
            self._pump(min(left, 0.2))

    def rest(self, timeout: float = 30.0) -> list[str]:
        """Every line, once the process has closed the pipe (it has exited)."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self._pump(0.2)
        return self.lines
