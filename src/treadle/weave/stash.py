"""The stash: unique intermediate paths ``<dir>/_Stash/H/H/H/HHHHHHH``.

The seven hex digits are a three-digit folder counter followed by a four-digit
index inside the folder (0000–3FFF), so no leaf folder holds more than 16,384
names, which keeps directory listings fast on any filesystem.
"""

from __future__ import annotations

import os

from treadle.weave.diagnostics import error

PER_FOLDER = 16384
FOLDERS = 16**3


class Stash:
    """Hands out fresh paths under ``root``, counting up from ``0000000``."""

    def __init__(self, root: str):
        self.root = root
        self.count = 0
        self._made: set[str] = set()

    def next(self, suffix: str = "") -> str:
        """A new absolute path; its folder exists on return."""
        folder, index = divmod(self.count, PER_FOLDER)
        if folder >= FOLDERS:
            raise error(f"the stash under {self.root} is full ({FOLDERS * PER_FOLDER} names)")
        self.count += 1
        head = f"{folder:03X}"
        directory = os.path.join(self.root, head[0], head[1], head[2])
        if directory not in self._made:
            os.makedirs(directory, exist_ok=True)
            self._made.add(directory)
        return os.path.join(directory, f"{head}{index:04X}{suffix}")
