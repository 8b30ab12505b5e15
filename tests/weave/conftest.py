"""Fixtures for the Weaver tests: the example tree with its data, and real subprocesses.

Every compile and every run here is a real ``treadle weave`` / ``treadle run`` process
started with this interpreter, in a copy of ``examples/weave`` under ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests._examples import copy_tracked

from treadle.flow.model import Rule, Workflow
from treadle.flow.parser import parse_file

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "weave"
BIN = Path(sys.executable).parent


def environment() -> dict[str, str]:
    """This interpreter's bin directory first on PATH, so DAG rules find `treadle`."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return env


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def treadle(*args: str, cwd: Path, check: bool = True, timeout: float = 300) -> Result:
    """Run ``treadle ARGS`` with this interpreter; fail the test with its output if asked."""
    p = subprocess.run([sys.executable, "-m", "treadle", *args], cwd=cwd, env=environment(),
                       capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        pytest.fail(f"treadle {' '.join(args)} exited {p.returncode}\n"
                    f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return Result(p.returncode, p.stdout, p.stderr)


@dataclass
class Sandbox:
    """A compiled sandbox and helpers to read it."""

    path: Path

    @property
    def manifest(self) -> dict:
        return json.loads((self.path / "weave.json").read_text())

    def dag(self, name: str = "Makeflow") -> str:
        return (self.path / name).read_text()

    def workflow(self, name: str = "Makeflow") -> Workflow:
        """A Makeflow DAG of the sandbox, read by the engine's own parser."""
        return parse_file(str(self.path / name), environ=environment())

    def rules(self, name: str = "Makeflow") -> list[Rule]:
        return self.workflow(name).rules

    def run(self, *engine_args: str, dag: str = "Makeflow") -> Result:
        if os.environ.get("WEAVE_TEST_ENGINE") == "makeflow":  # differential runs by hand
            p = subprocess.run(["makeflow", "-T", "local", *engine_args, dag], cwd=self.path,
                               env=environment(), capture_output=True, text=True)
            assert p.returncode == 0, p.stdout + p.stderr
            return Result(p.returncode, p.stdout, p.stderr)
        return treadle("run", *engine_args, dag, cwd=self.path)

    def text(self, name: str) -> str:
        return (self.path / name).read_text()


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    """A copy of examples/weave with its data written by make_data.py."""
    root = tmp_path / "ex"
    copy_tracked(EXAMPLES, root)
    subprocess.run([sys.executable, str(root / "make_data.py"), str(root)], check=True)
    return root


def weave(cwd: Path, *args: str, check: bool = True) -> tuple[Sandbox, Result]:
    """Compile with ``treadle weave ARGS`` (the sandbox is the default, or -o)."""
    result = treadle("weave", *args, cwd=cwd, check=check)
    out = None
    argv = list(args)
    for flag in ("-o", "--output", "-O"):
        if flag in argv:
            out = cwd / argv[argv.index(flag) + 1]
    if out is None:
        script = next(a for a in argv if a.endswith(".py"))
        out = cwd / (Path(script).stem + ".weave")
    return Sandbox(out), result


class Tools:
    """The helpers above, handed to tests as the ``tw`` fixture."""

    weave = staticmethod(weave)
    treadle = staticmethod(treadle)
    environment = staticmethod(environment)
    Sandbox = Sandbox


@pytest.fixture
def tw() -> type[Tools]:
    return Tools
