"""Copies of the example trees that hold only what the repository ships.

A user who ran the README's tour inside ``examples/`` leaves logs, outputs and
sandboxes there; tests that copied the directory wholesale then started from
those leftovers (a finished log makes ``treadle run`` say "nothing left to
do") and failed. Copying the tracked files only keeps ``make test`` honest.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tracked_files(directory: Path) -> list[Path]:
    """The files git tracks under ``directory``, relative to it.

    Outside a git checkout (an unpacked release) nothing can have been left over
    by git's standards, so every file under ``directory`` counts.
    """
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--", "."], cwd=directory, check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return sorted(p.relative_to(directory) for p in directory.rglob("*") if p.is_file())
    return sorted(Path(name) for name in listed.split("\0") if name)


def copy_tracked(directory: Path, dest: Path) -> Path:
    """Copy the tracked files of ``directory`` into ``dest`` (created if needed), keeping modes (so scripts stay executable)."""
    for rel in tracked_files(directory):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(directory / rel, dest / rel)
    return dest
