"""The Makeflow writer: what it writes, the parser reads back as the same workflow.

A generated workflow (rules with targets, sources, commands, rule variables,
categories, resources, batch options, the LOCAL flag; file-level variables,
exports and MAKEFLOW_OUTPUTS) is written as Makeflow text and as a JSON
workflow, parsed with ``treadle.flow.parser``, and must come back unchanged.
The escaped commands are then run by ``treadle run`` and by the reference
makeflow, which must hand the shell exactly the command that was written.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from treadle.errors import WorkflowError
from treadle.flow.parser import parse_text
from treadle.flow.writer import (
    JSON_END,
    SPECIAL_VARIABLES,
    check_variable,
    escape_command,
    escape_name,
    escape_value,
    header_json,
    header_make,
    rule_json,
    rule_make,
)

TRICKY = ["a b", "it's", 'say "hi"', "$HOME", "#tag", "a:b", "x=y", "back\\slash", "tab\there",
          "-dash", "a->b", "  lead", "trail  ", "$(echo no)", "`no`", "%s\\t%s\\n", "semi;colon",
          "<in>", "ünïcode", "a  b"]


@dataclass
class Spec:
    """One rule as a program builds it, before it is written."""

    targets: list[str]
    sources: list[str]
    command: str
    local: bool = False
    category: str | None = None
    cores: int | None = None
    memory: int | None = None
    disk: int | None = None
    batch: str | None = None
    environment: dict[str, str] = field(default_factory=dict)

    def variables(self) -> list[tuple[str, str]]:
        pairs = [(name, str(value)) for name, value in (
            ("CATEGORY", self.category), ("CORES", self.cores), ("MEMORY", self.memory),
            ("DISK", self.disk), ("BATCH_OPTIONS", self.batch)) if value is not None]
        return pairs + list(self.environment.items())


@dataclass
class Doc:
    """A whole workflow: its file-level variables, exports, final outputs and rules."""

    rules: list[Spec]
    defines: dict[str, str]
    exports: list[str]
    outputs: list[str] | None


def write_make(doc: Doc) -> str:
    return header_make("written by the test", doc.defines, doc.exports, doc.outputs) + "".join(
        rule_make(r.targets, r.sources, r.command, r.variables(), local=r.local)
        for r in doc.rules)


def write_json(doc: Doc) -> str:
    exported = {n: doc.defines[n] for n in doc.exports if n in doc.defines}
    rules = [rule_json(r.targets, r.sources, r.command, category=r.category,
                       resources={k: v for k, v in (("cores", r.cores), ("memory", r.memory),
                                                    ("disk", r.disk)) if v is not None},
                       environment=r.environment, local=r.local) for r in doc.rules]
    return header_json(doc.defines, exported, doc.outputs) + ",\n".join(rules) + JSON_END


_name_chars = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\n\r\x00/") \
    | st.sampled_from(list(" \t'\"$#:=\\-><@\x1a"))
names = st.text(_name_chars, min_size=1, max_size=12) | st.sampled_from(["data/t01.txt", "a->b"])
commands = st.text(st.characters(blacklist_categories=("Cs", "Cc"))
                   | st.sampled_from(list(" \t'\"$#:=\\<>|&;@")), min_size=1, max_size=40).filter(
                       lambda c: c.strip(" \t"))
values = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from(list(" \t$#\\'\"")),
                 max_size=15)
variable_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True).filter(
    lambda n: n not in SPECIAL_VARIABLES and n != "export")
categories = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,6}", fullmatch=True)
sizes = st.one_of(st.none(), st.integers(1, 1 << 20))
rule_specs = st.tuples(
    st.lists(names, min_size=1, max_size=3, unique=True), st.lists(names, max_size=3, unique=True),
    commands, st.booleans(), st.one_of(st.none(), categories), sizes, sizes, sizes,
    # a batch option's blanks at either end are not part of it (the parser trims them)
    st.one_of(st.none(), values.filter(lambda v: v and v.strip(" \t") == v)),
    st.dictionaries(variable_names, values, max_size=3))


@st.composite
def documents(draw: st.DrawFn) -> Doc:
    rules: list[Spec] = []
    made: set[str] = set()
    for i, (outs, ins, command, local, category, cores, memory, disk, batch, env) in enumerate(
            draw(st.lists(rule_specs, min_size=1, max_size=5))):
        outs = [f"{o}{i}" for o in outs if f"{o}{i}" not in made]
        if not outs:
            continue
        made.update(outs)
        # a source may be made by another rule (a dependency), not by the rule itself
        ins = [n for n in ins if n not in outs]
        rules.append(Spec(outs, ins, command, local, category, cores, memory, disk, batch, env))
    defines = draw(st.dictionaries(variable_names, values, max_size=3))
    exported = sorted({n for r in rules for n in r.environment} | set(defines))
    exports = [n for n in exported if n not in defines or draw(st.booleans())]
    # an empty MAKEFLOW_OUTPUTS reads as "not given", so a written list holds a name; a
    # list item is split on quotes, so no item can hold both kinds (refused, see below)
    listable = sorted(n for n in made if not ("'" in n and '"' in n))
    outputs = None
    if listable:
        outputs = draw(st.one_of(st.none(), st.lists(st.sampled_from(listable), min_size=1,
                                                      unique=True)))
    return Doc(rules, defines, exports, outputs)


def _expected_environment(doc: Doc, rule: Spec) -> dict[str, str]:
    """What the rule's job sees: exported names, the rule's own value over the file's."""
    env = {}
    for name in doc.exports:
        value = rule.environment.get(name, doc.defines.get(name))
        if value is not None:
            env[name] = value
    return env


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_what_is_written_parses_back_to_the_same_workflow(doc: Doc) -> None:
    for fmt, text in (("make", write_make(doc)), ("json", write_json(doc))):
        wf = parse_text(text, "Makeflow", fmt=fmt, environ={})
        assert len(wf.rules) == len(doc.rules), (fmt, text)
        for rule, spec in zip(wf.rules, doc.rules, strict=True):
            assert list(rule.targets) == spec.targets, (fmt, text)
            assert list(rule.sources) == spec.sources, (fmt, text)
            assert rule.command == spec.command, (fmt, text)
            assert rule.local == spec.local
            assert rule.category == (spec.category or "default")
            resources = wf.resources_of(rule)
            assert (resources.cores, resources.memory, resources.disk) == (
                spec.cores, spec.memory, spec.disk)
            own = {k: v for k, v in rule.environment.items() if k not in SPECIAL_VARIABLES}
            if fmt == "make":
                assert own == _expected_environment(doc, spec), text
                assert rule.batch_options == spec.batch
            else:  # the JSON form's environment holds exported values; its rules add their own
                for k, v in spec.environment.items():
                    assert rule.environment[k] == v
        if fmt == "make":  # the JSON form: see test_json_final_outputs_are_read_back
            assert wf.outputs == (tuple(doc.outputs) if doc.outputs is not None else None)


@pytest.mark.xfail(strict=True, reason="the JSON reader ignores MAKEFLOW_OUTPUTS in 'define' "
                                       "(treadle.flow.parser, reported in issue 10's weave note)")
def test_json_final_outputs_are_read_back() -> None:
    doc = Doc([Spec(["a"], [], "true"), Spec(["b"], ["a"], "true")], {}, [], ["b"])
    assert parse_text(write_json(doc), "Makeflow.json", fmt="json", environ={}).outputs == ("b",)


def test_plain_text_is_written_unchanged() -> None:
    assert escape_name("data/t01.txt") == "data/t01.txt"
    assert escape_command("wc -c data/t01.txt > t01.size") == "wc -c data/t01.txt > t01.size"
    assert escape_value("-q fast") == "-q fast"
    assert rule_make(["t.size"], ["t"], "wc -c t > t.size", [("CATEGORY", "Map0")]) == (
        "t.size: t\nCATEGORY=Map0\n\twc -c t > t.size\n")


def test_text_no_makeflow_file_can_hold_is_refused() -> None:
    with pytest.raises(WorkflowError, match="newline"):
        escape_command("echo a\necho b")
    with pytest.raises(WorkflowError, match="newline"):
        escape_name("a\nb")
    with pytest.raises(WorkflowError, match="newline"):
        escape_value("a\rb")
    with pytest.raises(WorkflowError, match="not a valid variable name"):
        check_variable("A-B")
    with pytest.raises(WorkflowError, match="not a valid variable name"):
        rule_make(["t"], [], "true", [("A B", "1")])
    with pytest.raises(WorkflowError, match="both kinds of quotes"):
        header_make("c", {}, [], ["it's \"x\""])


def test_final_outputs_with_quotes_and_blanks_are_read_back() -> None:
    """A quoted MAKEFLOW_OUTPUTS item is not escaped inside single quotes (it used to be)."""
    names = ['say "hi"', "it's", "a b", "back\\slash $x", '"0']
    text = header_make("c", {}, [], names) + rule_make(names, [], "true")
    assert parse_text(text, "Makeflow", environ={}).outputs == tuple(names)


def _shell_workflow(strings: list[str]) -> str:
    """Rules whose commands print each string, as an argument and as an environment value."""
    rules = []
    for i, s in enumerate(strings):
        out = f"out {i} {s}"
        command = (f"printf %s {shlex.quote(s)} > {shlex.quote(out)} && "
                   f"printf %s \"$V\" > {shlex.quote(out + '.env')}")
        rules.append(rule_make([out, out + ".env"], [], command, [("V", s)]))
    return header_make("escaped commands", {}, ["V"], None) + "".join(rules)


def _check_outputs(root: Path, strings: list[str]) -> None:
    for i, s in enumerate(strings):
        assert (root / f"out {i} {s}").read_text() == s
        assert (root / f"out {i} {s}.env").read_text() == s


def test_treadle_run_hands_the_shell_the_written_commands(tmp_path: Path) -> None:
    (tmp_path / "Makeflow").write_text(_shell_workflow(TRICKY))
    p = subprocess.run([sys.executable, "-m", "treadle", "run", "Makeflow"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    _check_outputs(tmp_path, TRICKY)


@pytest.mark.reference
def test_reference_makeflow_hands_the_shell_the_written_commands(tmp_path: Path) -> None:
    strings = [s for s in TRICKY if not s.startswith("-")]
    (tmp_path / "Makeflow").write_text(_shell_workflow(strings))
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    p = subprocess.run(["makeflow", "-T", "local", "Makeflow"], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    _check_outputs(tmp_path, strings)
