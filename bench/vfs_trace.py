#!/usr/bin/env python3
"""Trace mode's cost per stop against strace's (targets V7, V8; bench/RESULTS.md).

* V7: ``find`` over a host tree of N files plus M/fileid of a repository holding N files
  (so half of the entries lie under M), under ``treadle vfs run --mode trace``, against
  ``strace --seccomp-bpf -f -e trace=%file -o /dev/null`` running ``find`` over the same host
  tree plus a plain copy of the repository's files (what M shows, as ordinary files).
  Target: trace mode's time <= 1.5x strace's. Each trace run starts from nothing: its view,
  the interpreter's start-up and the repository's first listing are part of what is
  measured (a listing makes no files in the view: the tracer writes the entries).
* V8: one ImageMagick ``convert`` thumbnail of a JPEG under M, against the same command on
  the plain file. Target <= 6x.

Both sides of a comparison alternate for ``--rounds`` rounds; the medians are compared.
Run as root or any user that may ptrace its children:

    .venv/bin/python bench/vfs_trace.py [--files 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MOUNT = "/bxgrid-bench"
# Debian's ImageMagick by its full path: a host may put a stand-in named convert first on PATH
CONVERT = "/usr/bin/convert"


def make_repository(where: Path, files: int, jpeg: Path | None) -> tuple[Path, Path]:
    """A repository of ``files`` small files (plus one JPEG) ingested into table ``bench``,
    and a plain copy of what its M/fileid shows: (repository, copy)."""
    from treadle.repo.context import init_repository, open_context
    from treadle.repo.ingest import ingest

    sources = where / "sources"
    sources.mkdir()
    manifest = where / "bench.csv"
    paths = []
    with manifest.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["path", "key"])
        for i in range(files):
            (sources / f"f{i}.txt").write_bytes(f"file {i}\n".encode())
            paths.append(sources / f"f{i}.txt")
            out.writerow([f"sources/f{i}.txt", f"k{i}"])
        if jpeg is not None:
            paths.append(jpeg)
            out.writerow([str(jpeg), "jpeg"])
    repo = where / "bench.repo"
    init_repository(repo, stores=[("a", "dir:stores/a")]).close()
    with open_context(repo, write=True) as ctx:
        result = ingest(ctx, manifest, table="bench", key="key")
    copy = where / "copy"
    (copy / "fileid").mkdir(parents=True)
    for fileid, path in zip(result.fileids, paths, strict=True):
        shutil.copyfile(path, copy / "fileid" / str(fileid))
    return repo, copy


def host_tree(where: Path, files: int) -> Path:
    """``files`` empty files in directories of 100, the host half of the V7 tree."""
    root = where / "host"
    for i in range(files):
        sub = root / f"d{i // 100}"
        if i % 100 == 0:
            sub.mkdir(parents=True)
        (sub / f"f{i}").touch()
    return root


def imagemagick() -> bool:
    """Whether ``convert`` is ImageMagick's (a host may have a stand-in, or nothing)."""
    if not Path(CONVERT).exists():
        return False
    found = subprocess.run([CONVERT, "-version"], capture_output=True, text=True)
    return found.returncode == 0 and "ImageMagick" in found.stdout


def timed(argv: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def vfs(repo: Path, cache: Path, *command: str) -> list[str]:
    return [sys.executable, "-m", "treadle", "vfs", "run", "--mode", "trace", "--cache",
            str(cache), "--mount", f"{MOUNT}={repo}", "--", *command]


def compare(name: str, ours: list[str], theirs: list[str], cwd: Path, rounds: int,
            target: str) -> None:
    mine, other = [], []
    for _ in range(rounds):
        mine.append(timed(ours, cwd))
        other.append(timed(theirs, cwd))
    a, b = statistics.median(mine), statistics.median(other)
    print(f"{name}: trace mode {a:.3f} s, reference {b:.3f} s, ratio {a / b:.2f} "
          f"(target {target}); all: {[round(x, 3) for x in mine]} vs "
          f"{[round(x, 3) for x in other]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000, help="files on each side of V7")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jpeg", type=Path, help="a JPEG for V8 (default: made by convert)")
    args = ap.parse_args()
    if shutil.which("strace") is None:
        sys.exit("strace is not installed (make system-packages)")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        jpeg = args.jpeg
        if not imagemagick():
            print("V8 skipped: ImageMagick's convert is not installed")
            jpeg = None
        elif jpeg is None:
            jpeg = tmp / "image.jpg"
            subprocess.run([CONVERT, "-size", "1024x768", "plasma:", str(jpeg)], check=True)
        t0 = time.perf_counter()
        repo, copy = make_repository(tmp, args.files, jpeg)
        host = host_tree(tmp, args.files)
        print(f"setup: {args.files} + {args.files} entries in {time.perf_counter() - t0:.1f} s")
        cache = tmp / "cache"
        strace = ["strace", "--seccomp-bpf", "-f", "-e", "trace=%file", "-o", "/dev/null"]
        for label, extra in (("", ()), (" -printf %s (a stat per entry)", ("-printf", "%s\n"))):
            compare(f"V7 find{label}",
                    vfs(repo, cache, "find", str(host), f"{MOUNT}/fileid", *extra),
                    [*strace, "find", str(host), str(copy / "fileid"), *extra], tmp,
                    args.rounds, "<= 1.5")
            compare(f"    the host half alone{label}", vfs(repo, cache, "find", str(host), *extra),
                    [*strace, "find", str(host), *extra], tmp, args.rounds, "none")
            bare = timed(["find", str(host), str(copy / "fileid"), *extra], tmp)
            print(f"    find{label} with no tracer: {bare:.3f} s")
        compare("    start-up: /bin/true", vfs(repo, cache, "true"), [*strace, "true"], tmp,
                args.rounds, "none")
        if jpeg is not None:
            fileid = args.files + 1
            compare("V8 convert", vfs(repo, cache, CONVERT, f"{MOUNT}/fileid/{fileid}",
                                      "-thumbnail", "128x128", str(tmp / "t1.png")),
                    [CONVERT, str(copy / "fileid" / str(fileid)), "-thumbnail", "128x128",
                     str(tmp / "t2.png")], tmp, args.rounds, "<= 6")


if __name__ == "__main__":
    main()
