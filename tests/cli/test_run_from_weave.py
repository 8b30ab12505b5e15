"""``treadle weave --run`` runs the compiled DAG through ``run_workflow`` in its own process."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from treadle.cli import main


def test_weave_run_uses_run_workflow_not_a_second_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("12345")
    (tmp_path / "map.py").write_text("Map('wc -c < {IN} > {OUT}', Glob('data/*.txt'), '{basename_woext}.size')\n")
    monkeypatch.chdir(tmp_path)  # --run changes to the sandbox; this puts us back afterwards
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # --run puts this treadle first; restored afterwards

    def no_engine_process(*args: object, **kwargs: object) -> int:
        raise AssertionError(f"--run started a process: {args}")

    monkeypatch.setattr(subprocess, "call", no_engine_process)
    with pytest.raises(SystemExit) as ended:
        main(["weave", "--run", "-e", "--skip-file-check", "map.py"])
    assert ended.value.code == 0
    sizes = list((tmp_path / "map.weave").rglob("a.size"))
    assert [p.read_text().strip() for p in sizes] == ["5"]


def test_weave_run_with_a_failing_rule_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("x")
    (tmp_path / "map.py").write_text("Map('false {IN} {OUT}', Glob('data/*.txt'), '{basename_woext}.out')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(SystemExit) as ended:
        main(["weave", "--run", "map.py"])
    assert ended.value.code == 1
