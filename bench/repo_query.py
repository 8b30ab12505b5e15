#!/usr/bin/env python3
"""An indexed repository query against the same SQL through raw sqlite3 (target R4, bench/RESULTS.md).

R4: counting the rows of a 100,000-row user table whose link column ``thumb`` IS NULL, through
``treadle.repo.query.count_rows`` (what ``treadle repo query --null thumb --count`` and
``Repository.query`` run: the table reflected and its names checked on every call, then one
bound statement), divided by the time of ``SELECT count(*) FROM images WHERE thumb IS NULL``
through the standard library's sqlite3 on the same file. Target <= 3; the issue also asks for
the query itself under 50 ms. The plan must use the link column's index, which the script
prints (EXPLAIN QUERY PLAN) and checks.

The table is filled with plain inserts in one transaction (half of the rows have a thumb), so
the figure does not depend on ingest. Run:

    .venv/bin/python bench/repo_query.py [--rows 100000] [--repeat 50]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, insert

from treadle.repo import query, schema
from treadle.repo.context import init_repository, open_context
from treadle.repo.db import utcnow

SQL = "SELECT count(*) FROM images WHERE thumb IS NULL"
TARGET = 3.0
BATCH = 10_000


def fill(repo: Path, rows: int) -> int:
    """A repository whose table ``images`` has ``rows`` rows, every other one without a thumb;
    return how many lack one."""
    images = schema.user_table("images", {"subject": "int", "thumb": "fileid"}, key=None)
    now = utcnow()
    with init_repository(repo) as ctx, ctx.engine.begin() as conn:
        images.create(conn)
        for start in range(0, rows, BATCH):
            numbers = range(start + 1, min(start + BATCH, rows) + 1)
            sums = ["sha256:" + hashlib.sha256(str(i).encode()).hexdigest() for i in numbers]
            conn.execute(insert(schema.objects), [{"checksum": c, "size": 1} for c in sums])
            conn.execute(insert(schema.files), [
                {"fileid": i, "checksum": c, "size": 1, "extension": "jpg", "state": "OK",
                 "created_at": now, "source": f"{i}.jpg"} for i, c in zip(numbers, sums, strict=True)])
            conn.execute(insert(images), [{"fileid": i, "subject": i % 977,
                                           "thumb": None if i % 2 else i} for i in numbers])
    return (rows + 1) // 2


def median_seconds(run: Callable[[], int], repeat: int, expected: int) -> float:
    """The median wall time of ``run`` over ``repeat`` calls after one warm-up call."""
    assert run() == expected, "the two ways count differently"
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def statements_of(engine: Engine, run: Callable[[], object]) -> list[tuple[str, Any]]:
    """The statements (with parameters) the engine sends during ``run()``, for EXPLAIN."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, "
          f"SQLite {sqlite3.sqlite_version}")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "bench.repo"
        began = time.perf_counter()
        nulls = fill(repo, args.rows)
        print(f"{args.rows:,} rows written in {time.perf_counter() - began:.1f} s; "
              f"{nulls:,} without a thumb")
        raw = sqlite3.connect(repo / "metadata.db")
        raw_s = median_seconds(lambda: raw.execute(SQL).fetchone()[0], args.repeat, nulls)
        with open_context(repo, read_only=True) as ctx:
            def count() -> int:
                return query.count_rows(ctx, "images", null=["thumb"])

            statements = statements_of(ctx.engine, count)
            ours_s = median_seconds(count, args.repeat, nulls)
        counted, params = next(s for s in statements if s[0].upper().startswith("SELECT COUNT"))
        plan = [row[-1] for row in raw.execute("EXPLAIN QUERY PLAN " + counted, params)]
        raw.close()
        print("EXPLAIN QUERY PLAN", " ".join(counted.split()))
        for step in plan:
            print("   ", step)
        indexed = any("INDEX ix_images_thumb" in step for step in plan)
    ratio = ours_s / raw_s
    print(f"raw sqlite3:           {raw_s * 1000:7.2f} ms (median of {args.repeat})")
    print(f"query.count_rows:      {ours_s * 1000:7.2f} ms")
    print(f"R4 ratio:              {ratio:7.2f}x (target <= {TARGET:g}); "
          f"under 50 ms: {'yes' if ours_s < 0.05 else 'NO'}; index used: {'yes' if indexed else 'NO'}")
    print("target:", "met" if ratio <= TARGET and indexed and ours_s < 0.05 else "NOT met")


if __name__ == "__main__":
    main()
