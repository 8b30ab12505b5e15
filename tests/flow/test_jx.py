"""JX expressions and the JSON/JX workflow form (spec §1.11)."""

from __future__ import annotations

import json
import os

import pytest

from treadle.errors import ParseError
from treadle.flow import jx
from treadle.flow.parser import parse_file, parse_text


def ev(text: str, **symbols):
    return jx.evaluate(jx.parse(text), symbols)


def jx_error(text: str, **symbols) -> jx.JXError:
    with pytest.raises(jx.JXError) as info:
        ev(text, **symbols)
    return info.value


# ------------------------------------------------------------------ language


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 / 2", 3),
        ("-7 / 2", -3),
        ("-7 % 3", -1),
        ("7 / 2.0", 3.5),
        ("1 + 0.5", 1.5),
        ('"out." + 3', "out.3"),
        ('1 + "x"', "1x"),
        ('"a" + true', "atrue"),
        ('"a" + null', "anull"),
        ("[1] + [2, 3]", [1, 2, 3]),
        ('"b" > "a"', True),
        ("1 == 1.0", True),
        ('1 == "1"', False),
        ('1 != "1"', True),
        ("true and not false", True),
        ("false or true", True),
        ("[1, 2, 3][1]", 2),
        ("[1, 2, 3][-1]", 3),
        ("[1, 2, 3, 4][1:3]", [2, 3]),
        ("[1, 2, 3, 4][:-1]", [1, 2, 3]),
        ('{"a": {"b": 5}}["a"]["b"]', 5),
        ("[x * x for x in range(4)]", [0, 1, 4, 9]),
        ("[x for x in range(6) if x % 2 == 0]", [0, 2, 4]),
        ("[[x, y] for x in range(2) for y in range(2)]", [[0, 0], [0, 1], [1, 0], [1, 1]]),
        ("[0, x for x in range(2), 9]", [0, 0, 1, 9]),
        ("# comment\n[1, # two\n 2]", [1, 2]),
        ('{"k" + 1: 2}', {"k1": 2}),
        ("null", None),
        ('"\\u00e9\\n"', "é\n"),
        ("1e3", 1000.0),
        ("0" * 5000 + "12", 12),
    ],
)
def test_expressions(text, value):
    assert ev(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("range(3)", [0, 1, 2]),
        ("range(1, 7, 2)", [1, 3, 5]),
        ('format("%s-%03d-%.2f-%x-%%", "a", 7, 1.5, 255)', "a-007-1.50-ff-%"),
        ('format("%i %5s|", 3, "ab")', "3    ab|"),
        ('join(["a", "b"])', "a b"),
        ('join(["a", "b"], ",")', "a,b"),
        ('["a", "b"].join("+")', "a+b"),
        ("ceil(1.2)", 2.0),
        ("floor(1.8)", 1.0),
        ("floor(3)", 3),
        ("floor(1e400) > 0", True),
        ('basename("/a/b/c.txt")', "c.txt"),
        ('dirname("/a/b/c.txt")', "/a/b"),
        ('dirname("c.txt")', "."),
        ('escape("it\'s")', "'it'\\''s'"),
        ('len("abc")', 3),
        ("len([1, 2])", 2),
        ('keys({"a": 1, "b": 2})', ["a", "b"]),
        ('values({"a": 1, "b": 2})', [1, 2]),
        ('items({"a": 1})', [["a", 1]]),
        ('template("x{N}y{M}", {"M": 2})', "x5y2"),
        ('select([{"n": 1}, {"n": 5}], n > 2)', [{"n": 5}]),
        ('where([{"n": 1}, {"n": 5}], n < 2)', [{"n": 1}]),
        ('project([{"n": 1}, {"n": 5}], n * 10)', [10, 50]),
        ('schema({"a": 1, "b": "s"})', {"a": "integer", "b": "string"}),
        ('like("sample_12.dat", "[0-9]+")', True),
        ("range(4).len()", 4),
    ],
)
def test_functions(text, value):
    assert ev(text, N=5) == value


def test_listdir_and_fetch(tmp_path):
    (tmp_path / "b").write_text('{"n": [1, 2]}')
    (tmp_path / "a").write_text("")
    assert ev(f'listdir("{tmp_path}")') == ["a", "b"]
    assert ev(f'fetch("{tmp_path}/b")') == {"n": [1, 2]}


def test_undefined_symbol_names_the_symbol_and_line():
    e = jx_error("[\n1,\n  missing + 1]")
    assert "missing" in e.message and "undefined symbol" in e.message
    assert (e.line, e.column) == (3, 3)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("1 / 0", "division by zero"),
        ('1 - "a"', "mismatched types"),
        ("[1] * 2", "mismatched types"),
        ('{"a": 1}["b"]', "key not found"),
        ("[1][5]", "out of range"),
        ("nosuch(1)", "unknown function"),
        ("not 1", "unsupported operator"),
        ("[x for x in 3]", "takes an array"),
        ("[x for x in range(3) if 1]", "takes a boolean"),
        ("range(10000000000)", "too many"),
        ('format("%d")', "not enough"),
        ("[1, 2", "expected ]"),
        ("1 2", "after the expression"),
        ('"abc', "unterminated string"),
        ("@", "unexpected character"),
        ("1" * 5000, "64 bits"),
        ("0" * 5000 + "1" * 20, "64 bits"),
        ('format("%d", 1e400)', "finite"),
        ('format("%c", 99999999999)', "%c"),
        ('format("%99999999d", 1)', "too large"),
        ("1e400 % 2.0", "not a number"),
    ],
)
def test_errors(text, fragment):
    assert fragment in jx_error(text).message


def test_self_referencing_definitions_fail_cleanly():
    e = jx_error("a", a=jx.Lazy(jx.parse("a + 1")))
    assert "itself" in e.message


def test_definitions_built_on_definitions_are_evaluated_once():
    chain = {"d0": jx.Lazy(jx.parse("1"))}
    for i in range(1, 40):
        chain[f"d{i}"] = jx.Lazy(jx.parse(f"d{i - 1} + d{i - 1}"))
    assert ev("d39", **chain) == 2**39


def test_integers_wrap_at_64_bits():
    assert ev("9223372036854775807 + 1") == -(2**63)
    assert ev("4294967296 * 4294967296") == 0


def test_huge_results_and_endless_work_fail_cleanly(monkeypatch):
    with pytest.raises(jx.JXError, match="too large"):
        ev("x", x=jx.Lazy(jx.parse("y + y")), y="z" * (jx.MAX_SIZE // 2 + 1))
    monkeypatch.setattr(jx, "MAX_STEPS", 1000)
    assert "steps" in jx_error("[x for x in range(5000)]").message


def test_deep_nesting_fails_cleanly():
    with pytest.raises(jx.JXError):
        ev("[" * 3000 + "]" * 3000)


def test_objects_remember_their_line():
    value = ev('[\n\n  {"a": 1}]')
    assert value[0].line == 3


# ------------------------------------------------------------- workflow form

WORKFLOW = """{
  # comments are allowed in JX
  "define": {"N": 3, "names": ["out." + i for i in range(N)]},
  "environment": {"G": "global", "H": "global"},
  "categories": {
    "big": {"resources": {"cores": 4, "memory": 2000}, "environment": {"H": "category"}}
  },
  "rules": [
    {
      "command": "echo " + n + " > " + n,
      "outputs": [n],
      "inputs": [{"dag_name": "in.txt", "task_name": "input"}],
      "category": "big"
    } for n in names
  ] + [
    {
      "command": "cat " + join(names) + " > all",
      "inputs": names,
      "outputs": ["all"],
      "local_job": true,
      "resources": {"wall-time": 60, "gpus": 1},
      "allocation": "first",
      "environment": {"H": "rule"}
    }
  ]
}
"""


def parse_jx(text: str, **kw):
    return parse_text(text, "wf.jx", fmt="jx", environ={}, **kw)


def test_jx_workflow():
    wf = parse_jx(WORKFLOW)
    assert [r.id for r in wf.rules] == [0, 1, 2, 3]
    first, last = wf.rules[0], wf.rules[3]
    assert first.command == "echo out.0 > out.0"
    assert first.targets == ("out.0",) and first.sources == ("in.txt",)
    assert first.remote_names == {"in.txt": "input"}
    assert first.category == "big"
    assert dict(first.environment) == {"G": "global", "H": "category"}
    assert wf.rules[1].environment is first.environment
    assert wf.categories["big"].resources.declared() == {"cores": 4, "memory": 2000}
    assert last.command == "cat out.0 out.1 out.2 > all"
    assert last.sources == ("out.0", "out.1", "out.2")
    assert last.local and last.allocation == "auto"
    assert last.resources.declared() == {"wall_time": 60, "gpus": 1}
    assert dict(last.environment) == {"G": "global", "H": "rule"}
    assert first.line == 9


def test_jx_define_and_args_override(tmp_path):
    args = tmp_path / "args.json"
    args.write_text('{"N": 1}')
    assert len(parse_jx(WORKFLOW, jx_args=str(args)).rules) == 2
    assert len(parse_jx(WORKFLOW, jx_define={"N": "2 + 3"}).rules) == 6
    assert len(parse_jx(WORKFLOW, jx_args=str(args), jx_define={"N": "2"}).rules) == 3
    more = tmp_path / "more.json"
    more.write_text('{"N": 4}')
    assert len(parse_jx(WORKFLOW, jx_args=[str(args), str(more)]).rules) == 5
    assert len(parse_jx(WORKFLOW, jx_define=["N=1+1"]).rules) == 3
    with pytest.raises(ParseError, match="VAR=EXPR"):
        parse_jx(WORKFLOW, jx_define=["N"])


def test_undefined_symbol_in_a_workflow():
    with pytest.raises(ParseError) as info:
        parse_jx('{"rules": [\n {"command": "echo " + who}]}')
    assert info.value.line == 2 and "who" in info.value.message


def test_plain_json_workflow(tmp_path):
    p = tmp_path / "wf.json"
    p.write_text(json.dumps({"rules": [{"command": "touch a", "outputs": ["a"]}]}))
    wf = parse_file(str(p), fmt="json", environ={})
    assert wf.rules[0].command == "touch a" and wf.rules[0].targets == ("a",)


def test_sub_workflow_args_are_written_at_parse_time(tmp_path):
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        wf = parse_jx(
            '{"rules": [{"workflow": "sub.jx", "args": {"a": 5, "b": "x"}, "outputs": ["o"]}]}'
        )
    finally:
        os.chdir(old)
    r = wf.rules[0]
    assert r.workflow == "sub.jx" and r.sources == ("sub.jx",)
    assert r.workflow_args == "sub.jx.0.args"
    assert json.loads((tmp_path / "sub.jx.0.args").read_text()) == {"a": 5, "b": "x"}


def test_no_args_file_is_left_when_the_workflow_is_bad(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParseError):
        parse_jx('{"rules": [{"workflow": "s.jx", "args": {"a": 1}}, {"command": 5}]}')
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ('{"outputs": ["a"]}', "either a command or a workflow"),
        ('{"command": "x", "workflow": "y"}', "either a command or a workflow"),
        ('{"command": "x", "resources": {"cpus": 1}}', "unknown resource"),
        ('{"command": "x", "allocation": "most"}', "allocation"),
        ('{"command": "x", "inputs": [1]}', "string or an object"),
        ('{"command": 5}', "command must be a string"),
    ],
)
def test_bad_rules(rule, fragment):
    with pytest.raises(ParseError) as info:
        parse_jx('{"rules": [' + rule + "]}")
    assert fragment in info.value.message


def test_older_file_spellings():
    wf = parse_jx(
        '{"rules": [{"command": "cat A > B", "inputs": {"path": "A"}, "outputs": [{"path": "B"}]},'
        '{"command": "x", "inputs": "B", "outputs": [{"name": "C", "source": "c"}]}]}'
    )
    assert (wf.rules[0].sources, wf.rules[0].targets) == (("A",), ("B",))
    assert (wf.rules[1].sources, wf.rules[1].targets) == (("B",), ("C",))
    assert wf.rules[1].remote_names == {"C": "c"}


def test_duplicate_target_in_jx():
    with pytest.raises(ParseError) as info:
        parse_jx(
            '{"rules": [{"command": "a", "outputs": ["x"]},\n{"command": "b", "outputs": ["x"]}]}'
        )
    assert "x is defined multiple times" in info.value.message
