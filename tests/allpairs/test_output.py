"""--from TRIPLES assembly, stdout output, escaping (spec §1.4)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy
import pytest

from treadle.allpairs import allpairs

from .conftest import TREADLE, write_list


def test_from_triples_any_order(items, tmp_path):
    listed = write_list(tmp_path / "set.list", items)
    allpairs(listed, listed, "BITWISE", output="full.txt", quiet=True)
    lines = Path("full.txt").read_text().splitlines(keepends=True)
    shuffled = lines[:]
    random.Random(1).shuffle(shuffled)
    Path("t.txt").write_text("".join(shuffled))
    subprocess.run(TREADLE + ["allpairs", listed, listed, "--from", "t.txt", "-o", "x.txt"],
                   check=True)
    assert Path("x.txt").read_text() == "".join(lines)
    subprocess.run(TREADLE + ["allpairs", listed, listed, "--from", "t.txt", "-o", "x.npy"],
                   check=True)
    assert numpy.load("x.npy").shape == (6, 6)
    half = [ln for k, ln in enumerate(lines) if k % 6 >= k // 6]
    Path("h.txt").write_text("".join(reversed(half)))
    subprocess.run(TREADLE + ["allpairs", listed, listed, "--from", "h.txt", "--symmetric",
                              "-o", "s.txt"], check=True)
    assert Path("s.txt").read_text() == "".join(lines)
    Path("bad.txt").write_text("".join(lines[1:]))
    run = subprocess.run(TREADLE + ["allpairs", listed, listed, "--from", "bad.txt", "-o", "y.txt"],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "no result for pair (0, 0)" in run.stderr
    Path("dup.txt").write_text("".join(lines + lines[:1]))
    run = subprocess.run(TREADLE + ["allpairs", listed, listed, "--from", "dup.txt", "-o", "y.txt"],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "appears twice" in run.stderr


def test_stdout_and_escaping(tmp_path):
    a = tmp_path / "a b.txt"
    a.write_text("x")
    fns = tmp_path / "esc.py"
    fns.write_text("def f(a, b):\n    return 'line1\\nline2\\\\end\\tTab'\n"
                   "def g(a, b):\n    return 0.1 + 0.2\n"
                   "def h(a, b):\n    return a == b\n")
    listed = write_list(tmp_path / "set.list", [str(a)])
    run = subprocess.run(TREADLE + ["allpairs", listed, listed, f"{fns}:f"], capture_output=True,
                         text=True, check=True)
    assert run.stdout == f"{a}\t{a}\tline1\\nline2\\\\end\tTab\n"
    result = allpairs([str(a)], [str(a)], f"{fns}:f", quiet=True)
    assert result.text(0, 0) == "line1\nline2\\end\tTab"
    assert allpairs([str(a)], [str(a)], f"{fns}:g", quiet=True).text(0, 0) == "0.30000000000000004"
    assert allpairs([str(a)], [str(a)], f"{fns}:h", quiet=True).text(0, 0) == "1"


def test_list_file_rules(tmp_path):
    from treadle.allpairs.sets import read_list_file

    (tmp_path / "x y").write_text("1")
    Path("l").write_text("# comment\n\nx y\nx y\n")
    s = read_list_file("l")
    assert s.names == ("x y", "x y")


def test_directory_and_dataset_like_sets(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    for name in ("b.bin", "a.bin", ".hidden"):
        (d / name).write_bytes(name.encode())

    class FakeFile:  # duck-typed like a Weaver File: a .path attribute
        def __init__(self, path):
            self.path = path

    result = allpairs(str(d), [FakeFile(d / "a.bin"), d / "b.bin"], "BITWISE", quiet=True)
    assert result.names_a == (str(d / "a.bin"), str(d / "b.bin"))
    assert result.names_b == (str(d / "a.bin"), str(d / "b.bin"))
    assert result.text(0, 1) == "1"


# Runs treadle's CLI and reports the process's own peak memory: VmHWM belongs to the
# address space, so unlike ru_maxrss it does not carry the forking parent's size over exec.
PEAK_WRAPPER = (
    "import atexit, runpy, sys\n"
    "def report():\n"
    "    peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
    "    sys.stderr.write('PEAK ' + peak.split()[1] + '\\n')\n"
    "atexit.register(report)\n"
    "sys.argv = ['treadle'] + sys.argv[1:]\n"
    "runpy.run_module('treadle', run_name='__main__')\n"
)


def peak_memory_mb(args: list[str], cwd: Path) -> float:
    """Run ``treadle ARGS``; its peak resident memory in MB."""
    run = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, *args], cwd=cwd,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return int(run.stderr.rsplit("PEAK ", 1)[1].split()[0]) / 1024


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_output_is_assembled_without_the_matrix_in_memory(tmp_path):
    """Nine times the cells in blocks of the same size: the engine's peak memory barely moves
    (holding the matrix, it grew by about 60 bytes a cell, some 20 MB here)."""
    items = tmp_path / "items"
    items.mkdir()
    paths = []
    for k in range(600):
        path = items / f"i{k:04d}"
        path.write_bytes(bytes([k % 251]) * (100 + k % 97))  # 2- and 3-digit results
        paths.append(str(path))
    peaks = {}
    for n in (200, 600):
        listed = write_list(tmp_path / f"{n}.list", paths[:n])
        for out in (f"m{n}.txt", f"m{n}.npy"):
            peaks[out] = peak_memory_mb(["allpairs", listed, listed, "BITWISE", "-o", out,
                                         "-x", "100", "-y", "100", "-T", "local", "-c", "1"],
                                        tmp_path)
        for out in (f"f{n}.txt", f"f{n}.npy"):  # --from the table just written
            peaks[out] = peak_memory_mb(["allpairs", listed, listed, "--from", f"m{n}.txt",
                                         "-o", out], tmp_path)
    assert peaks["m600.txt"] - peaks["m200.txt"] < 8, peaks
    assert peaks["m600.npy"] - peaks["m200.npy"] < 8, peaks  # the 2.9 MB matrix itself is mapped
    assert peaks["f600.txt"] - peaks["f200.txt"] < 8, peaks
    assert peaks["f600.npy"] - peaks["f200.npy"] < 8, peaks
    assert (tmp_path / "f600.txt").read_bytes() == (tmp_path / "m600.txt").read_bytes()
    assert (numpy.load(tmp_path / "f600.npy") == numpy.load(tmp_path / "m600.npy")).all()
    lines = (tmp_path / "m600.txt").read_text().splitlines()
    assert len(lines) == 360000 and lines[601] == f"{paths[1]}\t{paths[1]}\t0"
    matrix = numpy.load(tmp_path / "m600.npy")
    assert matrix[0, 1] == 101 and [line.rsplit("\t", 1)[1] for line in lines[:600]] == [
        f"{v:g}" for v in matrix[0]]


def test_symmetric_assembly_across_uneven_blocks(tmp_path):
    """Mirrored cells land in rows whose blocks are elsewhere; --half keeps i <= j; text and
    .npy agree with a plain double loop."""
    items = tmp_path / "items"
    items.mkdir()
    data = [bytes([k]) * (k * 3 % 11) for k in range(7)]
    paths = []
    for k, content in enumerate(data):
        (items / f"n {k}.é").write_bytes(content)
        paths.append(str(items / f"n {k}.é"))
    want = [[sum(x != y for x, y in zip(a, b, strict=False)) + abs(len(a) - len(b)) for b in data]
            for a in data]
    full = "".join(f"{paths[i]}\t{paths[j]}\t{want[i][j]}\n" for i in range(7) for j in range(7))
    half = "".join(f"{paths[i]}\t{paths[j]}\t{want[i][j]}\n" for i in range(7) for j in range(i, 7))
    allpairs(paths, paths, "BITWISE", symmetric=True, block=3, output=str(tmp_path / "s.txt"),
             quiet=True)
    allpairs(paths, paths, "BITWISE", symmetric=True, half=True, block=3,
             output=str(tmp_path / "h.txt"), quiet=True)
    allpairs(paths, paths, "BITWISE", symmetric=True, block=3, output=str(tmp_path / "s.npy"),
             quiet=True)
    assert (tmp_path / "s.txt").read_text(encoding="utf-8") == full
    assert (tmp_path / "h.txt").read_text(encoding="utf-8") == half
    assert numpy.load(tmp_path / "s.npy").tolist() == [[float(v) for v in row] for row in want]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.txt", "items", "s.npy", "s.txt"]


def test_from_triples_across_many_blocks(tmp_path, monkeypatch):
    """Tiny sort blocks and buffers: a shuffled symmetric half with duplicate names comes
    back as the full table, every buffer flush and mirrored block included; nothing is
    left beside the output."""
    from treadle.allpairs import output

    monkeypatch.setattr(output, "TRIPLES_BLOCK", 2)
    monkeypatch.setattr(output, "TRIPLES_BUFFER", 3)
    items = tmp_path / "items"
    items.mkdir()
    paths = []
    for k in range(5):
        (items / f"i{k}").write_bytes(bytes([k]) * (k + 1))
        paths.append(str(items / f"i{k}"))
    entries = paths + paths[:2]  # two items listed twice: distinct items of one name
    listed = write_list(tmp_path / "set.list", entries)
    allpairs(listed, listed, "BITWISE", output=str(tmp_path / "full.txt"), quiet=True)
    lines = (tmp_path / "full.txt").read_text().splitlines(keepends=True)
    n = len(entries)
    half = [line for k, line in enumerate(lines) if k % n >= k // n]
    random.Random(3).shuffle(half)
    (tmp_path / "half.txt").write_text("".join(half))
    allpairs(listed, listed, None, from_triples=str(tmp_path / "half.txt"), symmetric=True,
             output=str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "".join(lines)
    result = allpairs(listed, listed, None, from_triples=str(tmp_path / "half.txt"),
                      symmetric=True)
    assert result.text(6, 1) == result.text(1, 6) == "0"  # entry 6 is entry 1 again
    assert result.text(6, 0) == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "back.txt", "full.txt", "half.txt", "items", "set.list"]
