"""runner.py on its own, as a worker runs it: stdlib only, Python 3.8, from an empty directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from treadle.allpairs import runner

from .conftest import make_script


def old_python() -> str | None:
    """The oldest interpreter the runner supports (3.8), on PATH or pyenv's, else None."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [str(p) for p in sorted(root.glob("versions/3.8*/bin/python3.8"))]
    candidates.append(shutil.which("python3.8"))
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 8)":
            return candidate
    return None


PYTHONS = [pytest.param(sys.executable, id="current")]
OLD = old_python()
if OLD:
    PYTHONS.append(pytest.param(OLD, id="python3.8"))


def run_runner(python: str, sandbox: Path, block: dict) -> subprocess.CompletedProcess:
    shutil.copy(runner.__file__, sandbox / "runner.py")
    (sandbox / "block.json").write_text(json.dumps(block))
    env = {"PATH": os.environ["PATH"], "CORES": "2"}
    return subprocess.run([python, "-I", "runner.py", "block.json", "out.tsv"], cwd=sandbox,
                          capture_output=True, text=True, env=env)


@pytest.mark.parametrize("python", PYTHONS)
def test_blocks_in_a_bare_sandbox(python, tmp_path):
    sandbox = tmp_path / "sandbox"
    (sandbox / "A" / "0").mkdir(parents=True)
    (sandbox / "A" / "1").mkdir(parents=True)
    (sandbox / "A" / "0" / "x.bin").write_bytes(b"abcd")
    (sandbox / "A" / "1" / "y.bin").write_bytes(b"abzzz")
    (sandbox / "F").mkdir()
    (sandbox / "F" / "f.py").write_text(
        "from treadle.allpairs import takes_bytes\n@takes_bytes\ndef f(a, b):\n"
        "    return len(a) * 10 + len(b)\n")
    make_script(sandbox / "F" / "g.sh", '#!/bin/sh\ncat "$1" "$2" | wc -c | tr -d " "\n')
    items = [[0, "A/0/x.bin"], [1, "A/1/y.bin"]]
    cases = [
        ({"kind": "builtin", "name": "BITWISE"}, ["0\t0\t0", "0\t1\t3", "1\t1\t0"]),
        ({"kind": "callable", "source": "F/f.py", "name": "f", "takes_bytes": True},
         ["0\t0\t44", "0\t1\t45", "1\t1\t55"]),
        ({"kind": "exec", "executable": "F/g.sh", "args": []}, ["0\t0\t8", "0\t1\t9", "1\t1\t10"]),
    ]
    for spec, want in cases:
        result = run_runner(python, sandbox, {"function": spec, "rows": items, "cols": items,
                                              "symmetric": True})
        assert result.returncode == 0, result.stdout + result.stderr
        assert (sandbox / "out.tsv").read_text().splitlines() == want
        assert json.loads(result.stdout.splitlines()[-1]).keys() == {"calls"}


@pytest.mark.parametrize("python", PYTHONS)
def test_failure_report_and_wavefront_block(python, tmp_path):
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    (sandbox / "a").write_text("1")
    make_script(sandbox / "bad.sh", '#!/bin/sh\necho "it broke" >&2\nexit 5\n')
    result = run_runner(python, sandbox, {"function": {"kind": "exec", "executable": "bad.sh"},
                                          "rows": [[3, "a"]], "cols": [[4, "a"]]})
    assert result.returncode == 1
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["failed"] == [3, 4] and "exit status 5" in report["message"]
    assert "it broke" in report["stderr"]
    (sandbox / "cell.py").write_text("def f(x, y, l, b, d):\n    return int(l) + int(b) + int(d)\n")
    edge = {"0 0": "1", "0 1": "1", "0 2": "1", "1 0": "1", "2 0": "1"}
    result = run_runner(python, sandbox, {"wavefront": True, "cells": [1, 2, 1, 2], "edge": edge,
                                          "function": {"kind": "callable", "source": "cell.py",
                                                       "name": "f"}})
    assert result.returncode == 0, result.stderr
    assert sorted((sandbox / "out.tsv").read_text().splitlines()) == [
        "1 1 3", "1 2 5", "2 1 5", "2 2 13"]
