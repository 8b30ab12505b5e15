#!/usr/bin/env python3
"""Mode fuse against direct access to the same bytes (targets V1-V6; bench/RESULTS.md).

* V1: sequential read of a 100 MB object in 1 MiB reads, page cache warm, through the mount
  with passthrough, against a read of the same bytes from a plain file. Target >= 0.5x.
* V2: the same with the daemon serving reads (page cache of the mount dropped before each read
  with ``posix_fadvise(DONTNEED)``), target >= 0.15x; and a second read with
  ``FOPEN_KEEP_CACHE``, target >= 0.8x.
* V3: first ``stat`` of a present and of a missing name in the 20,000-entry ``M/fileid``,
  against ``stat`` in a plain directory of 20,000 files. Target <= 70x.
* V4: ``stat`` of an entry the kernel has cached, against the same plain ``stat``. Target <= 2x.
* V5: ``find`` over the 20,000 entries of ``M/fileid`` against ``find`` over the plain
  directory. Target <= 3x.
* V6: open + read 4 KiB + close of a small object, against the same on a plain file.
  Target <= 200x.

The repository holds one 100 MB object, one 4 KiB object and 20,000 rows in ``files`` (one
ingest, the rest inserted directly). Each mode runs ``run_fuse`` in a process of its own (it
enters a mount namespace for good), with this script as the command (``--inside``), which
measures both sides in the same process. Times are medians. Run:

    .venv/bin/python bench/vfs_fuse.py [--size-mb 100] [--entries 20000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def _median_time(action: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _read_all(path: str, drop: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if drop:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        while os.read(fd, CHUNK):
            pass
    finally:
        os.close(fd)


def _open_read_close(path: str, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fd = os.open(path, os.O_RDONLY)
        os.read(fd, 4096)
        os.close(fd)
    return (time.perf_counter() - start) / count


def _stat_each(paths: list[str]) -> float:
    start = time.perf_counter()
    for path in paths:
        try:
            os.stat(path)
        except FileNotFoundError:
            pass
    return (time.perf_counter() - start) / len(paths)


def _find(root: str) -> None:
    subprocess.run(["find", root], stdout=subprocess.DEVNULL, check=True)


def inside(config: dict[str, Any]) -> dict[str, float]:
    """The measurements, taken by the command under the mount (both sides, one process)."""
    mount, plain, repeat = config["mount"], config["plain"], config["repeat"]
    big_fuse, big_plain = f"{mount}/fileid/{config['big']}", config["big_plain"]
    small_fuse, small_plain = f"{mount}/fileid/{config['small']}", config["small_plain"]
    entries = config["entries"]
    out: dict[str, float] = {}
    size = os.path.getsize(big_plain)
    _read_all(big_plain)
    out["direct_gbs"] = size / _median_time(lambda: _read_all(big_plain), repeat) / 1e9
    _read_all(big_fuse)
    if config["passthrough"]:
        out["fuse_gbs"] = size / _median_time(lambda: _read_all(big_fuse), repeat) / 1e9
    else:
        out["fuse_gbs"] = size / _median_time(lambda: _read_all(big_fuse, drop=True), repeat) / 1e9
        out["fuse_cached_gbs"] = size / _median_time(lambda: _read_all(big_fuse), repeat) / 1e9
    names = [str(3 + i) for i in range(0, entries - 3, max(1, entries // 500))][:500]
    plain_paths = [f"{plain}/{n}" for n in names]
    _stat_each(plain_paths)
    out["stat_plain_us"] = statistics.median(_stat_each(plain_paths) for _ in range(repeat)) * 1e6
    out["first_present_us"] = _stat_each([f"{mount}/fileid/{n}" for n in names]) * 1e6
    out["first_missing_us"] = _stat_each(
        [f"{mount}/fileid/{entries + 1000 + i}" for i in range(len(names))]) * 1e6
    out["stat_cached_us"] = statistics.median(
        _stat_each([f"{mount}/fileid/{n}" for n in names]) for _ in range(repeat)) * 1e6
    _find(plain)
    out["find_plain_ms"] = _median_time(lambda: _find(plain), repeat) * 1e3
    out["find_fuse_first_ms"] = _median_time(lambda: _find(f"{mount}/fileid"), 1) * 1e3
    out["find_fuse_ms"] = _median_time(lambda: _find(f"{mount}/fileid"), repeat) * 1e3
    _open_read_close(small_plain, 100)
    _open_read_close(small_fuse, 100)
    out["orc_plain_us"] = statistics.median(
        _open_read_close(small_plain, 1000) for _ in range(repeat)) * 1e6
    out["orc_fuse_us"] = statistics.median(
        _open_read_close(small_fuse, 1000) for _ in range(repeat)) * 1e6
    return out


_DRIVER = """
import json, os, sys
from pathlib import Path
from treadle.vfs.cache import Cache
from treadle.vfs.fusemode import run_fuse
from treadle.vfs.namespace import Namespace
from treadle.vfs.sources import open_source
config = json.loads(sys.argv[1])
namespace = Namespace([(config["mount"], open_source(config["repo"], token_file=None, timeout=60))],
                      Cache(Path(config["cache"]), None))
sys.exit(run_fuse(namespace, sys.argv[2:], dict(os.environ), passthrough=config["passthrough"],
                  report=lambda line: print("treadle vfs:", line, file=sys.stderr)))
"""


def prepare(where: Path, size_mb: int, entries: int) -> dict[str, Any]:
    """The repository (big, small, and ``entries`` rows) and the plain files to compare with."""
    from treadle.repo.context import init_repository, open_context
    from treadle.repo.ingest import ingest

    sources = where / "sources"
    sources.mkdir()
    big, small = sources / "big.bin", sources / "small.bin"
    with big.open("wb") as f:
        for _ in range(size_mb):
            f.write(os.urandom(1 << 20))
    small.write_bytes(os.urandom(4096))
    repo = where / "bench.repo"
    init_repository(repo, stores=[("a", "dir:stores/a")]).close()
    with open_context(repo, write=True) as ctx:
        fileids = ingest(ctx, None, table="bench", files=[str(big), str(small)]).fileids
    with sqlite3.connect(repo / "metadata.db") as db:
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO files (checksum, size, extension, media_type, state, created_at, "
            "ingest_id, source) SELECT checksum, size, extension, media_type, state, created_at, "
            "ingest_id, source || '.' || i FROM files, n WHERE fileid = ?",
            (entries - len(fileids), fileids[1]))
    plain = where / "plain"
    plain.mkdir()
    for i in range(1, entries + 1):
        (plain / str(i)).write_bytes(b"")
    mount = where / "m"
    mount.mkdir()
    return {"repo": str(repo), "mount": str(mount), "plain": str(plain), "cache": str(where / "cache"),
            "big": fileids[0], "small": fileids[1], "big_plain": str(big),
            "small_plain": str(small), "entries": entries}


def measure(config: dict[str, Any], passthrough: bool | None) -> dict[str, float]:
    config = {**config, "passthrough": passthrough}
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(config),
         sys.executable, __file__, "--inside", json.dumps(config)],
        capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--inside", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        print(json.dumps(inside(json.loads(args.inside))))
        return
    from treadle.vfs.fusemode import passthrough_available

    with tempfile.TemporaryDirectory(prefix="vfs-bench-") as tmp:
        config = prepare(Path(tmp), args.size_mb, args.entries)
        config["repeat"] = args.repeat
        ok, why = passthrough_available()
        on = measure(config, True) if ok else None
        off = measure(config, False)
    rows = []
    if on is not None:
        rows.append(("V1", "read 100 MB, passthrough / direct", on["fuse_gbs"] / on["direct_gbs"],
                     ">= 0.5", f"{on['fuse_gbs']:.2f} vs {on['direct_gbs']:.2f} GB/s"))
    else:
        print(f"V1 skipped: {why}")
    rows.append(("V2", "read 100 MB, daemon reads / direct", off["fuse_gbs"] / off["direct_gbs"],
                 ">= 0.15", f"{off['fuse_gbs']:.2f} vs {off['direct_gbs']:.2f} GB/s"))
    rows.append(("V2", "second read, FOPEN_KEEP_CACHE / direct",
                 off["fuse_cached_gbs"] / off["direct_gbs"], ">= 0.8",
                 f"{off['fuse_cached_gbs']:.2f} vs {off['direct_gbs']:.2f} GB/s"))
    m = on or off
    rows.append(("V3", "first stat, present / plain stat", m["first_present_us"] / m["stat_plain_us"],
                 "<= 70", f"{m['first_present_us']:.1f} vs {m['stat_plain_us']:.2f} us"))
    rows.append(("V3", "first stat, missing / plain stat", m["first_missing_us"] / m["stat_plain_us"],
                 "<= 70", f"{m['first_missing_us']:.1f} vs {m['stat_plain_us']:.2f} us"))
    rows.append(("V4", "cached stat / plain stat", m["stat_cached_us"] / m["stat_plain_us"], "<= 2",
                 f"{m['stat_cached_us']:.2f} vs {m['stat_plain_us']:.2f} us"))
    rows.append(("V5", f"find over {args.entries} / plain", m["find_fuse_ms"] / m["find_plain_ms"],
                 "<= 3", f"{m['find_fuse_ms']:.0f} (first {m['find_fuse_first_ms']:.0f}) vs "
                 f"{m['find_plain_ms']:.0f} ms"))
    rows.append(("V6", "open+read 4 KiB+close / plain" + (", passthrough" if on else ""),
                 m["orc_fuse_us"] / m["orc_plain_us"], "<= 200",
                 f"{m['orc_fuse_us']:.1f} vs {m['orc_plain_us']:.2f} us"))
    print("| id | case | ratio | target | figures |")
    print("|---|---|---|---|---|")
    for ident, case, ratio, target, figures in rows:
        print(f"| {ident} | {case} | {ratio:.2f} | {target} | {figures} |")


if __name__ == "__main__":
    main()
