"""A ``#!/bin/sh`` F run in a reused shell gives what a fresh exec of it gives."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from treadle.allpairs import allpairs
from treadle.allpairs.runner import Function, Spawner, compute_pairs, is_plain_sh_script, wave_block
from treadle.errors import AllPairsError

from .conftest import TREADLE, make_script, write_items, write_list

AWKWARD = ["a b", "it's", 'say "hi"', "back\\slash", "*", "-n", "--", "", " lead", "trail ",
           "$HOME", "`true`", "tab\there", "é ü"]

SCRIPTS = {
    "no trailing newline": "#!/bin/sh\nprintf 'no newline'\n",
    "binary bytes": "#!/bin/sh\nprintf '\\000\\001\\377\\r\\n\\n'\n",
    "exit 3": "#!/bin/sh\necho partial\necho 'went wrong' >&2\nexit 3\n",
    "set -e": "#!/bin/sh\nset -e\necho before\necho 'about to fail' >&2\nfalse\necho after\n",
    "dollar 0": '#!/bin/sh\necho "$0"\n',
    "arguments": '#!/bin/sh\necho "$#"\nfor a; do printf "[%s]\\n" "$a"; done\n',
    "stdin": '#!/bin/sh\ncat\necho "read done: $?"\n',
    "exit trap": "#!/bin/sh\ntrap 'echo trapped' EXIT\nexit 4\n",
    "loop variable": '#!/bin/sh\necho "${_treadle_argv-unset}"\n',
}


def both(spawner: Spawner, script: str, args: list[str]) -> tuple[tuple, tuple]:
    """The same call through the reused shell and through a plain exec."""
    argv = [script] + args
    return spawner.run(script, argv, reuse_shell=True), spawner.run(script, argv)


def pid_of_calls(spawner: Spawner, script: str, reuse: bool) -> set[bytes]:
    """``$$`` over three calls: one value in a reused shell, three with exec."""
    return {spawner.run(script, [script], reuse_shell=reuse)[1] for _ in range(3)}


@pytest.fixture
def spawner():
    spawner = Spawner()
    yield spawner
    spawner.close()


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_reused_shell_matches_exec(name, spawner, tmp_path):
    script = make_script(tmp_path / "f.sh", SCRIPTS[name])
    reused, plain = both(spawner, script, AWKWARD)
    assert reused == plain


@pytest.mark.parametrize(("body", "code"), [
    ("#!/bin/sh\nif then\n", 2),
    ("#!/bin/sh\ntreadle-no-such-command\n", 127),
])
def test_shell_errors_match_exec_but_for_the_prefix(body, code, spawner, tmp_path):
    """The shell's own messages name the script once more when it is sourced."""
    script = make_script(tmp_path / "f.sh", body)
    reused, plain = both(spawner, script, [])
    assert reused[:2] == plain[:2] == (code, b"")
    assert reused[2].startswith(script + ": ") and plain[2].startswith(script + ": ")
    assert reused[2].rsplit(": ", 1)[1] == plain[2].rsplit(": ", 1)[1]


def test_failures_report_status_and_stderr(spawner, tmp_path):
    script = make_script(tmp_path / "f.sh", SCRIPTS["exit 3"])
    assert spawner.run(script, [script], reuse_shell=True) == (3, b"partial\n", "went wrong\n")
    script = make_script(tmp_path / "g.sh", SCRIPTS["set -e"])
    assert spawner.run(script, [script], reuse_shell=True) == (1, b"before\n", "about to fail\n")


def test_calls_do_not_leak_into_each_other(spawner, tmp_path):
    script = make_script(tmp_path / "f.sh", '#!/bin/sh\necho "$PWD ${v-none} $(umask)"\n'
                         'cd / && v=set && umask 077 && trap "echo bye" EXIT\n'
                         'echo "$1" >&2\nexit "$1"\n')
    first = spawner.run(script, [script, "5"], reuse_shell=True)
    second = spawner.run(script, [script, "0"], reuse_shell=True)
    assert first == (5, second[1], "5\n")
    assert second[1].decode() == f"{os.getcwd()} none {subprocess.getoutput('umask')}\nbye\n"


def test_extra_args_and_awkward_names_through_compute_pairs(tmp_path):
    names = ["plain.txt", "with space.txt", "it's.txt", "-dash.txt", "back\\slash.txt", "*.txt"]
    paths = write_items(tmp_path / "items", [n.encode() for n in names], names)
    script = make_script(tmp_path / "f.sh", '#!/bin/sh\nprintf "%s|" "$0" "$#" "$@"\n'
                         'cat -- "$3" "$4"\n')
    items = list(enumerate(paths))
    results = []
    for exec_each in (False, True):
        fn = Function("exec", executable=script, args=["-e", "x y"], exec_each=exec_each)
        results.append(compute_pairs(fn, items, items, symmetric=True))
    assert results[0] == results[1]
    lines, calls = results[0]
    assert calls == 21
    assert lines[1] == f"0\t1\t{script}|4|-e|x y|{paths[0]}|{paths[1]}|plain.txtwith space.txt\n"


@pytest.mark.parametrize(("first_line", "plain"), [
    ("#!/bin/sh", True), ("#! /bin/sh", True), ("#!/bin/sh  \t", True),
    ("#!/bin/sh -e", False), ("#!/bin/sh\r", False), ("#!/bin/bash", False),
    ("#!/usr/bin/env sh", False), ("# /bin/sh", False),
])
def test_which_scripts_reuse_a_shell(first_line, plain, tmp_path):
    script = make_script(tmp_path / "f.sh", first_line + "\necho hi\n")
    assert is_plain_sh_script(script) is plain
    body = tmp_path / "not-executable.sh"
    body.write_text("#!/bin/sh\necho hi\n")
    assert not is_plain_sh_script(str(body))


def test_shebang_options_bash_and_binaries_are_exec(spawner, tmp_path):
    dash_e = make_script(tmp_path / "e.sh", "#!/bin/sh -e\nfalse\necho reached\n")
    assert spawner.run(dash_e, [dash_e], reuse_shell=True)[:2] == (1, b"")
    pid = make_script(tmp_path / "pid.sh", "#!/bin/sh\necho $$\n")
    assert len(pid_of_calls(spawner, pid, reuse=True)) == 1
    assert len(pid_of_calls(spawner, pid, reuse=False)) == 3
    for first_line in ("#!/bin/sh -e", "#!/bin/bash"):
        other = make_script(tmp_path / "other.sh", first_line + "\necho $$\n")
        assert len(pid_of_calls(spawner, other, reuse=True)) == 3
    echo = "/bin/echo"
    assert spawner.run(echo, [echo, "-n", "a b"], reuse_shell=True) == (0, b"a b", "")


def test_argument_with_newline_falls_back_to_exec(spawner, tmp_path):
    script = make_script(tmp_path / "f.sh", '#!/bin/sh\nprintf "[%s]" "$@"; echo $$\n')
    one, two = (spawner.run(script, [script, "a\nb"], reuse_shell=True) for _ in range(2))
    assert one[1].startswith(b"[a\nb]") and one[1] != two[1]


def test_a_dead_shell_fails_the_call_and_the_next_call_gets_a_new_one(spawner, tmp_path):
    killer = make_script(tmp_path / "kill.sh", "#!/bin/sh\necho dying >&2\nkill -9 $$\n")
    code, out, tail = spawner.run(killer, [killer], reuse_shell=True)
    assert code != 0 and out == b""
    assert "dying" in tail and "reused /bin/sh" in tail and "--exec-each" in tail
    pid = make_script(tmp_path / "pid.sh", "#!/bin/sh\necho $$\n")
    assert spawner.run(pid, [pid], reuse_shell=True)[0] == 0


def test_close_ends_the_shell(tmp_path):
    spawner = Spawner()
    pid = make_script(tmp_path / "pid.sh", "#!/bin/sh\necho $$\n")
    shell = int(spawner.run(pid, [pid], reuse_shell=True)[1])
    os.kill(shell, 0)
    spawner.close()
    with pytest.raises(ProcessLookupError):
        os.kill(shell, 0)


ARGUMENT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\0"))


@settings(max_examples=40, deadline=None)
@given(args=st.lists(ARGUMENT, max_size=5))
def test_random_arguments_match_exec(args, tmp_path_factory):
    script = tmp_path_factory.getbasetemp() / "args.sh"
    if not script.exists():
        make_script(script, '#!/bin/sh\necho "$#"\nfor a; do printf "[%s]\\n" "$a"; done\n')
    spawner = Spawner()
    try:
        reused, plain = both(spawner, str(script), args)
    finally:
        spawner.close()
    assert reused == plain
    assert reused[0] == 0


def test_wavefront_cells_reuse_the_shell_unless_exec_each(tmp_path):
    script = make_script(tmp_path / "cell.sh",
                         '#!/bin/sh\necho $(( $(cat "$3") + $(cat "$4") + $(cat "$5") ))\n'
                         'echo $$ > "cell-$1-$2.pid"\n')
    shells, values = [], []
    for exec_each in (False, True):
        edge = {(x, 0): "1" for x in range(4)} | {(0, y): "1" for y in range(4)}
        fn = Function("exec", executable=script, exec_each=exec_each)
        done = wave_block(fn, edge, 1, 3, 1, 3)
        shells.append({Path(f"cell-{x}-{y}.pid").read_text() for x, y, _ in done})
        values.append(done)
    assert values[0] == values[1] and ((3, 3, "63") in values[0])
    assert len(shells[0]) == 1 and len(shells[1]) == 9


def test_exec_each_applies_to_executables_only(tmp_path):
    listed = write_list(tmp_path / "set.list", write_items(tmp_path / "i", [b"a", b"b"]))
    with pytest.raises(AllPairsError, match="--exec-each applies to an executable F"):
        allpairs(listed, listed, "BITWISE", exec_each=True)


@pytest.mark.parametrize("exec_each", [False, True])
def test_exec_each_option(exec_each, tmp_path):
    listed = write_list(tmp_path / "set.list",
                        write_items(tmp_path / "i", [b"a", b"bb", b"ccc"]))
    pid = make_script(tmp_path / "pid.sh", "#!/bin/sh\necho $$\n")
    flag = ["--exec-each"] if exec_each else []
    result = subprocess.run(TREADLE + ["allpairs", listed, listed, pid, "-c", "1", "-x", "3",
                                       "-y", "3", "-t", "0.01", "-o", "m.txt"] + flag,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    pids = {line.split("\t")[2] for line in Path("m.txt").read_text().splitlines()}
    assert len(pids) == (9 if exec_each else 1)
    Path("edge.txt").write_text("".join(f"{x} 0 0\n" for x in range(4))
                                + "".join(f"0 {y} 0\n" for y in range(1, 4)))
    result = subprocess.run(TREADLE + ["wavefront", pid, "3", "3", "edge.txt", "w.txt", "-c",
                                       "1", "-t", "0.01"] + flag, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    pids = {line.split()[2] for line in Path("w.txt").read_text().splitlines()}
    assert len(pids) == (9 if exec_each else 1)
