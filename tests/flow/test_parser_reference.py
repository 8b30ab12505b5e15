"""Differential tests: the reference cctools and treadle read the same files the same way.

The command text and exported environment of every rule are compared with
what ``makeflow -T dryrun`` writes to ``<dagfile>.sh``, and acceptance or
rejection with ``makeflow_analyze -k``. Where treadle deliberately differs
(spec §4: comments after values, dashes, a missing final newline, cycles,
``.MAKEFLOW GPUS``), the corpus leaves those constructs out.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from treadle.errors import ParseError
from treadle.flow.checks import find_cycle
from treadle.flow.parser import parse_file

pytestmark = pytest.mark.reference

ENGINE_DEFAULTS = {"CORES", "OMP_NUM_THREADS"}  # added by the engine, not the parser

RUNNABLE = {
    "plain": "a: in\n\tcat in > a\nb: a\n\tcp a b\n",
    "variables": "X=1\nY=$(X)2\nZ = ${Y} 3  \nout:\n\techo $(X) ${Y} $Z [$(Z)] > out\n",
    "scope": (
        "V = 1\nout.0:\nV=0\n\techo $(V)\nout.1:\n\techo $(V)\nout.2:\nV+=2\n\techo $(V)\n"
        "out.3:\nW+=0\n\techo $(W)\nout.4:\nW+=1\n\techo $(W)\n"
    ),
    "quoting": (
        'V_CD=C D\nV_HK="H I" "J K"\n"A":\n\techo A > A\n\'B\':\n\techo B > B\n'
        '$(V_CD) E:\n\ttouch C D E\nF "$(V_CD)" G:\n'
        '\techo "$(V_CD) \\\'$(V_CD)\\\' \\\\\\"$(V_CD)\\\\\\"" > "$(V_CD)"; touch F G \n'
        '$(V_HK):\n    touch "H I" "J K"\n'
    ),
    "blanks": "out:\n\techo   a\t\tb  'c   d'  \"e   f\"   \n",
    "escapes": 'out:\n\techo \\$HOME a\\ b \\\\ "x\\ty" "\\"q\\"" > out\n',
    "continuation": 'out1:\n\techo "One" "Two" \\\n    "Three" > out1\nout2: out1\n\tgrep One out1 > out2 \\\n\n',
    "comment in command": 'out:\n    echo "# not a comment" > out # a comment\n',
    "redirections": "out: in\n\tcat<in>out\nlocal: in\n\tLOCAL < in > local cat\n",
    "modifiers": "L=LOCAL\nout:\n\t$(L) echo hi > out\nb:\n\tLOCAL LOCAL echo b > b\n",
    "exports": (
        'VAR0=0\nVAR1=1\nexport VAR1\nexport Q="a b"\nout.0:\n\techo \\$VAR0 > out.0\n'
        "out.1:\n\techo $VAR1 > out.1\nout.2:\nVAR1=2\n\techo $VAR1 > out.2\nVAR1=3\n"
        "out.3:\n\techo \\$ > out.3\nout.4:\n\techo \\\\\\$ > out.4\n"
    ),
    "categories": (
        ".MAKEFLOW CATEGORY one\nout_1:\n    echo \\${CATEGORY} > out_1\n"
        ".MAKEFLOW CATEGORY two\nCORES=2\nout_2a:\n    echo ${CATEGORY} > out_2a\n"
        "out_2b:\nMEMORY=100\n    echo \\${CATEGORY} > out_2b\nCATEGORY=three\nout_3:\n\techo\n"
    ),
    "substituted lists": "F=a b\nN=3\n$(F) x.$(N): in\n\ttouch a b x.3\n",
    "at sign": "@X=at\nout:\n\techo $(X) > out\n",
}

ACCEPTED = {
    **RUNNABLE,
    "directives": (
        ".MAKEFLOW CATEGORY merge\n.SIZE in 51274\n.MAKEFLOW CORES 1\n.MAKEFLOW MEMORY 50\n"
        ".MAKEFLOW DISK 100\nout: in\n\tcat in > out\n.MAKEFLOW CATEGORY analysis\n"
        ".MAKEFLOW MODE MAX_THROUGHPUT\nb: out\n\tcp out b\n"
    ),
    "empty sides": "x:\n\ttouch x\n: /bin/ls\n\tls\n",
    "renaming": "out->o: in->i\n\tcp i o\n",
    "inputs and outputs": 'MAKEFLOW_INPUTS=in\nMAKEFLOW_OUTPUTS="out"\nout: in\n\tcp in out\n',
}

REJECTED = {
    "no name": "VAR=cool\n=bad\noutput:\n\ttouch output\n",
    "no command": "a: b\n",
    "header after header": "a:\nb:\n\ttouch b\n",
    "two commands": "a:\n\techo 1\n\techo 2\n",
    "command first": "\techo 1\n",
    "unknown keyword": "include x.mf\n",
    "undefined": "a:\n\techo $(UNDEFINED_IN_TEST)\n",
    "dollar dollar": "a:\n\techo $$\n",
    "unclosed quote": 'a: "b\n\tx\n',
    "unclosed paren": "a:\n\techo $(X\n",
    "bad number": ".MAKEFLOW CORES many\na:\n\tx\n",
    "unsupported directive": ".MAKEFLOW SIZE 1\na:\n\tx\n",
    "unknown directive": ".MARKER x\na:\n\tx\n",
    "duplicate target": "a:\n\tx\na:\n\ty\n",
    "leading dash": "a: -b\n\tx\n",
    "category quirk": "CATEGORY=a\nX=1\nCATEGORY=b\nt:\n\techo $(X)\n",
}


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed")


_WORD = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)', re.DOTALL)


def _shell_words(line: str) -> list[str]:
    """Words of a dry-run line: bare, or double-quoted with backslash before \\\\ " $ and `."""
    words = []
    for quoted, bare in _WORD.findall(line):
        words.append(re.sub(r'\\([\\"$`])', r"\1", quoted) if not bare else bare)
    return words


def _reference_rules(tmp_path: Path, text: str) -> list[tuple[str, dict[str, str]]]:
    """(command, environment) of every rule, from the reference's dry-run script."""
    dag = tmp_path / "wf.mf"
    dag.write_text(text)
    for name in ("in", "i"):
        (tmp_path / name).write_text("x\n")
    subprocess.run(
        ["makeflow", "-T", "dryrun", "wf.mf"],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        check=True,
    )
    rules = []
    for line in (tmp_path / "wf.mf.sh").read_text().splitlines():
        if not line.startswith("env "):
            continue
        words = _shell_words(line)
        sh = words.index("sh")
        env = dict(w.split("=", 1) for w in words[1:sh])
        rules.append((words[sh + 2], env))
    return rules


@pytest.mark.parametrize("name", sorted(RUNNABLE))
def test_commands_and_environments_match_the_reference(tmp_path, name):
    _need("makeflow")
    reference = _reference_rules(tmp_path, RUNNABLE[name])
    wf = parse_file(str(tmp_path / "wf.mf"), environ=os.environ, notice=lambda m: None)
    ours = [(r.command, dict(r.environment)) for r in wf.rules]
    assert sorted(c for c, _ in ours) == sorted(c for c, _ in reference)
    by_command = {c: env for c, env in reference}
    for command, env in ours:
        ref_env = by_command[command]
        assert {k: v for k, v in ref_env.items() if k not in ENGINE_DEFAULTS} == {
            k: v for k, v in env.items() if k not in ENGINE_DEFAULTS
        }


def _reference_accepts(tmp_path: Path, text: str) -> bool:
    (tmp_path / "wf.mf").write_text(text)
    done = subprocess.run(
        ["makeflow_analyze", "-k", "wf.mf"], cwd=tmp_path, capture_output=True, timeout=60
    )
    return done.returncode == 0 and b"Syntax OK" in done.stdout


def _treadle_accepts(path: Path) -> bool:
    try:
        wf = parse_file(str(path), environ={}, notice=lambda m: None)
    except ParseError:
        return False
    return find_cycle(wf) is None


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_reference_and_treadle_both_accept(tmp_path, name):
    _need("makeflow_analyze")
    assert _reference_accepts(tmp_path, ACCEPTED[name])
    assert _treadle_accepts(tmp_path / "wf.mf")


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_reference_and_treadle_both_reject(tmp_path, name):
    _need("makeflow_analyze")
    assert not _reference_accepts(tmp_path, REJECTED[name])
    assert not _treadle_accepts(tmp_path / "wf.mf")


# Pieces for generated workflows: values, names and command words that exercise
# quoting, escapes, substitution and blank handling together.
_VALUES = ["x", "a b", '"q r"', "'s  t'", "$(A)", "1", "", "  y  ", "\\$z", "p\\ q", '"$(A) w"']
_NAMES = ["o1", "o2", "'n m'", '"$(A)"', "$(F)", "x.$(N)", "a\\ b", "d-e"]
_WORDS = [
    "echo", "LOCAL echo", "$(A)", "'$(A)  k'", '"$(A)  k"', "\\$HOME", "a\\ b", "<", ">", "x",
    "#c", "\\\\", '"\\t"', "$(F)", "${N}", "$N", "  ", "\t",
]  # fmt: skip


def _generated(rng: random.Random) -> str:
    lines = ["A=base", "F=f1 f2", "N=7"]
    used: set[str] = set()
    for i in range(rng.randint(1, 4)):
        if rng.random() < 0.5:
            op = rng.choice(["=", " = ", "+=", " += "])
            lines.append(rng.choice(["A", "B", "N"]) + op + rng.choice(_VALUES))
        targets = [t for t in rng.sample(_NAMES, rng.randint(1, 2)) if t not in used] or [f"t{i}"]
        used.update(targets)
        lines.append(" ".join(targets) + ":")
        if rng.random() < 0.3:
            lines.append(rng.choice(["A", "B"]) + rng.choice(["=", "+="]) + rng.choice(_VALUES))
        lines.append("\t" + " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 5))))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("seed", range(30))
def test_generated_workflows_read_as_the_reference_reads_them(tmp_path, seed):
    _need("makeflow")
    text = _generated(random.Random(seed))
    (tmp_path / "wf.mf").write_text(text)
    if not _reference_accepts(tmp_path, text):
        assert not _treadle_accepts(tmp_path / "wf.mf"), text
        return
    reference = _reference_rules(tmp_path, text)
    wf = parse_file(str(tmp_path / "wf.mf"), environ=os.environ, notice=lambda m: None)
    assert sorted(r.command for r in wf.rules) == sorted(c for c, _ in reference), text
