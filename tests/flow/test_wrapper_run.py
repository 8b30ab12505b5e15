"""--wrapper, --wrapper-input and --wrapper-output end to end: local, Work Queue, and against the reference."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests._wq import run_wq

WORKFLOW = (
    "up.txt: in.txt\n"
    "\ttr a-z A-Z < in.txt > up.txt\n"
    "both.txt: up.txt in.txt\n"
    "\tcat up.txt in.txt > both.txt\n"
)
# Writes marker.<rule id> (a --wrapper-output), then runs the command it was given.
WRAP_SH = '#!/bin/sh\necho "wrapped $1" > "marker.$1"\nshift\nexec /bin/sh -c "$*"\n'
WRAP_ARGS = ("--wrapper", "./wrap.sh %% {}", "--wrapper-input", "wrap.sh", "--wrapper-output", "marker.%%")


def _workdir(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    (path / "wf.mf").write_text(WORKFLOW)
    (path / "in.txt").write_text("hello\n")
    (path / "wrap.sh").write_text(WRAP_SH)
    (path / "wrap.sh").chmod(0o755)
    return path


def _run(cwd: Path, *args: str, program: tuple[str, ...] = (sys.executable, "-m", "treadle", "run")):
    return subprocess.run([*program, *args, "wf.mf"], cwd=cwd, capture_output=True, text=True, timeout=120)


def _results(wd: Path) -> dict[str, str]:
    return {n: (wd / n).read_text() for n in ("up.txt", "both.txt", "marker.0", "marker.1")}


def test_local_jobs_run_inside_the_wrapper(tmp_path):
    wd = _workdir(tmp_path / "wf")
    r = _run(wd, "-j", "2", *WRAP_ARGS)
    assert r.returncode == 0, r.stderr
    assert _results(wd) == {"up.txt": "HELLO\n", "both.txt": "HELLO\nhello\n",
                            "marker.0": "wrapped 0\n", "marker.1": "wrapped 1\n"}
    assert "submitting job: tr a-z A-Z < in.txt > up.txt" in r.stdout  # the rule's own command is shown


def test_a_changed_wrapper_redoes_nothing(tmp_path):
    wd = _workdir(tmp_path / "wf")
    assert _run(wd, *WRAP_ARGS).returncode == 0
    r = _run(wd, "--wrapper", "echo other > other.txt; {}")
    assert r.returncode == 0, r.stderr
    assert "submitting job" not in r.stdout and not (wd / "other.txt").exists()


def test_wrappers_nest_in_the_order_given(tmp_path):
    wd = _workdir(tmp_path / "wf")
    (wd / "wf.mf").write_text("x.txt:\n\techo rule >> x.txt\n")
    r = _run(wd, "--wrapper", "echo inner >> x.txt; {}", "--wrapper", "echo outer >> x.txt; {}")
    assert r.returncode == 0, r.stderr
    assert (wd / "x.txt").read_text() == "outer\ninner\nrule\n"


def test_sandbox_ships_wrapper_files_too(tmp_path):
    wd = _workdir(tmp_path / "wf")
    r = _run(wd, "--sandbox", *WRAP_ARGS)
    assert r.returncode == 0, r.stderr
    assert _results(wd)["marker.1"] == "wrapped 1\n"


def test_bad_container_options_are_one_line(tmp_path):
    wd = _workdir(tmp_path / "wf")
    r = _run(wd, "--docker-tar", "x.tar")
    assert r.returncode != 0 and "--docker-tar needs --docker IMAGE" in r.stderr and "Traceback" not in r.stderr
    r = _run(wd, "--docker", "a", "--singularity", "b")
    assert r.returncode != 0 and "cannot be used together" in r.stderr
    r = _run(wd, "--docker", "a", "--docker-cmd", "rkt")
    assert r.returncode != 0 and "unknown docker command 'rkt'" in r.stderr


@pytest.mark.skipif(shutil.which("singularity") or shutil.which("apptainer"), reason="singularity is installed")
def test_missing_singularity_is_one_clear_line(tmp_path):
    wd = _workdir(tmp_path / "wf")
    r = _run(wd, "--singularity", "img.sif")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "neither singularity nor apptainer is on PATH" in r.stderr
    assert not (wd / "up.txt").exists()


@pytest.mark.slow
def test_over_work_queue_wrapper_files_travel_with_the_job(tmp_path):
    wd = _workdir(tmp_path / "wf")
    r = run_wq(tmp_path, WORKFLOW, *WRAP_ARGS)
    assert r.returncode == 0, r.stderr
    assert _results(wd) == {"up.txt": "HELLO\n", "both.txt": "HELLO\nhello\n",
                            "marker.0": "wrapped 0\n", "marker.1": "wrapped 1\n"}


@pytest.mark.reference
@pytest.mark.skipif(shutil.which("makeflow") is None, reason="needs the reference makeflow")
def test_same_files_as_the_reference_makeflow(tmp_path):
    ours, theirs = _workdir(tmp_path / "ours"), _workdir(tmp_path / "theirs")
    assert _run(ours, *WRAP_ARGS).returncode == 0
    r = _run(theirs, *WRAP_ARGS, program=("makeflow",))
    assert r.returncode == 0, r.stderr
    assert _results(ours) == _results(theirs)


def test_wrappers_from_an_argv_file(tmp_path):
    wd = _workdir(tmp_path / "wf")
    (wd / "args.json").write_text('{"wrapper": ["echo inner >> x.txt; {}", "echo outer >> x.txt; {}"],'
                                  ' "MAKEFLOW": "wf.mf"}')
    (wd / "wf.mf").write_text("x.txt:\n\techo rule >> x.txt\n")
    r = subprocess.run([sys.executable, "-m", "treadle", "run", "--argv", "args.json"], cwd=wd,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (wd / "x.txt").read_text() == "outer\ninner\nrule\n"
