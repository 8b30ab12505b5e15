#!/usr/bin/env python3
"""HTCondor costs treadle pays itself (target P7, bench/RESULTS.md), measured against HTCondor's own bindings:

* rendering a 10,000-rule dispatch round (the submit description and its item
  file, written to disk) against ``htcondor2.Submit`` parsing that round
  (the description, then every item row): target <= 0.1x. A second figure
  also expands, per row, every request_* and periodic_* key, as the tests do
  and as condor_submit must before it can make each job;
* reading a 100,000-event user log with treadle's parser against
  ``htcondor2.JobEventLog`` on the same file, in events per second:
  target >= 0.5x.

No pool is needed: both sides read and write files only. Each figure is the
median of --repeat runs. Run:

    .venv/bin/python bench/batch_condor.py [--rules 10000] [--events 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import htcondor2

from treadle.batch.base import BatchJob, Request
from treadle.batch.condor import CondorSystem, item_row
from treadle.batch.condor_log import UserLogTail

# One job's life as a pool writes it: submitted, running, image size, terminated (4 events).
LIFE = """\
000 ({c:03d}.{p:03d}.000) 2026-03-14 15:{m:02d}:{s:02d} Job submitted from host: <10.0.0.1:9618?addrs=10.0.0.1-9618&sock=schedd_1>
...
001 ({c:03d}.{p:03d}.000) 2026-03-14 15:{m:02d}:{s:02d} Job executing on host: <10.0.0.9:9618?addrs=10.0.0.9-9618&sock=startd_2>
\tSlotName: slot1_{p}@node9.example.org
...
006 ({c:03d}.{p:03d}.000) 2026-03-14 15:{m:02d}:{s:02d} Image size of job updated: 2600
\t3  -  MemoryUsage of job (MB)
\t2520  -  ResidentSetSize of job (KB)
...
005 ({c:03d}.{p:03d}.000) 2026-03-14 15:{m:02d}:{s:02d} Job terminated.
\t(1) Normal termination (return value {rv})
\t\tUsr 0 00:00:03, Sys 0 00:00:01  -  Run Remote Usage
\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Local Usage
\t\tUsr 0 00:00:03, Sys 0 00:00:01  -  Total Remote Usage
\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Total Local Usage
\t1254  -  Run Bytes Sent By Job
\t283  -  Run Bytes Received By Job
\t1254  -  Total Bytes Sent By Job
\t283  -  Total Bytes Received By Job
\tPartitionable Resources :    Usage  Request Allocated
\t   Cpus                 :                 1         1
\t   Disk (KB)            :       18     1024   7330524
\t   Memory (MB)          :        3     1024      7770
...
"""


def median_time(action: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - began)
    return statistics.median(times), result


def bench_render(where: Path, rules: int, repeat: int) -> tuple[float, float, float]:
    """Seconds to render and write one round of ``rules`` jobs; for htcondor2 to parse it (description
    and item rows); and to parse it and expand each row's request_* and periodic_* keys."""
    system = CondorSystem(str(where / "wf.batch"), str(where / "wf.condorlog"))
    jobs = [BatchJob(tag="b3nc4000", script=str(where / "wf.batch" / "jobs" / f"{h}.sh"), workdir=str(where),
                     request=Request(cores=1 + h % 4, memory=100 + h % 900, disk=h % 50, wall=h % 3 * 600),
                     inputs=(f"data/in-{h}.txt", "shared/reference genome.fa"), comment=str(h))
             for h in range(1, rules + 1)]
    items = where / "items-1.txt"
    sub = where / "submit-1.sub"

    def render() -> None:
        rows = [item_row(j) for j in jobs]
        items.write_text("\n".join(rows) + "\n")
        sub.write_text(system.description(jobs, str(items)))

    def parse() -> int:
        submit = htcondor2.Submit(sub.read_text())
        return sum(1 for _ in submit.itemdata())

    def parse_and_expand() -> int:
        submit = htcondor2.Submit(sub.read_text())
        keys = [k for k in submit.keys() if k.startswith(("request_", "periodic_"))]
        count = 0
        for row in submit.itemdata():
            for name, value in row.items():
                submit[name] = value
            for key in keys:
                submit.expand(key)
            count += 1
        return count

    ours, _ = median_time(render, repeat)
    theirs, rows = median_time(parse, repeat)
    expanding, expanded_rows = median_time(parse_and_expand, max(1, repeat // 2))
    if rows != rules or expanded_rows != rules:
        raise SystemExit(f"htcondor2 read {rows} and {expanded_rows} item rows, expected {rules}")
    return ours, theirs, expanding


def bench_log(where: Path, events: int, repeat: int) -> tuple[float, float]:
    """(treadle's events/s, htcondor2.JobEventLog's events/s) on one log of ``events`` events."""
    log = where / "big.condorlog"
    lives = events // 4
    with open(log, "w") as f:
        for n in range(lives):
            f.write(LIFE.format(c=1000 + n // 1000, p=n % 1000, m=n // 60 % 60, s=n % 60, rv=n % 3))
    count = lives * 4

    def ours() -> int:
        return len(UserLogTail(log).read())

    def theirs() -> int:
        return sum(1 for _ in htcondor2.JobEventLog(str(log)).events(0))

    t_ours, n_ours = median_time(ours, repeat)
    t_theirs, n_theirs = median_time(theirs, repeat)
    if n_ours != count or n_theirs != count:
        raise SystemExit(f"events read: treadle {n_ours}, htcondor2 {n_theirs}, written {count}")
    return count / t_ours, count / t_theirs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="treadle-bench-condor.") as tmp:
        where = Path(tmp)
        ours, theirs, expanding = bench_render(where, args.rules, args.repeat)
        print(f"P7a render a {args.rules}-rule round: treadle {ours * 1000:.1f} ms, "
              f"htcondor2.Submit parse {theirs * 1000:.1f} ms; ratio {ours / theirs:.3f} (target <= 0.1)")
        print(f"    against parse + per-row expansion of request_*/periodic_* "
              f"({expanding * 1000:.0f} ms): ratio {ours / expanding:.3f}")
        rate, reference = bench_log(where, args.events, args.repeat)
        print(f"P7b read a {args.events}-event user log: treadle {rate:,.0f} events/s, "
              f"htcondor2.JobEventLog {reference:,.0f} events/s; ratio {rate / reference:.2f} (target >= 0.5)")


if __name__ == "__main__":
    main()
