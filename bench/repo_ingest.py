#!/usr/bin/env python3
"""``treadle repo ingest`` against what the machine itself allows (targets R1-R3, bench/RESULTS.md).

* R1: ingest of 10,000 files (mean 73 KB, about 0.73 GB) with R = 1, from start to exit of the
  command, against ``cp -r`` + ``sync`` + ``sha256sum`` of the same files. Target <= 2.0x.
* R2: the same ingest with R = 2 on two dir stores, against R1's ingest. Target <= 1.5x.
* R3: rows/s ingesting a 20,000-row manifest whose rows all name one small file (the metadata
  path), against raw ``sqlite3`` inserting the same rows (WAL, synchronous=FULL, 1,000 rows per
  transaction), both in this process. Target >= 0.15.

Everything runs in one temporary directory on one disk; ``sync`` runs before every timing so
that no measurement pays for the one before. R1 and R2 alternate over ``--rounds`` rounds (3)
and compare medians, and so do R3's ingest and raw sqlite3: on a shared VM one disk flush can
take twice as long as the next.
``--small`` runs a tenth of the sizes, for a quick look. Run:

    .venv/bin/python bench/repo_ingest.py [--small] [--dir DIR]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TREADLE = [sys.executable, "-m", "treadle", "repo"]
MEAN_SIZE = 73_000


def timed(argv: list[str], **kwargs: object) -> float:
    """Seconds ``argv`` took; exits naming it if it fails."""
    subprocess.run(["sync"], check=True)
    began = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]  # passed through
    took = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"{argv[:4]} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return took


def make_files(where: Path, count: int, seed: int = 13) -> list[Path]:
    """``count`` files of random bytes, sizes uniform in [1, 2 * MEAN_SIZE) so the mean is 73 KB."""
    rng = random.Random(seed)
    where.mkdir(parents=True)
    paths = []
    for i in range(count):
        path = where / f"img{i:06d}.jpg"
        path.write_bytes(os.urandom(rng.randrange(1, 2 * MEAN_SIZE)))
        paths.append(path)
    return paths


def write_manifest(path: Path, rows: list[dict[str, object]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def reference_copy(src: Path, dst: Path) -> float:
    """``cp -r`` + ``sync`` + ``sha256sum`` of the copies: what any careful copy must do."""
    subprocess.run(["sync"], check=True)
    began = time.perf_counter()
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    subprocess.run(["sync"], check=True)
    copies = sorted(str(p) for p in dst.iterdir())
    subprocess.run(["sha256sum", *copies], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def init_repo(path: Path, stores: int) -> None:
    argv = [*TREADLE, "init", str(path), "--replicas", str(stores)]
    for name in "ab"[:stores]:
        argv += ["--store", f"{name}=dir:stores/{name}"]
    subprocess.run(argv, check=True, capture_output=True)


def ingest_command(repo: Path, stores: int, manifest: Path) -> float:
    """Seconds of ``treadle repo ingest`` of ``manifest`` into a new repository with R = ``stores``."""
    init_repo(repo, stores)
    took = timed([*TREADLE, "ingest", str(repo), str(manifest), "--table", "images", "--key", "recording"])
    shutil.rmtree(repo)
    return took


def each(bases: list[float], times: list[float]) -> str:
    """The rounds' own ratios, when there were several: how far the median can be trusted."""
    if len(times) < 2:
        return ""
    return "; rounds " + ", ".join(f"{t / b:.2f}" for b, t in zip(bases, times, strict=True))


def ingest_in_process(repo: Path, manifest: Path) -> float:
    """Seconds of ``ingest()`` through the Python API: the rows' cost, without interpreter start-up."""
    from treadle.repo.context import open_context
    from treadle.repo.ingest import ingest

    subprocess.run(["sync"], check=True)
    with open_context(repo, write=True) as ctx:
        began = time.perf_counter()
        ingest(ctx, manifest, table="images", key="recording")
        return time.perf_counter() - began


def raw_sqlite_seconds(path: Path, rows: list[dict[str, object]]) -> float:
    """Seconds of plain sqlite3 inserting ``rows``: WAL, synchronous=FULL, 1,000 rows a transaction."""
    subprocess.run(["sync"], check=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE images (fileid INTEGER PRIMARY KEY AUTOINCREMENT, recording INTEGER UNIQUE, "
               "subject INTEGER, camera TEXT, path TEXT)")
    values = [(r["recording"], r["subject"], r["camera"], r["path"]) for r in rows]
    began = time.perf_counter()
    for start in range(0, len(values), 1000):
        db.execute("BEGIN")
        db.executemany("INSERT INTO images (recording, subject, camera, path) VALUES (?, ?, ?, ?)",
                       values[start:start + 1000])
        db.execute("COMMIT")
    took = time.perf_counter() - began
    db.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a tenth of the sizes, for a quick run")
    parser.add_argument("--dir", type=Path, help="where to work (default: a temporary directory)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternated rounds of R1's reference, R1 and R2, and of R3's; medians are compared")
    args = parser.parse_args()
    files, rows = (1_000, 2_000) if args.small else (10_000, 20_000)
    work = Path(tempfile.mkdtemp(prefix="treadle-bench-", dir=args.dir))
    try:
        src = work / "src"
        paths = make_files(src, files)
        total = sum(p.stat().st_size for p in paths)
        manifest = work / "images.csv"
        write_manifest(manifest, [{"path": f"src/{p.name}", "recording": i} for i, p in enumerate(paths)])
        print(f"{files:,} files, {total / 1e9:.2f} GB, mean {total / files / 1e3:.0f} KB; "
              f"{os.cpu_count()} cores; in {work}")

        references, r1s, r2s = [], [], []
        for _ in range(args.rounds):  # alternated, so a slow spell of the disk hits all three alike
            references.append(reference_copy(src, work / "copy"))
            shutil.rmtree(work / "copy")
            r1s.append(ingest_command(work / "r1.repo", 1, manifest))
            r2s.append(ingest_command(work / "r2.repo", 2, manifest))
        reference, r1, r2 = statistics.median(references), statistics.median(r1s), statistics.median(r2s)
        print(f"R1: ingest R=1 {r1:.2f} s; cp -r + sync + sha256sum {reference:.2f} s; "
              f"ratio {r1 / reference:.2f} (target <= 2.0){each(references, r1s)}")
        print(f"R2: ingest R=2 {r2:.2f} s; R=1 {r1:.2f} s; ratio {r2 / r1:.2f} (target <= 1.5)"
              f"{each(r1s, r2s)}")

        one = work / "one.jpg"
        one.write_bytes(os.urandom(2_000))
        meta = [{"path": one.name, "recording": i, "subject": i % 500, "camera": f"cam{i % 7}"}
                for i in range(rows)]
        write_manifest(work / "rows.csv", meta)
        raws, r3s = [], []
        for n in range(args.rounds):  # alternated and compared by medians, like R1 and R2
            raws.append(raw_sqlite_seconds(work / f"raw{n}.db", meta))
            init_repo(work / f"r3-{n}.repo", 1)
            r3s.append(ingest_in_process(work / f"r3-{n}.repo", work / "rows.csv"))
        r3, raw = statistics.median(r3s), rows / statistics.median(raws)
        init_repo(work / "r3cli.repo", 1)
        command = timed([*TREADLE, "ingest", str(work / "r3cli.repo"), str(work / "rows.csv"), "--table",
                         "images", "--key", "recording"])
        print(f"R3: ingest {rows / r3:,.0f} rows/s ({r3:.2f} s for {rows:,} rows through the Python API; "
              f"the command, start to exit, {command:.2f} s); raw sqlite3 {raw:,.0f} rows/s; "
              f"ratio {rows / r3 / raw:.2f} (target >= 0.15){each(r3s, raws)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
