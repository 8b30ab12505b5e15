"""Crash resume at block granularity: ``<output>.apstate/`` holds the plan,
one file per finished block and a journal of finished blocks with their checksums."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from treadle.allpairs.plan import Plan
from treadle.allpairs.sets import ItemSet
from treadle.errors import AllPairsError


def fingerprint(a: ItemSet, b: ItemSet, identity: str, extra_args: Iterable[str],
                extra_files: Iterable[str], *, symmetric: bool, batched: bool,
                half: bool) -> str:
    """What must be equal for saved blocks to be reused: entries, item (size, mtime_ns),
    F's identity, the extra args and files, and the flags that change results."""
    digest = hashlib.sha256()

    def add(value: object) -> None:
        digest.update(json.dumps(value).encode())
        digest.update(b"\n")

    for items in (a, b):
        add(list(items.names))
        for path in items.paths:
            st = os.stat(path)
            add([st.st_size, st.st_mtime_ns])
    add(identity)
    add(list(extra_args))
    for path in extra_files:
        st = os.stat(path)
        add([path, st.st_size, st.st_mtime_ns])
    add([symmetric, batched, half])
    return digest.hexdigest()


def fsync_write(path: Path, data: bytes) -> None:
    """Write to a temporary name, fsync, rename: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class State:
    """One run's state directory. The journal is the truth: a block counts as done only
    when its journal line is written and its file still has the journalled checksum."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.blocks_dir = self.directory / "blocks"
        self.journal_path = self.directory / "journal"
        self.plan_path = self.directory / "plan.json"
        self._journal: TextIO | None = None

    def load(self, fp: str, restart: bool) -> Plan | None:
        """The saved plan when the fingerprint matches; None when there is no state.

        A state of a different run is an error unless ``restart`` discards it."""
        if not self.directory.exists():
            return None
        if restart:
            self.remove()
            return None
        try:
            saved = json.loads(self.plan_path.read_text())
        except (OSError, ValueError):
            self.remove()
            return None
        if saved.get("fingerprint") != fp:
            raise AllPairsError(f"state {self.directory} belongs to a different run "
                                "(inputs, F or flags changed); use --restart")
        return Plan.from_dict(saved["plan"])

    def create(self, fp: str, plan: Plan) -> None:
        self.blocks_dir.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"fingerprint": fp, "plan": plan.to_dict()}, indent=1).encode()
        fsync_write(self.plan_path, data)

    def done_blocks(self) -> set[tuple[int, int]]:
        """Journalled blocks whose files verify against their checksums."""
        done: set[tuple[int, int]] = set()
        if not self.journal_path.exists():
            return done
        for line in self.journal_path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 4 or parts[0] != "done":
                continue
            key = (int(parts[1]), int(parts[2]))
            path = self.block_path(*key)
            if path.exists() and sha256_file(path) == parts[3]:
                done.add(key)
        return done

    def block_path(self, bx: int, by: int) -> Path:
        return self.blocks_dir / f"{bx}-{by}.tsv"

    def temp_path(self, bx: int, by: int) -> Path:
        return self.blocks_dir / f"{bx}-{by}.tsv.tmp"

    def commit(self, bx: int, by: int, digest: str) -> None:
        """The block's temporary file is complete and fsynced: rename it, then journal it."""
        os.replace(self.temp_path(bx, by), self.block_path(bx, by))
        if self._journal is None:
            self._journal = open(self.journal_path, "a", encoding="ascii")
        self._journal.write(f"done {bx} {by} {digest}\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def write_block_file(path: Path, lines: list[str]) -> str:
    """Write a block's lines to ``path`` and fsync it; return the sha256 of the bytes."""
    data = "".join(lines).encode("utf-8")
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return hashlib.sha256(data).hexdigest()
