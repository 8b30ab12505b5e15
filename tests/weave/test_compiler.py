"""Whole compiles: determinism (R7), symbols, JSON form, sub-DAG boundaries, the stash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from treadle.weave.options import Options, megabytes, parse_b_options
from treadle.weave.stash import PER_FOLDER, Stash


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "weave.json"}


@pytest.mark.parametrize("script", ["allpairs.py", "wordcount.py", "nests.py", "grouping.py",
                                    "editdistance.py", "query_sql.py"])
def test_compiles_are_byte_identical(examples: Path, tw, script: str) -> None:
    a, _ = tw.weave(examples, "-o", "a.weave", script)
    first = _tree(a.path)
    tw.weave(examples, "-o", "a.weave", script)
    assert _tree(a.path) == first


def test_symbols_name_the_script_line(examples: Path, tw) -> None:
    sb, _ = tw.weave(examples, "-g", "grouping.py")
    text = sb.dag()
    assert text.count("# grouping.py:4 Map1\n") == 8 and "\n\t#" not in text


def test_inline_subdag_boundary(examples: Path, tw) -> None:
    sb, _ = tw.weave(examples, "-t", "3", "collect.py")
    rules = sb.rules()
    subs = [r for r in rules if r.workflow is not None]
    assert len(subs) == 6  # 8 tasks of each Map in groups of 3, 3, 2
    first_up = subs[0]
    inner = sb.rules(first_up.workflow)
    assert list(first_up.targets) == [o for r in inner for o in r.targets]
    # the sub-DAG's file is a source too: the parser adds it to a MAKEFLOW rule
    assert list(first_up.sources) == [i for r in inner for i in r.sources] + [first_up.workflow]


def test_json_format_matches_make(examples: Path, tw) -> None:
    sb, _ = tw.weave(examples, "--format", "json", "-o", "j.weave", "options.py")
    doc = json.loads(sb.text("Makeflow.json"))
    gz = [r for r in doc["rules"] if r["outputs"][0].endswith(".gz")]
    assert gz[0]["resources"] == {"cores": 4, "memory": 1024, "disk": 20480}
    where = next(r for r in doc["rules"] if r["outputs"] == ["where.txt"])
    assert where["local_job"] is True and where["command"] == "hostname > where.txt"


def test_stash_names_and_folders(tmp_path: Path) -> None:
    s = Stash(str(tmp_path / "_Stash"))
    assert s.next() == str(tmp_path / "_Stash/0/0/0/0000000")
    assert s.next(".py").endswith("_Stash/0/0/0/0000001.py")
    s.count = PER_FOLDER
    assert s.next().endswith("_Stash/0/0/1/0010000")
    s.count = 0xABC * PER_FOLDER + 5
    assert s.next().endswith("_Stash/A/B/C/ABC0005")


def test_options_sizes_and_merging() -> None:
    assert megabytes("1G", "m") == 1024 and megabytes("20GB", "d") == 20480
    assert megabytes(512, "m") == 512 and megabytes("1.5K", "m") == 1
    outer = Options(cpu=2, memory="1G", local=True, environment={"A": 1})
    inner = Options(cpu=0, local=False, environment={"B": 2})
    merged = outer.merged(inner)
    assert (merged.cpu, merged.memory, merged.local) == (0, "1G", False)
    assert merged.environment == {"A": 1, "B": 2}
    b = parse_b_options(["cpu=3,batch=-q x,y=1", "local=yes"])
    assert (b.cpu, b.batch, b.local) == (3, "-q x,y=1", True)


@pytest.mark.parametrize("first", ["", "f = File('in.txt')\n", "with Options(cpu=2):\n    pass\n",
                                   "with Nest('inner'):\n    pass\n", "ds = Glob('*.txt')\n"])
def test_a_plain_program_can_import_the_api(tmp_path: Path, tw, first: str) -> None:
    """Whatever a plain program touches first makes the default script and its root nest."""
    (tmp_path / "in.txt").write_text("x\n")
    (tmp_path / "prog.py").write_text(
        "from treadle.weave import *\n" + first +
        "Map('cat {IN} > {OUT}', ['in.txt'], '{basename}.copy')\n"
        "CurrentNest().compile()\n")
    import subprocess
    import sys

    subprocess.run([sys.executable, "prog.py"], cwd=tmp_path, check=True,
                   env=tw.environment())
    rule = next(r for r in tw.Sandbox(tmp_path / "prog.weave").rules() if r.workflow is None)
    assert rule.targets == ("in.txt.copy",) and rule.sources == (str(tmp_path / "in.txt"),)


def test_json_form_runs_nests_and_groups(examples: Path, tw) -> None:
    for script in ("nests.py", "grouping.py"):
        sb, _ = tw.weave(examples, "--format", "json", "-o", f"json-{script}.weave", script)
        doc = json.loads(sb.text("Makeflow.json"))
        assert any("workflow" in r for r in doc["rules"])
        sb.run("--json", dag="Makeflow.json")
    assert len((examples / "json-nests.py.weave" / "lines.txt").read_text().splitlines()) == 8
    assert len(list((examples / "json-grouping.py.weave").glob("t0*.txt.md5"))) == 8
