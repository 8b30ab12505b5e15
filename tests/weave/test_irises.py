"""The motivating program (spec weaver.md R3), exactly as issue 4 writes it."""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import pytest

PROGRAM = """db = SQLDataSet('db', 'biometrics', 'irises')
nefs = Query(db, db.color == 'Blue')
conv = SimpleFunction('convertiristotemplate', outsuffix='bit')
bits = Map(conv, nefs)
cmp = SimpleFunction('compareiristemplates')
AllPairs(cmp, bits, bits, output='matrix.txt')
"""


def test_the_example_file_is_the_program(examples: Path) -> None:
    assert (examples / "irises" / "irises.py").read_text() == PROGRAM


def _blue(examples: Path) -> list[str]:
    con = sqlite3.connect(examples / "irises" / "biometrics.db")
    rows = con.execute("SELECT path FROM irises WHERE color = 'Blue' ORDER BY fileid")
    return [Path(p).stem + ".bit" for (p,) in rows]


def test_compiles_to_five_maps_and_one_native_allpairs(examples: Path, tw) -> None:
    irises = examples / "irises"
    sb, res = tw.weave(irises, "irises.py")
    assert "AllPairs0: native (eligible)" in res.stderr
    rules = sb.rules()
    assert len(rules) == 6
    bits = _blue(examples)
    assert [r.targets for r in rules[:5]] == [(b,) for b in bits]
    native = rules[5]
    assert native.targets == ("matrix.txt",)
    assert native.local and native.command.startswith("treadle allpairs _Stash/0/0/0/")
    assert native.command.endswith("compareiristemplates -o matrix.txt")
    assert set(bits) <= set(native.sources)
    entry = sb.manifest["abstractions"][1]
    assert (entry["kind"], entry["mode"], entry["line"]) == ("AllPairs", "native", 6)
    never, _ = tw.weave(irises, "--native", "never", "-o", "never.weave", "irises.py")
    assert len(never.rules()) == 5 + 25 + 3
    assert never.manifest["abstractions"][1]["reason"] == "--native never"


def test_runs_and_both_paths_give_the_same_bytes(examples: Path, tw) -> None:
    irises = examples / "irises"
    sb, _ = tw.weave(irises, "--run", "irises.py")
    matrix = sb.text("matrix.txt")
    lines = matrix.splitlines()
    bits = _blue(examples)
    assert len(lines) == 25
    assert [tuple(line.split("\t")[:2]) for line in lines] == [(a, b) for a in bits for b in bits]
    for line in lines:
        a, b, r = line.split("\t")
        assert re.fullmatch(r"\d+", r) and (r == "0") == (a == b)
    never, _ = tw.weave(irises, "--native", "never", "-o", "never.weave", "--run", "irises.py")
    assert never.text("matrix.txt") == matrix


def test_database_alias_and_programs_on_path(examples: Path, tmp_path: Path, tw,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The host 'db' may be bound to any URL; programs may come from PATH."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "irises.py").write_text(PROGRAM)
    url = f"sqlite:///{examples / 'irises' / 'biometrics.db'}"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for p in ("convertiristotemplate", "compareiristemplates"):
        shutil.copy(examples / "irises" / p, bindir / p)
    monkeypatch.setenv("PATH", f"{bindir}:{tw.environment()['PATH']}")
    sb, _ = tw.weave(work, "--db", f"db={url}", "irises.py")
    rules = sb.rules()
    assert len(rules) == 6
    assert rules[0].sources[-1] == str(bindir / "convertiristotemplate")
    res = tw.treadle("weave", "irises.py", cwd=work, check=False)
    assert res.returncode == 1 and res.stderr.startswith("irises.py:1: cannot find the database")
