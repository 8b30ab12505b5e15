"""--from TRIPLES assembly, stdout output, escaping (spec §1.4)."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import numpy

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
