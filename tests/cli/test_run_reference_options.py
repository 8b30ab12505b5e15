"""The reference makeflow's remaining options under ``treadle run``: their meaning, or one line saying why not.

Each runs a real ``treadle run`` process, as a user's script would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from treadle.backends.registry import FOREIGN_TYPES
from treadle.cli.run import parse_args
from treadle.flow.run import _inert_options

WORKFLOW = "out.txt: in.txt\n\tcat in.txt > out.txt\n"
FAILING = "out.txt:\n\techo partial > out.txt; exit 3\n"


def treadle_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "treadle", "run", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def workflow(tmp_path: Path) -> Path:
    (tmp_path / "Makeflow").write_text(WORKFLOW)
    (tmp_path / "in.txt").write_text("data\n")
    return tmp_path


INERT = [
    (("-m", "someone@example.org"), "-m/--email"),
    (("--email=someone@example.org",), "-m/--email"),
    (("-P", "7"), "-P/--priority"),
    (("--verbose-jobnames",), "--verbose-jobnames"),
    (("--working-dir", "/scratch/run"), "--working-dir"),
    (("--disable-heartbeat",), "--disable-heartbeat"),
    (("--batch-mem-type", "h_vmem"), "--batch-mem-type"),
    (("-S", "30"), "-S/--submission-timeout"),
    (("--safe-submit-mode",), "--safe-submit-mode"),
    (("--ignore-memory-spec",), "--ignore-memory-spec"),
]


@pytest.mark.parametrize(("args", "name"), INERT, ids=[a[0] for a, _ in INERT])
def test_an_option_without_effect_says_so_once_and_the_run_goes_on(workflow: Path, args: tuple[str, ...],
                                                                   name: str) -> None:
    """Given twice, still one line; the workflow runs as without the option."""
    done = treadle_run(*args, *args, cwd=workflow)
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if f"{name} has no effect" in line]
    assert len(notes) == 1, done.stderr
    assert ": " in notes[0].split("has no effect", 1)[1]  # and it says why
    assert (workflow / "out.txt").read_text() == "data\n"


def test_the_batch_options_say_nothing_where_a_backend_reads_them() -> None:
    """-S is read by slurm and condor, --safe-submit-mode and --ignore-memory-spec by slurm."""
    slurm = parse_args(["-T", "slurm", "-S", "30", "--safe-submit-mode", "--ignore-memory-spec"], {})
    assert _inert_options(slurm) == []
    condor = _inert_options(parse_args(["-T", "condor", "-S", "30", "--ignore-memory-spec"], {}))
    assert condor == ["--ignore-memory-spec has no effect with -T condor: only -T slurm sends a memory request"]


def test_skip_file_check_skips_the_start_up_check(workflow: Path) -> None:
    """The reference's meaning: a changed input of a finished rule goes unnoticed, and nothing reruns."""
    assert treadle_run(cwd=workflow).returncode == 0
    (workflow / "in.txt").write_text("changed\n")
    skipped = treadle_run("--skip-file-check", cwd=workflow)
    assert skipped.returncode == 0 and "skipping file checks." in skipped.stdout
    assert (workflow / "out.txt").read_text() == "data\n"
    checked = treadle_run(cwd=workflow)
    assert checked.returncode == 0 and (workflow / "out.txt").read_text() == "changed\n"


@pytest.mark.parametrize("keep", [True, False])
def test_do_not_save_failed_output_removes_a_failed_rules_outputs(tmp_path: Path, keep: bool) -> None:
    (tmp_path / "Makeflow").write_text(FAILING)
    done = treadle_run(*([] if keep else ["--do-not-save-failed-output"]), cwd=tmp_path)
    assert done.returncode == 1
    assert (tmp_path / "makeflow.failed.0" / "out.txt").exists() is keep
    assert not (tmp_path / "out.txt").exists()


@pytest.mark.parametrize("kind", ["sge", "pbs", "torque", "lsf", "moab", "k8s", "amazon", "lambda", "mesos"])
def test_a_batch_type_treadle_lacks_is_one_line_on_how_to_get_workers_there(workflow: Path, kind: str) -> None:
    assert kind in FOREIGN_TYPES
    done = treadle_run("-T", kind, cwd=workflow)
    assert done.returncode == 1 and done.stdout == ""
    line = done.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert f"-T {kind} is not a treadle batch type" in line
    assert "local, wq, slurm, condor, dryrun" in line and "treadle worker" in line and "treadle factory" in line
    assert not (workflow / "Makeflow.makeflowlog").exists()
