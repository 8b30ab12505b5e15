"""``treadle viz -D dot``, compared with ``makeflow_viz`` (spec §2.4)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def treadle(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "treadle", *args], cwd=cwd, capture_output=True, timeout=60
    )


EXPECTED = (
    b"digraph {\n\n"
    b"node [shape=ellipse,color = green,style = unfilled,fixedsize = false];\n"
    b'N0 [label="echo"];\n\n'
    b"node [shape=box,color=blue,style=unfilled,fixedsize=false];\n"
    b'F1 [label = "a"];\n'
    b'F0 [label = "b"];\n\n'
    b"F0 -> N0;\n"
    b"N0 -> F1;\n"
    b"}\n"
)


def test_dot_of_the_reference_test(tmp_path):
    (tmp_path / "test.mf").write_text("a:b\n\techo hello >a\n")
    done = treadle("viz", "-D", "dot", "test.mf", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, EXPECTED)


def test_other_formats_are_refused(tmp_path):
    (tmp_path / "test.mf").write_text("a:b\n\techo hello >a\n")
    done = treadle("viz", "-D", "cyto", "test.mf", cwd=tmp_path)
    assert done.returncode == 1 and b"only dot" in done.stderr


def test_parse_errors(tmp_path):
    (tmp_path / "bad.mf").write_text("a:\n")
    done = treadle("viz", "bad.mf", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == b"bad.mf:1:1: error: Rule does not have a command\n"


def test_jx_workflow(tmp_path):
    (tmp_path / "wf.jx").write_text(
        '{"rules": [{"command": "echo hello >a", "inputs": ["b"], "outputs": ["a"]}]}'
    )
    done = treadle("viz", "--jx", "wf.jx", cwd=tmp_path)
    assert done.stdout == EXPECTED


def test_help_has_an_example(tmp_path):
    done = treadle("viz", "-h", cwd=tmp_path)
    assert done.returncode == 0 and b"treadle viz -D dot" in done.stdout


@pytest.mark.reference
def test_same_bytes_as_makeflow_viz(tmp_path):
    if shutil.which("makeflow_viz") is None:
        pytest.skip("makeflow_viz not installed")
    text = "".join(f"o{i}: i{i % 11} common\n\tprog{i % 3} {i}\n" for i in range(200))
    text += "all: " + " ".join(f"o{i}" for i in range(200)) + "\n\tcat > all\n"
    (tmp_path / "wf.mf").write_text(text)
    ref = subprocess.run(["makeflow_viz", "-D", "dot", "wf.mf"], cwd=tmp_path, capture_output=True)
    assert treadle("viz", "-D", "dot", "wf.mf", cwd=tmp_path).stdout == ref.stdout
