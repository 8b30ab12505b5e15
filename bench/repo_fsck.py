#!/usr/bin/env python3
"""``treadle repo fsck --full`` against ``sha256sum`` over the same objects (target R7, bench/RESULTS.md).

* R7: a store of 2,000 objects of 256 KB (512 MiB), put there by ``treadle repo ingest``;
  the rate of ``treadle repo fsck REPO --full`` (command start to exit: every replica rehashed,
  its ``lastcheck`` committed) against the rate of one ``sha256sum`` over the store's object
  files. Target >= 0.8.

Both read the same files from the page cache (a first, untimed ``sha256sum`` warms it), so
the figure compares hashing and bookkeeping, not the disk. The two run alternately, ``--rounds``
times each; the median of each is reported. ``--small`` uses a tenth of the objects. Run:

    .venv/bin/python bench/repo_fsck.py [--small] [--rounds 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TREADLE = [sys.executable, "-m", "treadle", "repo"]
OBJECT_SIZE = 256 * 1024


def timed(argv: list[str]) -> float:
    """Seconds ``argv`` took; exits naming it if it fails."""
    began = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    took = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"{argv[:5]} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return took


def make_repository(work: Path, count: int) -> list[str]:
    """A repository holding ``count`` objects of random bytes; the paths of their object files."""
    src = work / "src"
    src.mkdir()
    for i in range(count):
        (src / f"obj{i:05d}.bin").write_bytes(os.urandom(OBJECT_SIZE))
    repo = work / "bench.repo"
    subprocess.run([*TREADLE, "init", str(repo)], check=True, capture_output=True)
    timed([*TREADLE, "ingest", str(repo), "--files", *sorted(str(p) for p in src.iterdir()),
           "--table", "blobs"])
    shutil.rmtree(src)
    objects = sorted(str(p) for p in (repo / "stores" / "a" / "objects").rglob("*") if p.is_file())
    if len(objects) != count:
        sys.exit(f"expected {count} objects in the store, found {len(objects)}")
    return objects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a tenth of the objects, for a quick run")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each (default 3)")
    parser.add_argument("--dir", type=Path, help="where to work (default: a temporary directory)")
    args = parser.parse_args()
    count = 200 if args.small else 2_000
    work = Path(tempfile.mkdtemp(prefix="treadle-bench-", dir=args.dir))
    try:
        objects = make_repository(work, count)
        total = count * OBJECT_SIZE
        print(f"{count:,} objects of {OBJECT_SIZE // 1024} KB, {total / 2**20:.0f} MiB; "
              f"{os.cpu_count()} cores; in {work}")
        reference = ["sha256sum", *objects]
        fsck = [*TREADLE, "fsck", str(work / "bench.repo"), "--full"]
        timed(reference)  # warms the page cache for both
        ours, theirs = [], []
        for _ in range(args.rounds):
            theirs.append(timed(reference))
            ours.append(timed(fsck))
        mine, ref = statistics.median(ours), statistics.median(theirs)
        print(f"R7: fsck --full {mine:.2f} s ({total / mine / 2**20:.0f} MiB/s); sha256sum {ref:.2f} s "
              f"({total / ref / 2**20:.0f} MiB/s); rate ratio {ref / mine:.2f} (target >= 0.8)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
