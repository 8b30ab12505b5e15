"""Brute-force equality of the native engine for every form of F (spec §4.4)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from treadle.allpairs import BITWISE, allpairs

from .conftest import hamming, make_script, write_items, write_list


def brute(a: list[str], b: list[str], f) -> list[list[str]]:
    return [[str(f(x, y)) for y in b] for x in a]


def read(path: str) -> bytes:
    return Path(path).read_bytes()


def expected_text(names_a, names_b, table, half=False) -> str:
    return "".join(f"{a}\t{b}\t{table[i][j]}\n" for i, a in enumerate(names_a)
                   for j, b in enumerate(names_b) if not half or j >= i)


def test_bitwise_text_and_npy(items, tmp_path):
    listed = write_list(tmp_path / "set.list", items)
    allpairs(listed, listed, BITWISE, output="m.txt", quiet=True)
    table = brute(items, items, lambda x, y: hamming(read(x), read(y)))
    assert Path("m.txt").read_text() == expected_text(items, items, table)
    allpairs(listed, listed, BITWISE, output="m.npy", quiet=True)
    matrix = numpy.load("m.npy")
    assert matrix.dtype == numpy.float64 and matrix.shape == (6, 6)
    assert matrix.tolist() == [[float(v) for v in row] for row in table]


def test_executable_antisymmetric(items, lines_diff, tmp_path):
    for k, path in enumerate(items):
        Path(path).write_text("x\n" * k)
    a, b = items[:4], items[2:]
    result = allpairs(a, b, lines_diff, block=(3, 2), cores=2, quiet=True, output="o.txt")
    table = brute(a, b, lambda x, y: k_lines(x) - k_lines(y))
    assert Path("o.txt").read_text() == expected_text(a, b, table)
    assert result.text(3, 0) == "1"
    assert result.matrix()[0][3] == -5.0


def k_lines(path: str) -> int:
    return Path(path).read_text().count("\n")


def test_callables_by_file(items, size_diff_py, tmp_path):
    listed = write_list(tmp_path / "set.list", items)
    sizes = brute(items, items, lambda x, y: os.path.getsize(x) - os.path.getsize(y))
    hams = brute(items, items, lambda x, y: hamming(read(x), read(y)))
    for name, table in (("sizediff", sizes), ("ham", hams), ("hamb", hams)):
        allpairs(listed, listed, f"{size_diff_py}:{name}", output=f"{name}.txt", cores=2,
                 block=4, quiet=True)
        assert Path(f"{name}.txt").read_text() == expected_text(items, items, table), name
    # the .py suffix is not required when the file exists
    stem = size_diff_py[:-3]
    result = allpairs(listed, listed, f"{stem}:printer", quiet=True)
    assert result.text(0, 1) == "item000.bin|item001.bin"


def test_symmetric_and_half(items, tmp_path):
    listed = write_list(tmp_path / "set.list", items)
    table = brute(items, items, lambda x, y: hamming(read(x), read(y)))
    result = allpairs(listed, listed, BITWISE, symmetric=True, block=4, output="s.txt",
                      stats_file="st.json", quiet=True)
    assert Path("s.txt").read_text() == expected_text(items, items, table)
    assert result.stats["pairs"] == 21
    allpairs(listed, listed, BITWISE, symmetric=True, half=True, block=4, output="h.txt",
             quiet=True)
    assert Path("h.txt").read_text() == expected_text(items, items, table, half=True)
    allpairs(listed, listed, BITWISE, symmetric=True, block=4, output="s.npy", quiet=True)
    matrix = numpy.load("s.npy")
    assert (matrix == matrix.T).all()


def test_symmetric_needs_same_lists(items):
    import pytest

    from treadle.errors import AllPairsError

    with pytest.raises(AllPairsError, match="same list"):
        allpairs(items, items[::-1], BITWISE, symmetric=True, quiet=True)


def test_npy_refuses_non_numeric(items, size_diff_py):
    import pytest

    from treadle.errors import AllPairsError

    with pytest.raises(AllPairsError, match=r"not a number.*text output"):
        allpairs(items, items, f"{size_diff_py}:printer", output="p.npy", quiet=True)
    assert not Path("p.npy").exists()


names = st.text(alphabet="ab c_-é", min_size=1, max_size=6).filter(
    lambda s: s.strip() == s and not s.startswith("#"))
contents = st.binary(max_size=12)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(names, contents), min_size=1, max_size=5),
       st.lists(st.integers(0, 4), min_size=1, max_size=5), st.booleans())
def test_hypothesis_brute_force(entries, picks, symmetric):
    """Names with spaces, empty files and duplicate entries; callable and executable F."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        uniq = {}
        for name, data in entries:
            uniq.setdefault(name, data)
        paths = write_items(root / "d", list(uniq.values()), list(uniq))
        a = [paths[p % len(paths)] for p in picks] + paths
        b = a if symmetric else paths
        script = make_script(root / "f.sh", '#!/bin/sh\nprintf "%s" "$(cat "$1" "$2" | wc -c)"\n')
        fns = root / "fns.py"
        fns.write_text("from treadle.allpairs import takes_bytes\n@takes_bytes\n"
                       "def h(a, b):\n    return sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))\n")
        want_exec = brute(a, b, lambda x, y: len(read(x)) + len(read(y)))
        want_h = brute(a, b, lambda x, y: hamming(read(x), read(y)))
        got = allpairs(a, b, script, symmetric=symmetric, block=2, quiet=True,
                       output=str(root / "e.txt"))
        assert Path(got.output).read_text() == expected_text(a, b, want_exec)
        for f in (f"{fns}:h", BITWISE):
            out = allpairs(a, b, f, symmetric=symmetric, block=3, quiet=True,
                           output=str(root / "c.txt"))
            assert Path(out.output).read_text() == expected_text(a, b, want_h)


def test_extra_args_and_files(items, tmp_path):
    """-e ARGS come before the pair, split like a shell; -f files must exist."""
    import subprocess

    import pytest

    from treadle.errors import AllPairsError

    from .conftest import TREADLE

    echo = make_script(tmp_path / "first.sh", '#!/bin/sh\necho "$1/$2/$(cat weights.txt)"\n')
    Path("weights.txt").write_text("w")
    listed = write_list(tmp_path / "set.list", items[:2])
    run = subprocess.run(TREADLE + ["allpairs", listed, listed, echo, "-e", "'a b' c", "-f",
                                    "weights.txt", "-t", "0.01"], capture_output=True, text=True,
                         check=True)
    assert run.stdout.splitlines()[0].endswith("\ta b/c/w")
    with pytest.raises(AllPairsError, match="missing.txt"):
        allpairs(items, items, echo, extra_files=["missing.txt"], quiet=True)
