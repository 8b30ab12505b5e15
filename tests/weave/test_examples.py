"""Every example script of spec weaver.md §5: compile, check the shape, run, check results."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from treadle.flow.parser import parse_file

pytestmark = pytest.mark.slow


def test_map(examples: Path, tw) -> None:
    sb, _ = tw.weave(examples, "map.py")
    rules = sb.rules()
    assert len(rules) == 8
    assert all(r.command.startswith("wc -c ") for r in rules)
    assert sb.manifest["abstractions"][0]["tasks"] == 8
    sb.run()
    for n in range(1, 9):
        size = os.stat(examples / "data" / "text" / f"t0{n}.txt").st_size
        assert sb.text(f"t0{n}.size").split()[0] == str(size)


def test_map_json_has_the_same_rules(examples: Path, tw) -> None:
    import json

    sb, _ = tw.weave(examples, "map.py")
    sj, _ = tw.weave(examples, "--format", "json", "-o", "json.weave", "map.py")
    doc = json.loads(sj.text("Makeflow.json"))
    make = sb.rules()
    assert len(doc["rules"]) == 8
    for r, m in zip(doc["rules"], make, strict=True):
        assert r["outputs"] == list(m.targets) and r["inputs"] == list(m.sources)
        assert r["command"] == m.command and r["category"] == "Map0"
    sj.run("--json", dag="Makeflow.json")
    assert sj.text("t03.size").split()[0] == str(
        os.stat(examples / "data/text/t03.txt").st_size)


def test_templates(examples: Path, tw) -> None:
    sb, _ = tw.weave(examples, "templates.py")
    outs = [o for r in sb.rules() for o in r.targets]
    named = sorted(o for o in outs if not o.startswith("_Stash/"))
    assert named == sorted(["t01.txt.copy", "t02.txt.copy", "t01.b", "t02.b", "out/00000-t01",
                            "out/00001-t02", "t01.txt.again", "t02.txt.again"])
    stashed = [o for o in outs if o.startswith("_Stash/")]
    assert len(stashed) == 2 and all(re.fullmatch(r"_Stash/0/0/0/000[0-9A-F]{4}", o)
                                     for o in stashed)
    sb.run()
    assert sb.text("t01.txt.again") == (examples / "data/text/t01.txt").read_text()
    assert sb.text("out/00001-t02") == (examples / "data/text/t02.txt").read_text()


def test_functions(examples: Path, tw) -> None:
    sb, _ = tw.weave(examples, "functions.py")
    rules = sb.rules()
    assert len(rules) == 6
    assert all(r.environment["GREETING"] == "hello" for r in rules)
    assert all("HOME" in r.environment for r in rules)  # exported: the engine's own value
    sb.run()
    assert re.fullmatch(r"\d{4}\n", sb.text("year.txt"))
    total = sum(len(p.read_text().splitlines()) for p in (examples / "data/text").glob("*.txt"))
    assert sb.text("lines.txt").strip() == str(total)
    assert sb.text("sum.txt") == "10\n"
    words = set((examples / "data/text/t01.txt").read_text().split())
    assert sb.text("words.txt").split() == sorted(words)
    env0 = dict(line.split("=", 1) for line in sb.text("env0.txt").splitlines() if "=" in line)
    env1 = dict(line.split("=", 1) for line in sb.text("env1.txt").splitlines() if "=" in line)
    assert env0["GREETING"] == "hello" and env0["COLOUR"] == "blue" and env0["HOME"]
    assert "SIZE" not in env0 and env1["SIZE"] == "L" and env1["COLOUR"] == "blue"


def test_query_files(examples: Path, tw) -> None:
    sb, res = tw.weave(examples, "query_files.py")
    lines = res.stdout.splitlines()
    big = sorted(p.name for p in (examples / "data/text").glob("*.txt")
                 if p.stat().st_size >= 200)
    assert lines[0] == repr(big)
    assert lines[1] == "['t01.txt', 't02.txt', 't03.txt', 't07.txt']"
    assert len(sb.rules()) == 4
    sb.run()
    assert sb.text("t07.txt.lines").split()[0] == str(
        len((examples / "data/text/t07.txt").read_text().splitlines()))


def test_query_sql(examples: Path, tw) -> None:
    sb, res = tw.weave(examples, "query_sql.py")
    db = sqlite3.connect(examples / "catalog.db")

    def names(sql: str, *params: object) -> str:
        return repr([r[0] for r in db.execute(sql, params)])

    expected = [
        names("SELECT name FROM images WHERE colour = ? ORDER BY id", "blue"),
        names("SELECT name FROM images WHERE name LIKE ? ORDER BY id LIMIT 2", "cat%"),
        names("SELECT name FROM images WHERE colour IN ('red', 'green') OR (width >= 640 AND "
              "owner IS NOT NULL) ORDER BY id"),
        names("SELECT name FROM images WHERE owner = ? ORDER BY id", "O'Brien"),
        names("SELECT name FROM images WHERE NOT colour = 'blue' ORDER BY id"),
    ]
    assert res.stdout.splitlines() == expected
    assert expected[3] == "['cat3.img']"
    bare = [r[0] for r in db.execute("SELECT name FROM images WHERE thumb IS NULL ORDER BY id")]
    rules = sb.rules()
    assert len(rules) == len(bare)
    assert [r.targets[0] for r in rules] == [n.replace(".img", ".thumb") for n in bare]
    sb.run()
    for n in bare:
        data = (examples / "data/images" / n).read_bytes()[:64]
        assert (sb.path / n.replace(".img", ".thumb")).read_bytes() == data


def test_merge(examples: Path, tw) -> None:
    sb, _ = tw.weave(examples, "merge.py")
    rules = sb.rules()
    merges = [r for r in rules if r.category == "Merge0"]
    assert len(rules) == 54 and len(merges) == 14
    assert all(r.local for r in merges)
    sb.run()
    expected = "".join(f"{k}\n" for n in range(1, 41) for k in range(1, n + 1))
    assert sb.text("all.txt") == expected and len(expected.splitlines()) == 820


def _reference_counts(examples: Path) -> dict[str, int]:
    text = "".join(p.read_text() for p in sorted((examples / "data/text").glob("*.txt")))
    counts: dict[str, int] = {}
    for word in re.split(r"[^0-9A-Za-z]+", text):
        if word:
            counts[word.lower()] = counts.get(word.lower(), 0) + 1
    return counts


@pytest.mark.parametrize("form", ["python", "shell"])
def test_wordcount(examples: Path, tw, form: str) -> None:
    args = ["wordcount.py"] + (["shell"] if form == "shell" else [])
    sb, _ = tw.weave(examples, *args)
    kinds = [r.category for r in sb.rules()]
    assert kinds == ["MapReduce0"] * 6 + ["Merge0"]
    maps = [r for r in sb.rules()][:3]
    assert all(len(r.targets) == 3 for r in maps)
    sb.run()
    got = {}
    for line in sb.text("wordcount.txt").splitlines():
        word, count = line.split("\t")
        got[word] = int(count)
    assert got == _reference_counts(examples)


def test_allpairs(examples: Path, tw) -> None:
    sb, _ = tw.weave(examples, "allpairs.py")
    modes = [(a["id"], a["mode"]) for a in sb.manifest["abstractions"] if a["kind"] == "AllPairs"]
    assert modes == [("AllPairs0", "native"), ("AllPairs1", "expanded"), ("AllPairs2", "native")]
    rules = sb.rules()
    assert len(rules) == 1 + 144 + 10 + 1
    native = [r for r in rules if r.command.startswith("treadle allpairs ")]
    assert len(native) == 2 and all(r.local for r in native)
    assert ".py:hamming" in native[0].command and "--symmetric" in native[1].command
    sb.run()
    assert sb.text("native.txt") == sb.text("expanded.txt")
    assert len(sb.text("native.txt").splitlines()) == 144
    import numpy as np

    m = np.load(sb.path / "half.npy")
    assert m.shape == (12, 12) and (m == m.T).all() and not m.diagonal().any()
    blobs = sorted((examples / "data/blobs").glob("*.bin"))
    x, y = blobs[0].read_bytes(), blobs[5].read_bytes()
    assert m[0, 5] == sum(p != q for p, q in zip(x, y, strict=True))


def test_nests(examples: Path, tw) -> None:
    sb, _ = tw.weave(examples, "nests.py")
    root = sb.rules()
    assert [r.workflow for r in root] == ["lines/Makeflow", None, "words/Makeflow"]
    assert root[1].local and root[1].command == "cat " + " ".join(
        f"lines/t0{n}.txt.n" for n in range(1, 9)) + " > lines.txt"
    assert len(sb.rules("lines/Makeflow")) == 9
    assert sb.rules("lines/Makeflow")[-1].workflow == "lines/sorted/Makeflow"
    assert len(sb.rules("lines/sorted/Makeflow")) == 8
    assert len(sb.rules("words/Makeflow")) == 8
    assert "lines.txt" in root[2].sources
    sb.run()
    assert len(sb.text("lines.txt").splitlines()) == 8
    assert sb.text("words/t05.txt.w").split()[0] == str(
        len((examples / "data/text/t05.txt").read_text().split()))
    assert sb.text("lines/sorted/t02.txt.s") == "".join(
        sorted((examples / "data/text/t02.txt").read_text().splitlines(True)))


OPTION_LINES = [
    "Options(cpu=2, memory=1G, disk=20G, batch=None, local=None, collect=None, environment={})",
    "Options(cpu=4, memory=1G, disk=20G, batch=None, local=None, collect=None, environment={})",
    "Options(cpu=4, memory=1G, disk=20G, batch=None, local=None, collect=None, environment={})",
    "Options(cpu=2, memory=1G, disk=20G, batch=--partition=short, local=True, collect=None, "
    "environment={})",
]


def test_options(examples: Path, tw) -> None:
    sb, res = tw.weave(examples, "options.py")
    assert res.stdout.splitlines() == OPTION_LINES
    rules = sb.rules()
    gz = [r for r in rules if r.targets[0].endswith(".gz")]
    assert len(gz) == 8
    for r in gz:
        assert (r.resources.cores, r.resources.memory, r.resources.disk) == (4, 1024, 20480)
    where = next(r for r in rules if r.targets == ("where.txt",))
    assert where.local and where.command.startswith("hostname")
    assert where.batch_options == "--partition=short" and where.resources.cores == 2
    sb.run()
    assert sb.text("where.txt").strip()
    sb1, res1 = tw.weave(examples, "-b", "cpu=1", "-o", "one.weave", "options.py")
    assert [line.replace("cpu=1", "cpu=X") for line in res1.stdout.splitlines()] == [
        re.sub(r"cpu=\d", "cpu=X", line) for line in OPTION_LINES]
    assert {r.resources.cores for r in sb1.rules()} == {1}


def test_collatz(examples: Path, tw) -> None:
    sb, res = tw.weave(examples, "collatz.py")
    assert res.stdout.splitlines()[-1] == "6 3 10 5 16 8 4 2 1"
    root = sb.rules()
    assert [r.workflow for r in root] == [f"round{n}/Makeflow" for n in range(1, 9)]
    for n in range(1, 9):
        assert len(sb.rules(f"round{n}/Makeflow")) == 1
    assert root[1].sources[0] == "round1/value"


def test_editdistance(examples: Path, tw) -> None:
    sb, _ = tw.weave(examples, "editdistance.py")
    modes = [a["mode"] for a in sb.manifest["abstractions"]]
    assert modes == ["native", "expanded"]
    rules = sb.rules()
    assert len(rules) == 1 + 42 + 1
    assert "treadle wavefront" in rules[0].command and ".py:cell 6 7" in rules[0].command
    sb.run()
    lines = sb.text("distance.txt").splitlines()
    assert len(lines) == 42 and lines[-1] == "6 7 3"
    assert sb.text("distance.txt") == sb.text("distance-expanded.txt")


def test_workbench_patterns(examples: Path, tw) -> None:
    counts = {}
    for pattern, n in (("map", 20), ("chain", 5), ("fanin", 20), ("fanout", 7),
                       ("concurrent", 9)):
        sb, _ = tw.weave(examples, "-o", f"{pattern}.weave", "workbench.py", pattern, str(n))
        counts[pattern] = len(sb.rules())
        if pattern == "fanout":
            rules = sb.rules()
            assert all(r.sources == ("fanout.input",) for r in rules)
            assert all(r.command == f"cat fanout.input > {r.targets[0]}" for r in rules)
            sb.run()
            assert sb.text("00006.out") == "shared input\n"
        if pattern == "chain":
            sb.run()
            assert sb.text("chain4.out") == "start\n"
    assert counts == {"map": 20, "chain": 5, "fanin": 23, "fanout": 7, "concurrent": 9}


def test_grouping(examples: Path, tw) -> None:
    results = {}
    for flags, expected in (((), (2, 8)), (("-t", "2"), (2, 4)), (("-a",), None)):
        name = "g" + "".join(flags).replace("-", "_") + ".weave"
        sb, _ = tw.weave(examples, *flags, "-o", name, "grouping.py")
        rules = sb.rules()
        subs = [r for r in rules if r.workflow is not None]
        if expected is None:
            assert len(rules) == 2 and len(subs) == 2
        else:
            md5 = [r for r in subs if r.category == "Map0"]
            rest = [r for r in rules if r.category == "Map1"]
            assert len(md5) == expected[0]
            assert len(rest) == expected[1]
            for s in md5:
                assert len(sb.rules(s.workflow)) == 4
        sb.run()
        results[name] = {p.name: p.read_text() for p in sb.path.glob("t0*.txt.*")}
        assert len(results[name]) == 16
    first, *others = results.values()
    assert all(o == first for o in others)


def test_collect(examples: Path, tw) -> None:
    sb, _ = tw.weave(examples, "collect.py")
    workflow = sb.workflow()
    assert workflow.outputs == tuple(f"0000{n}.n" for n in range(8))
    stash = [r.targets[0] for r in workflow.rules if r.category == "Map0"]
    tw.weave(examples, "--run", "collect.py")
    for n in range(8):
        assert (sb.path / f"0000{n}.n").read_text().strip().isdigit()
    assert not any((sb.path / s).exists() for s in stash)


def test_arguments(examples: Path, tw) -> None:
    sb, res = tw.weave(examples, "arguments.py", "hello", "world")
    assert res.stdout.splitlines() == ["['hello', 'world']"]
    assert sb.rules() == [] and sb.manifest["rules"] == {"Makeflow": 0}


@pytest.mark.reference
def test_reference_makeflow_runs_the_dags(examples: Path, tw) -> None:
    """Differential: the reference engine accepts and runs what the compiler writes."""
    for script in ("map.py", "functions.py", "merge.py", "wordcount.py", "grouping.py"):
        sb, _ = tw.weave(examples, "-o", f"ref-{script}.weave", script)
        check = subprocess.run(["makeflow_analyze", "-k", "Makeflow"], cwd=sb.path,
                               capture_output=True, text=True, env=tw.environment())
        assert "Syntax OK" in check.stdout, check.stdout + check.stderr
        if script == "grouping.py":
            continue  # the reference starts sub-workflows by a relative argv[0] (its bug)
        run = subprocess.run(["makeflow", "-T", "local", "Makeflow"], cwd=sb.path,
                             capture_output=True, text=True, env=tw.environment())
        assert run.returncode == 0, run.stdout + run.stderr
    assert (examples / "ref-functions.py.weave" / "sum.txt").read_text() == "10\n"


ALL = ["map.py", "templates.py", "functions.py", "query_files.py", "query_sql.py", "merge.py",
       "wordcount.py", "allpairs.py", "nests.py", "options.py", "editdistance.py",
       "grouping.py", "collect.py", "arguments.py"]


def test_every_dag_passes_the_parsers(examples: Path, tw) -> None:
    """R5: every DAG of every example, sub-DAGs included, parses; analyze -k accepts it."""
    import shutil

    dags = []
    for flags in ((), ("-t", "3"), ("-a",)):
        for script in ALL:
            name = f"p{'-'.join(flags)}-{script}.weave"
            sb, _ = tw.weave(examples, *flags, "-o", name, script)
            for path in sorted(sb.path.rglob("*")):
                if path.is_file():
                    with open(path, errors="replace") as f:
                        if "generated by treadle weave" in f.readline():
                            dags.append(path)
            wf = parse_file(str(sb.path / "Makeflow"), environ={"HOME": "/"})
            assert len(wf.rules) == sb.manifest["rules"]["Makeflow"]
            tw.treadle("analyze", "-k", "Makeflow", cwd=sb.path)
            if shutil.which("makeflow_analyze"):
                check = subprocess.run(["makeflow_analyze", "-k", "Makeflow"], cwd=sb.path,
                                       capture_output=True, text=True, env=tw.environment())
                assert "Syntax OK" in check.stdout, check.stdout + check.stderr
    assert len(dags) > 50
    for path in dags:
        parse_file(str(path), environ={"HOME": "/"})
