"""``-c`` / ``--clean`` (spec §3.4)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "makeflow"


def treadle(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "treadle", "run", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def setup(tmp_path: Path) -> None:
    for f in ("chain.mf", "input.txt"):
        shutil.copy(EXAMPLES / f, tmp_path)
    assert treadle("chain.mf", cwd=tmp_path).returncode == 0


def names(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir())


def test_clean_all_removes_everything_made_and_the_log(tmp_path):
    setup(tmp_path)
    r = treadle("-c", "chain.mf", cwd=tmp_path)
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert "cleaning filesystem..." in lines and lines[-1] == "nothing left to do."
    assert "starting workflow...." not in lines
    assert {"deleted a.txt", "deleted b.txt", "deleted joined.txt", "deleted chain.mf.makeflowlog"} <= set(lines)
    assert "deleted chain.mf.batchlog" in lines  # said even though local mode never made it
    assert names(tmp_path) == ["chain.mf", "input.txt"]


def test_clean_outputs_and_intermediates(tmp_path):
    setup(tmp_path)
    r = treadle("-coutputs", "chain.mf", cwd=tmp_path)
    assert r.returncode == 0 and "deleted joined.txt" in r.stdout and "deleted a.txt" not in r.stdout
    assert names(tmp_path) == ["a.txt", "b.txt", "chain.mf", "chain.mf.makeflowlog", "input.txt"]
    # the final outputs are made again by the next run
    again = treadle("chain.mf", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("submitting job:") == 1
    r = treadle("--clean=intermediates", "chain.mf", cwd=tmp_path)
    assert names(tmp_path) == ["chain.mf", "chain.mf.makeflowlog", "input.txt", "joined.txt"]
    # cleaned intermediates are like collected garbage: the final output stands
    again = treadle("chain.mf", cwd=tmp_path)
    assert again.returncode == 0 and "submitting job:" not in again.stdout and "warning" not in again.stdout


def test_clean_with_a_missing_input_still_cleans(tmp_path):
    """[F-j]"""
    setup(tmp_path)
    (tmp_path / "input.txt").unlink()
    r = treadle("-c", "chain.mf", cwd=tmp_path)
    assert r.returncode == 0 and names(tmp_path) == ["chain.mf"]


def test_clean_removes_failed_output_directories_known_from_the_log(tmp_path):
    shutil.copy(EXAMPLES / "failing.mf", tmp_path)
    assert treadle("failing.mf", cwd=tmp_path).returncode == 1
    assert (tmp_path / "makeflow.failed.1").is_dir()
    r = treadle("-c", "failing.mf", cwd=tmp_path)
    assert r.returncode == 0 and "deleted makeflow.failed.1" in r.stdout
    assert names(tmp_path) == ["failing.mf"]
