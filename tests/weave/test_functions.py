"""Functions and templates in-process (spec weaver.md §2.4, §2.5)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from treadle.errors import WeaverError
from treadle.weave import context
from treadle.weave.context import Config, Script
from treadle.weave.functions import (
    Function,
    ParseFunction,
    Pipeline,
    PythonFunction,
    ShellFunction,
    SimpleFunction,
)
from treadle.weave.nest import Nest, open_script
from treadle.weave.templates import format_output, quote


@pytest.fixture
def nest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Nest:
    monkeypatch.chdir(tmp_path)
    context.reset()
    (tmp_path / "scripts").mkdir()
    script = Script(str(tmp_path / "scripts" / "s.py"), [], str(tmp_path / "s.weave"),
                    config=Config())
    (tmp_path / "s.weave").mkdir()
    yield open_script(script)
    context.reset()


def test_system_programs_are_bare_others_are_shipped(nest: Nest, tmp_path: Path) -> None:
    assert Function("wc").exe_word == "wc" and Function("wc").shipped == []
    tool = tmp_path / "scripts" / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    f = Function("tool")
    assert f.exe_word == str(tool) and [s.abspath for s in f.shipped] == [str(tool)]
    inside = tmp_path / "s.weave" / "mine"
    inside.write_text("#!/bin/sh\n")
    assert Function(str(inside)).exe_word == "./mine"
    elsewhere = tmp_path / "found"
    elsewhere.mkdir()
    (elsewhere / "other").write_text("x")
    assert Function("other", find_dirs=[str(elsewhere)]).exe_word == str(elsewhere / "other")
    with pytest.raises(WeaverError, match="executable 'absent-xyz' not found"):
        Function("absent-xyz")


def test_parse_function_forms(nest: Nest) -> None:
    f = ParseFunction("cp {IN} {OUT}")
    assert f.exe_word == "cp" and f.cmd_format == "{executable} {IN} {OUT}"
    assert ParseFunction(f) is f
    assert ParseFunction("sort").cmd_format == "{executable} {arguments} {inputs} > {outputs}"
    with pytest.raises(WeaverError, match="cannot make a function"):
        ParseFunction(42)
    assert SimpleFunction("sort", outsuffix="s").outsuffix == "s"


def test_command_format_quotes_only_what_needs_it(nest: Nest, tmp_path: Path) -> None:
    f = ParseFunction("cat {IN} > {OUT}")
    inside = tmp_path / "s.weave"
    assert f.command_format([str(inside / "a b.txt"), str(inside / "plain.txt")],
                            [str(inside / "o$.txt")]) == "cat 'a b.txt' plain.txt > 'o$.txt'"
    assert f.command_format(["x"], ["y"]) == f"cat {tmp_path}/x > {tmp_path}/y"
    assert ParseFunction("awk '{{print $1}}' {IN} > {OUT}").command_format("/x", "/y") == \
        "awk '{print $1}' /x > /y"
    g = ParseFunction("seq")
    assert g.command_format(None, "/o", [1, 2]) == "seq 1 2 > /o"
    assert quote("x'y") == "'x'\"'\"'y'"


def test_output_template_fields() -> None:
    counter = iter(range(100))

    def new() -> str:
        return f"S{next(counter)}"

    p = "dir/sub/file.tar.gz"
    assert format_output("{fullpath}|{FULL}|{basename}|{BASE}", p, 0, new) == \
        f"{p}|{p}|file.tar.gz|file.tar.gz"
    assert format_output("{fullpath_woext}|{FULLWE}|{basename_woext}|{BASEWE}", p, 0, new) == \
        "dir/sub/file.tar|dir/sub/file.tar|file.tar|file.tar"
    assert format_output("{i}-{NUMBER}", p, 26, new) == "0001A-0001A"
    assert format_output("{stash}.{stash}", p, 0, new) == "S0.S1"
    with pytest.raises(WeaverError, match="unknown field {nope}"):
        format_output("{nope}", p, 0, new)


def add(*numbers):
    return sum(int(x) for x in numbers)


def test_python_function_script_is_standalone(nest: Nest) -> None:
    f = PythonFunction(add, imports=["json"], helpers={"LIMIT": 3})
    source = Path(f.path).read_text()
    assert source.startswith("#!/usr/bin/env python3\nimport os, sys, json\n")
    assert "LIMIT = 3" in source and "treadle" not in source
    assert os.access(f.path, os.X_OK) and f.path.endswith(".py")
    out = subprocess.run([f.path, "1", "2", "39"], capture_output=True, text=True, check=True)
    assert out.stdout == "42\n"
    assert f.entry == f"{f.exe_word}:add"
    with pytest.raises(WeaverError, match="define it with def at the top level"):
        PythonFunction(lambda x: x)

    def nested(x):
        return x

    with pytest.raises(WeaverError, match="define it with def at the top level"):
        PythonFunction(nested)


def test_shell_function_and_pipeline(nest: Nest, tmp_path: Path) -> None:
    sh = ShellFunction('echo "$@"', shell="bash")
    assert Path(sh.path).read_text() == '#!/bin/bash\necho "$@"\n'
    with pytest.raises(WeaverError, match="shell must be one of"):
        ShellFunction("x", shell="fish")
    p = Pipeline([sh, "sort > {OUT}"], separator="|")
    assert p.command_format(["/a"], ["/b"]) == f"{sh.exe_word} /a > /b | sort > /b"
    assert [s.abspath for s in p.shipped] == [sh.path]
