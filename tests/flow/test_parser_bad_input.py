"""Hostile workflow text: NUL characters (issue 9, defect 5) and huge lines in messages (defect 10).

A NUL cannot reach the OS in a command, a file name or a variable, so the
parser refuses it with ``FILE:LINE:COL``, in the Make form and in JX, before
``treadle analyze -k`` can call the workflow good or ``treadle run`` can start
a rule. A message that quotes the user's text quotes a few hundred characters
of it, however long the line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from treadle.errors import ParseError
from treadle.flow.lexer import MAX_QUOTE
from treadle.flow.parser import parse_text

VALID = (
    "# a small workflow with every kind of line\n"
    "X = one two\n"
    "export X\n"
    ".SIZE in.txt 10K\n"
    "CATEGORY = big\n"
    'out.txt "b c.txt": in.txt\n'
    "\tLOCAL cat in.txt > out.txt; echo $(X) > 'b c.txt'\n"
    "\n"
    "final: out.txt\n"
    "  @Y = 2\n"
    "\tcat out.txt > final\n"
)
BIG = 10 * 1024 * 1024
BOUND = MAX_QUOTE + 200  # the quote, the fixed words of the message and the place


def _analyze(path: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "treadle", "analyze", "-k", *flags, path.name], cwd=path.parent,
                          capture_output=True, timeout=60)


def _run(path: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "treadle", "run", *flags, path.name], cwd=path.parent,
                          capture_output=True, timeout=60)


def test_the_valid_workflow_parses():
    assert len(parse_text(VALID, "wf").rules) == 2


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(VALID)))
def test_a_nul_anywhere_is_refused_at_its_line_and_column(at):
    text = VALID[:at] + "\0" + VALID[at:]
    with pytest.raises(ParseError) as e:
        parse_text(text, "wf")
    line = VALID.count("\n", 0, at) + 1
    column = at - (VALID.rfind("\n", 0, at) + 1) + 1
    assert (e.value.file, e.value.line, e.value.column) == ("wf", line, column)
    assert "NUL" in e.value.message


@pytest.mark.parametrize("text, where", [
    ("out:\n\techo a\0b > out\n", "2:8"),  # in a command
    ("ou\0t:\n\techo a > out\n", "1:3"),  # in a target
    ("X = a\0b\nout:\n\techo $(X) > out\n", "1:6"),  # in a value the command uses
])
def test_analyze_and_run_refuse_a_nul_without_a_traceback(tmp_path, text, where):
    wf = tmp_path / "wf.mf"
    wf.write_bytes(text.encode())
    for result in (_analyze(wf), _run(wf)):
        assert result.returncode != 0
        assert f"wf.mf:{where}: error: NUL character".encode() in result.stderr
        assert b"Traceback" not in result.stderr and b"Syntax OK" not in result.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, flag, where", [
    ('{"rules": [{"command": "echo a\\u0000b > out", "outputs": ["out"]}]}', "--json", "1:31"),
    ('{"rules": [{"command": "echo a\0b > out", "outputs": ["out"]}]}', "--json", "1:31"),
    ('{"rules": [{"command": "echo > out", "outputs": ["o\\u0000ut"]}]}', "--jx", "1:52"),
    ('{"rules": [{"command": format("echo %c", 0), "outputs": ["out"]}]}', "--jx", "1:1"),
])
def test_jx_refuses_a_nul_in_a_rule(tmp_path, text, flag, where):
    wf = tmp_path / "wf.json"
    wf.write_bytes(text.encode())
    for result in (_analyze(wf, flag), _run(wf, flag)):
        assert result.returncode != 0
        assert f"wf.json:{where}: error: ".encode() in result.stderr and b"NUL" in result.stderr
        assert b"Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", [
    "A" * BIG + "\n",  # an unknown keyword
    "out:\n\techo $(" + "V" * BIG + ") > out\n",  # an undefined variable
    "T" * BIG + ":\n\techo\n" + "T" * BIG + ":\n\techo\n",  # a target defined twice
    "." + "D" * BIG + "\n",  # an unknown directive
    ".MAKEFLOW " + "M" * BIG + " x\n",
    ".SIZE " + "S" * BIG + " many\n",
])
def test_a_huge_line_gives_a_short_message(text):
    with pytest.raises(ParseError) as e:
        parse_text(text, "wf")
    assert len(str(e.value)) < BOUND
    assert "more characters" in str(e.value)


@pytest.mark.parametrize("text", [
    '{"rules": [{"command": ' + "s" * BIG + "}]}",  # an undefined symbol
    '{"rules": [{"command": "' + "c" * BIG + '" - 1}]}',  # values quoted by an operator error
    '{"rules": [], "categories": {"' + "k" * BIG + '": 1}}',
    '{"rules": [{"command": "x", "resources": {"' + "r" * BIG + '": 1}}]}',
    '{"rules": [] "' + "t" * BIG + '"}',  # an unexpected string token
    '{"rules": [{"command": x.' + "f" * BIG + "}]}",
])
def test_a_huge_jx_value_gives_a_short_message(text):
    with pytest.raises(ParseError) as e:
        parse_text(text, "wf", fmt="jx")
    assert len(str(e.value)) < BOUND
    assert "more characters" in str(e.value)


def test_a_huge_line_gives_bounded_stderr_from_analyze(tmp_path):
    wf = tmp_path / "wf.mf"
    wf.write_text("x: y\n" + "a" * BIG + "\n")
    result = _analyze(wf)
    assert result.returncode != 0 and b"Traceback" not in result.stderr
    assert len(result.stderr) < BOUND


@pytest.mark.parametrize("text, command", [
    ("out: " + "n" * BIG + "\n\ttouch out\n", "run"),  # an input that does not exist
    ("a: " + "b" * BIG + "\n\ttouch a\n" + "b" * BIG + ": a\n\ttouch b\n", "analyze"),  # a dependency cycle
])
def test_a_huge_file_name_gives_bounded_output(tmp_path, text, command):
    wf = tmp_path / "wf.mf"
    wf.write_text(text)
    result = _run(wf) if command == "run" else _analyze(wf)
    assert result.returncode != 0 and b"Traceback" not in result.stderr
    assert len(result.stdout) + len(result.stderr) < 2000
    assert b"more characters" in result.stdout + result.stderr
