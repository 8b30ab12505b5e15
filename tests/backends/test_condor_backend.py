"""-T condor refuses what it cannot do before anything is submitted: one line, exit status 1.

HTCondor's daemons cannot run here (docs/batch.md, 'HTCondor'); what runs a job
is the shared batch shell that the Slurm tests drive end to end, and the
submit descriptions are checked against HTCondor's own bindings in
tests/batch/test_condor_render.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def treadle_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "treadle", "run", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("treadle: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize(("rule", "words"), [
    ("a.txt: in,put\n\tcat in,put > a.txt\n", "wf.mf:3: input 'in,put' has a comma"),
    ("sub/a.txt:\n\tmkdir -p sub && touch sub/a.txt\n", "wf.mf:3: output 'sub/a.txt' is not in the job's top"),
    ("a.txt: in->x\n\tcat x > a.txt\n", "wf.mf:3: input 'in->x' has a remote name"),
])
def test_a_file_htcondor_cannot_move_stops_the_run_naming_the_rule(tmp_path: Path, rule: str, words: str) -> None:
    (tmp_path / "in,put").write_text("x")
    (tmp_path / "in").write_text("x")
    (tmp_path / "wf.mf").write_text("ok.txt:\n\ttouch ok.txt\n" + rule)
    line = error_line(treadle_run(tmp_path, "-T", "condor", "wf.mf"))
    assert words in line
    assert not (tmp_path / "wf.mf.batch").exists()  # nothing was written for a job


def test_a_submit_key_treadle_sets_is_refused_in_b(tmp_path: Path) -> None:
    (tmp_path / "wf.mf").write_text("a.txt:\n\ttouch a.txt\n")
    line = error_line(treadle_run(tmp_path, "-T", "condor", "-B", "queue 5", "wf.mf"))
    assert "treadle sets 'queue' itself" in line


def test_a_malformed_b_line_fails_with_htcondors_own_words(tmp_path: Path) -> None:
    pytest.importorskip("htcondor2", reason="HTCondor's bindings (pip install 'treadle[condor]')")
    (tmp_path / "wf.mf").write_text("a.txt:\n\ttouch a.txt\n")
    line = error_line(treadle_run(tmp_path, "-T", "condor", "-B", "request_cpus = (", "wf.mf"))
    assert "HTCondor refuses request_cpus" in line and "ClassAd" in line


@pytest.mark.skipif(shutil.which("condor_submit") is not None, reason="HTCondor is installed here")
def test_without_condor_submit_the_run_says_so_once(tmp_path: Path) -> None:
    (tmp_path / "wf.mf").write_text("a.txt:\n\ttouch a.txt\nb.txt:\n\ttouch b.txt\n")
    line = error_line(treadle_run(tmp_path, "-T", "condor", "wf.mf"))
    assert "condor_submit not found" in line
