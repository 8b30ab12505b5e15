"""A Glob or Query that selects nothing is reported at compile time, at the script line that made it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

SCRIPTS = {
    "glob": ("inputs = Glob('inputs/*.fasta')\n"
             "Map('cat {IN} > {OUT}', inputs, '{BASE}.out')\n",
             "s.py:1: ", "Glob('inputs/*.fasta') matches no files"),
    "query": ("db = SQLDataSet('t.db', None, 't')\n"
              "\n"
              "blue = Query(db, db.color == 'blue')\n"
              "Map('cat {IN} > {OUT}', blue, '{BASE}.out')\n",
              "s.py:3: ", "(color == 'blue')) selects nothing"),
    "query over files": ("listed = FileList('list.txt')\n"
                         "big = Query(listed, listed.size > 10**9)\n"
                         "Map('cat {IN} > {OUT}', big, '{BASE}.out')\n",
                         "s.py:2: ", "selects nothing"),
}


def _workspace(tmp_path: Path, source: str) -> None:
    (tmp_path / "a.txt").write_text("a\n")
    (tmp_path / "list.txt").write_text("a.txt\n")
    con = sqlite3.connect(tmp_path / "t.db")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, path TEXT, color TEXT)")
    con.execute("INSERT INTO t VALUES (1, 'a.txt', 'red')")
    con.commit()
    con.close()
    (tmp_path / "s.py").write_text(source)


@pytest.mark.parametrize("case", sorted(SCRIPTS))
def test_empty_selection_warns_at_its_line(tmp_path: Path, tw, case: str) -> None:
    source, site, message = SCRIPTS[case]
    _workspace(tmp_path, source)
    res = tw.treadle("weave", "s.py", cwd=tmp_path, check=False)
    assert res.returncode == 0
    warnings = [line for line in res.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, res.stderr
    assert warnings[0].startswith(site + "warning: ") and warnings[0].endswith(message)


@pytest.mark.parametrize("case", sorted(SCRIPTS))
def test_empty_selection_fails_the_compile_under_w(tmp_path: Path, tw, case: str) -> None:
    source, site, message = SCRIPTS[case]
    _workspace(tmp_path, source)
    res = tw.treadle("weave", "-W", "s.py", cwd=tmp_path, check=False)
    assert res.returncode == 1
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(site) and f"{message} (a warning, made an error by -W)" in line
    assert not (tmp_path / "s.weave" / "Makeflow").exists()


def test_a_selection_with_members_is_silent(tmp_path: Path, tw) -> None:
    _workspace(tmp_path, "Map('cat {IN} > {OUT}', Glob('*.txt'), '{BASE}.out')\n"
                         "db = SQLDataSet('t.db', None, 't')\n"
                         "Map('cat {IN} > {OUT}', Query(db, db.color == 'red'), '{BASE}.sel')\n")
    res = tw.treadle("weave", "-W", "s.py", cwd=tmp_path, check=False)
    assert res.returncode == 0, res.stderr
    assert "warning" not in res.stderr
