"""Which commands may skip the shell, and where their program is (treadle.queue.spawn).

The local backend and the worker both rely on this module; their own tests show
that a direct start gives the same results as ``/bin/sh -c``. Here the claims of
the module itself are checked against the real ``/bin/sh``.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from treadle.queue.spawn import direct_start, find_program, shell_free_argv


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("touch out.1", ["touch", "out.1"]),
        ("cp a/b.txt c-d_e,f:g+h@i%j", ["cp", "a/b.txt", "c-d_e,f:g+h@i%j"]),
        ("touch  x\ty ", ["touch", "x", "y"]),
        ("prog a=b", ["prog", "a=b"]),
    ],
)
def test_shell_free_commands_split_into_words(command, argv):
    assert shell_free_argv(command) == argv


@pytest.mark.parametrize(
    "command",
    [
        "echo hi", "cd /tmp", "X=1 prog", "a; b", "a && b", "a | b", "a > out", "a < in",
        "cat *.txt", "ls ~", "echo $HOME", "a 'q'", 'a "q"', "a \\b", "a `b`", "a $(b)",
        "a & b", "true", "test -e x", "export X", "[ -e x ]", "if", "a\nb", "{ a; }", "a?", "a[1]",
        "! a", "exec a", ". file", ": nothing", "",
    ],
)
def test_anything_shell_like_goes_through_the_shell(command):
    assert shell_free_argv(command) is None


@settings(max_examples=60, deadline=None)
@given(command=st.text(alphabet="ab01_.,:+@%^=-/ \t$*?'\"\\;&|<>(){}[]~#!`\n", min_size=1, max_size=14))
def test_the_words_are_the_ones_the_shell_builds(command):
    """Whenever a command is called shell-free, /bin/sh splits it into exactly those words."""
    argv = shell_free_argv(command)
    if argv is None:
        return
    shown = subprocess.run(["/bin/sh", "-c", "set -- " + command + "\nprintf '[%s]' \"$@\""],
                           capture_output=True, text=True, timeout=10)
    assert shown.returncode == 0
    assert shown.stdout == "".join(f"[{w}]" for w in argv)


def _program(directory, name: str, text: str = "#!/bin/sh\n") -> str:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def test_path_is_searched_in_order_skipping_what_cannot_run(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    (first / "prog").write_text("not executable")
    (first / "prog").chmod(0o644)
    (first / "dir").mkdir()
    wanted = _program(second, "prog")
    _program(second, "dir")
    path = f"{first}:{second}"
    assert find_program("prog", path) == wanted
    assert find_program("dir", path) == str(second / "dir")
    assert find_program("absent-program-treadle", path) is None
    assert find_program("./x/y", path) == "./x/y"  # a word with a slash is used as it is


def test_a_program_that_appears_earlier_on_path_is_found_next_time(tmp_path):
    early, late = tmp_path / "early", tmp_path / "late"
    early.mkdir()
    path = f"{early}:{late}"
    late_tool = _program(late, "tool")
    assert find_program("tool", path) == late_tool
    early_tool = _program(early, "tool")
    assert find_program("tool", path) == early_tool  # as a new sh would


def test_relative_path_entries_are_searched_in_the_command_directory(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _program(one / "bin", "tool")
    assert find_program("tool", "bin", cwd=str(one)) == os.path.join(str(one), "bin", "tool")
    _program(two, "tool")
    assert find_program("tool", ":", cwd=str(two)) == os.path.join(str(two), "tool")
    assert find_program("tool", "bin", cwd=str(two)) is None


def test_direct_start_gives_program_and_words_or_none():
    program, argv = direct_start("sh -c x", os.defpath)
    assert os.path.basename(program) == "sh" and argv == ["sh", "-c", "x"]
    assert direct_start("sh -c 'x'", os.defpath) is None
    assert direct_start("absent-program-treadle", os.defpath) is None
    assert direct_start("sh -c x", None) is None  # no PATH: the shell's own search list applies
