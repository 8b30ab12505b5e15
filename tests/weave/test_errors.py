"""Errors in a script (spec weaver.md R8): one line with the script's line, exit 1, no DAG."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

CASES = {
    "exception": ("x = 1\ny = x / 0\n", 2, "ZeroDivisionError: division by zero"),
    "missing executable": ("Map('no-such-program-xyz {IN} > {OUT}', ['a'])\n", 1,
                           "executable 'no-such-program-xyz' not found"),
    "duplicate output": ("Map('cat {IN} > {OUT}', ['a', 'b'], 'same.txt')\n", 1,
                         "produced twice"),
    "duplicate across calls": ("f = ParseFunction('cat {IN} > {OUT}')\nf('a', 'o')\n"
                               "f('b', 'o')\n", 3, "o is produced twice: by s.py:2 and by s.py:3"),
    "list length": ("Map('cat {IN} > {OUT}', ['a', 'b'], ['x', 'y', 'z'])\n", 1,
                    "2 inputs but 3 output names"),
    "unknown field": ("d = SQLDataset('t.db', None, 't')\n\nq = Query(d, d.nope == 1)\n"
                      "Map('cat {IN} > {OUT}', q)\n", 4, "has no field 'nope'"),
    "no database": ("d = SQLDataSet('db', 'missing', 't')\n", 1, "cannot find the database"),
    "native required": ("AllPairs(Pipeline(['cat {IN}', 'wc > {OUT}']), ['a'], ['b'],\n"
                        "         native=True)\n", 1, "cannot run natively (native=True): F is "
                        "a Pipeline"),
    "lambda": ("PythonFunction(lambda x: x)\n", 1, "define it with def at the top level"),
    "syntax": ("Map(\n", 1, "syntax error"),
    "newline in a name": ("x = 1\nMap('cat {IN} > {OUT}', ['a'], 'x\\ny')\n", 2,
                          "a file name cannot hold a newline: 'x\\ny'"),
    "variable name": ("Define('A-B', 1)\n", 1, "'A-B' is not a valid variable name"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_error_is_one_line_at_the_script_line(tmp_path: Path, tw, case: str) -> None:
    source, line, message = CASES[case]
    (tmp_path / "a").write_text("a\n")
    (tmp_path / "b").write_text("b\n")
    con = sqlite3.connect(tmp_path / "t.db")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, path TEXT)")
    con.execute("INSERT INTO t VALUES (1, 'a')")
    con.commit()
    con.close()
    (tmp_path / "s.py").write_text(source)
    res = tw.treadle("weave", "s.py", cwd=tmp_path, check=False)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"s.py:{line}:"), lines[0]
    assert message in lines[0]
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "s.weave" / "Makeflow").exists()
    assert not list((tmp_path / "s.weave").glob(".spool-*"))
    assert not list((tmp_path / "s.weave").glob(".dag-*"))


def test_debug_shows_the_traceback(tmp_path: Path, tw) -> None:
    (tmp_path / "s.py").write_text("Map('no-such-program-xyz {IN} > {OUT}', ['a'])\n")
    res = tw.treadle("weave", "-d", "script", "s.py", cwd=tmp_path, check=False)
    assert res.returncode == 1 and "Traceback" in res.stderr and "functions.py" in res.stderr


def test_a_failed_recompile_keeps_the_old_dag(tmp_path: Path, tw) -> None:
    (tmp_path / "a").write_text("a\n")
    (tmp_path / "s.py").write_text("Map('cat {IN} > {OUT}', ['a'], '{basename}.x')\n")
    tw.treadle("weave", "s.py", cwd=tmp_path)
    before = (tmp_path / "s.weave" / "Makeflow").read_text()
    (tmp_path / "s.py").write_text("Map('cat {IN} > {OUT}', ['a'], '{basename}.y')\n1 / 0\n")
    assert tw.treadle("weave", "s.py", cwd=tmp_path, check=False).returncode == 1
    assert (tmp_path / "s.weave" / "Makeflow").read_text() == before


def test_strict_makes_warnings_errors(tmp_path: Path, tw) -> None:
    (tmp_path / "a").write_text("a\n")
    (tmp_path / "s.py").write_text("Map('cat {IN} > {OUT}', ['a'], '/tmp/outside-{basename}')\n")
    res = tw.treadle("weave", "s.py", cwd=tmp_path)
    assert "warning: output /tmp/outside-a lies outside the sandbox" in res.stderr
    res = tw.treadle("weave", "-W", "s.py", cwd=tmp_path, check=False)
    assert res.returncode == 1 and res.stderr.startswith("s.py:1: output /tmp/outside-a")


def test_sandbox_refuses_a_foreign_directory(tmp_path: Path, tw) -> None:
    (tmp_path / "s.py").write_text("print('hi')\n")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "precious.txt").write_text("x")
    res = tw.treadle("weave", "-o", "busy", "s.py", cwd=tmp_path, check=False)
    assert res.returncode == 1 and "not empty" in res.stderr and "--force" in res.stderr
    tw.treadle("weave", "-o", "busy", "--force", "s.py", cwd=tmp_path)
    assert (tmp_path / "busy" / "weave.json").exists()
    tw.treadle("weave", "-o", "busy", "s.py", cwd=tmp_path)
