"""``treadle run -b DIR``: a bundle of the workflow and its inputs runs unchanged in a fresh directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

WORKFLOW = """\
out.txt: data/in.txt tool.sh sub
\t./tool.sh data/in.txt sub/a > out.txt
final.txt: out.txt
\tcat out.txt > final.txt
"""


def _treadle(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "treadle", "run", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def _project(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "sub").mkdir()
    (root / "data" / "in.txt").write_text("hi\n")
    (root / "sub" / "a").write_text("x\n")
    (root / "tool.sh").write_text('#!/bin/sh\ncat "$@"\n')
    (root / "tool.sh").chmod(0o755)
    (root / "wf.mf").write_text(WORKFLOW)
    return root


def test_a_bundle_runs_unchanged_in_a_fresh_directory(tmp_path: Path) -> None:
    src = _project(tmp_path / "src")
    made = _treadle("-b", "bundle", "wf.mf", cwd=src)
    assert made.returncode == 0, made.stderr
    assert not (src / "final.txt").exists(), "-b runs nothing"
    fresh = tmp_path / "elsewhere"
    shutil.copytree(src / "bundle", fresh)
    assert sorted(p.relative_to(fresh).as_posix() for p in fresh.rglob("*") if p.is_file()) == [
        "data/in.txt", "sub/a", "tool.sh", "wf.mf"]
    assert _treadle("wf.mf", cwd=fresh).returncode == 0
    assert _treadle("wf.mf", cwd=src).returncode == 0
    assert (fresh / "final.txt").read_text() == (src / "final.txt").read_text() == "hi\nx\n"


def test_the_reference_bundle_holds_the_same_workflow(tmp_path: Path) -> None:
    if shutil.which("makeflow_analyze") is None:
        return
    src = _project(tmp_path / "src")
    subprocess.run(["makeflow_analyze", "-b", str(src / "ref"), "wf.mf"], cwd=src, capture_output=True,
                   check=True, timeout=60)
    assert _treadle("-b", "ours", "wf.mf", cwd=src).returncode == 0
    # the reference writes the workflow (re-emitted) but, in cctools 9.9, copies no inputs; ours does
    assert (src / "ref" / "wf.mf").exists() and (src / "ours" / "wf.mf").read_text() == WORKFLOW
    assert (src / "ours" / "data" / "in.txt").exists()


def test_a_name_outside_the_workflow_directory_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    src = _project(tmp_path / "src")
    (tmp_path / "outside.txt").write_text("o\n")
    (src / "wf.mf").write_text("r.txt: ../outside.txt\n\tcat ../outside.txt > r.txt\n")
    r = _treadle("-b", "bundle", "wf.mf", cwd=src)
    assert r.returncode == 1
    assert "cannot copy ../outside.txt: it is outside the workflow's directory" in r.stderr
    assert not (src / "bundle").exists()


def test_a_missing_input_is_refused(tmp_path: Path) -> None:
    src = _project(tmp_path / "src")
    (src / "data" / "in.txt").unlink()
    r = _treadle("-b", "bundle", "wf.mf", cwd=src)
    assert r.returncode == 1 and "cannot copy data/in.txt: no such file or directory" in r.stderr
