"""``treadle run -T slurm`` end to end on the test cluster: the same results as ``-T local``.

Every run here is a real ``treadle run`` process against the one-node cluster
of ci/slurm-up.sh. Each test's jobs carry the tag of its own log, and the
``cancel_runs`` fixture cancels them by that name at teardown, so tests never
touch other people's jobs. The helpers at the top are shared by the other
``test_slurm_*`` modules.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

FAST = ("--poll-min", "0.5", "--poll-max", "4")  # quick reactions, so the tests stay short


def treadle(*args: str, cwd: Path, timeout: float = 180, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
    """``treadle run ARGS`` as a user types it, in ``cwd``."""
    return subprocess.run([sys.executable, "-m", "treadle", "run", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def start(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``treadle run ARGS`` in the background (for tests that signal the engine)."""
    return subprocess.Popen([sys.executable, "-m", "treadle", "run", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def tag_of(log: Path) -> str | None:
    """The run's tag, from the log's ``# BATCH`` record (None before the run wrote it)."""
    try:
        text = log.read_text()
    except FileNotFoundError:
        return None
    found = re.search(r"^# BATCH \d+ \w+ ([0-9a-f]{8})$", text, re.M)
    return found[1] if found else None


def job_records(log: Path) -> list[tuple[int, str]]:
    """``(handle, native)`` of every ``# JOB`` record, in order."""
    return [(int(m[1]), m[2]) for m in re.finditer(r"^# JOB \d+ (\d+) (\S+)$", log.read_text(), re.M)]


def final_states(log: Path) -> dict[int, int]:
    """Rule id -> its last logged state (0 waiting, 1 running, 2 complete, 3 failed, 4 aborted)."""
    states: dict[int, int] = {}
    for line in log.read_text().splitlines():
        if line and not line.startswith("#"):
            fields = line.split()
            states[int(fields[1])] = int(fields[2])
    return states


def queue(tag: str) -> dict[str, str]:
    """Native id -> state of the run's jobs that Slurm still lists as queued or running."""
    out = subprocess.run(["squeue", "--me", "-h", "-r", "-n", f"treadle-{tag}", "-o", "%i %T"],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def counting_path(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose Slurm commands append their name to a file, then run the real command.

    Counts what a run really asks of Slurm, through the real programs.
    """
    shims = tmp_path / "shims"
    shims.mkdir()
    calls = tmp_path / "calls.txt"
    for name in ("sbatch", "squeue", "sacct", "scancel", "scontrol"):
        real = subprocess.run(["sh", "-c", f"command -v {name}"], capture_output=True, text=True).stdout.strip()
        shim = shims / name
        shim.write_text(f"#!/bin/sh\necho {name} >> {calls}\nexec {real} \"$@\"\n")
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, PATH=f"{shims}:{os.environ['PATH']}")
    return env, calls


def calls_of(calls: Path, name: str) -> int:
    return calls.read_text().split().count(name) if calls.exists() else 0


@pytest.fixture
def cancel_runs(tmp_path: Path) -> Iterator[None]:
    """At teardown, cancel the jobs of every run whose log is under ``tmp_path`` (by its own name only)."""
    yield
    for log in tmp_path.rglob("*.makeflowlog"):
        tag = tag_of(log)
        if tag is not None:
            subprocess.run(["scancel", "--me", "-n", f"treadle-{tag}"], capture_output=True)


# --- case 1: a round trip that ends as -T local's does --------------------------------------------

ROUND_TRIP = r"""MSG=two  spaces "double" 'single' and a \ back
export MSG

{plain}
exit3.txt:
	echo failing; echo why >&2; exit 3

missing.txt:
	echo this rule forgets its output

env.txt:
	printenv MSG > env.txt

opts.txt:
	@BATCH_OPTIONS=--time=5
	echo "rule options" > opts.txt

local.txt:
	LOCAL echo "ran here" > local.txt

stderr.txt: wf.mf
	wc -l < wf.mf > stderr.txt; echo to-stderr >&2
"""


def _round_trip_workflow(directory: Path) -> Path:
    plain = "\n".join(f"out{i}.txt:\n\techo {i} > out{i}.txt\n" for i in range(14))
    directory.mkdir()
    wf = directory / "wf.mf"
    wf.write_text(ROUND_TRIP.format(plain=plain))
    return wf


def _results(directory: Path) -> dict[str, str]:
    """Every output and every kept rule log, by name: what a user looks at after the run."""
    found = {}
    for path in sorted(directory.glob("*.txt")) + sorted((directory / ".wf.mf.logs").glob("*")):
        found[str(path.relative_to(directory))] = path.read_text()
    return found


def test_twenty_rules_end_as_they_do_locally(tmp_path: Path, cancel_runs: None) -> None:
    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"
    _round_trip_workflow(local_dir)
    _round_trip_workflow(slurm_dir)
    local = treadle("-j", "20", "--keep-logs", "wf.mf", cwd=local_dir)
    remote = treadle("-T", "slurm", "-J", "20", "--keep-logs", *FAST, "wf.mf", cwd=slurm_dir)
    assert local.returncode == remote.returncode == 1, remote.stderr
    assert _results(slurm_dir) == _results(local_dir)
    exported = (slurm_dir / "env.txt").read_text()
    assert "two  spaces" in exported and '"double"' in exported and "'single'" in exported
    assert final_states(slurm_dir / "wf.mf.makeflowlog") == final_states(local_dir / "wf.mf.makeflowlog")
    for line in ("failed with exit code 3", "did not create file missing.txt"):
        assert line in remote.stderr and line in local.stderr
    # The failure names the rule, the Slurm job and the rule's kept logs.
    failure = next(line for line in remote.stderr.splitlines() if "exit code 3" in line)
    assert re.search(r"rule wf\.mf:\d+, job \d+(_\d+)? on \S+", failure), failure
    assert ".wf.mf.logs/" in remote.stderr and "why" in remote.stderr
    # Scripts and status files stay in the batch directory; the wrapper's logs of good jobs go.
    batch = slurm_dir / "wf.mf.batch"
    assert (batch / "wrapper.sh").exists() and len(list((batch / "status" / "seen").glob("*.json"))) == 19
    # --keep-batch-logs failed (the default): only the job that failed keeps Slurm's log of it.
    assert len(list((batch / "logs").iterdir())) == 1
    assert queue(tag_of(slurm_dir / "wf.mf.makeflowlog") or "") == {}


# --- -B and BATCH_OPTIONS ---------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "words"), [
    ("--output=mine.log", "--output"),
    ("-J name", "-J"),
    ("--array=0-3", "--array"),
    ("--time='10", "cannot split"),
])
def test_a_refused_global_option_is_one_line_before_anything_is_submitted(tmp_path: Path, options: str,
                                                                         words: str) -> None:
    (tmp_path / "wf.mf").write_text("a.txt:\n\techo a > a.txt\n")
    done = treadle("-T", "slurm", "-B", options, "wf.mf", cwd=tmp_path)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and words in errors[0] and "Traceback" not in done.stderr, done.stderr
    log = tmp_path / "wf.mf.makeflowlog"
    assert not log.exists() or job_records(log) == []
    assert not list(tmp_path.glob("wf.mf.batch/jobs/*.sh"))


def test_the_environment_s_batch_options_are_checked_too(tmp_path: Path) -> None:
    (tmp_path / "wf.mf").write_text("a.txt:\n\techo a > a.txt\n")
    done = treadle("-T", "slurm", "wf.mf", cwd=tmp_path, env=dict(os.environ, BATCH_OPTIONS="--wrap=x"))
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(errors) == 1 and "--wrap" in errors[0], done.stderr


def test_a_rule_s_refused_options_fail_that_rule_once_whatever_r_says(tmp_path: Path, cancel_runs: None) -> None:
    (tmp_path / "wf.mf").write_text("bad.txt:\n\t@BATCH_OPTIONS=--job-name=mine\n\techo x > bad.txt\n\n"
                                    "good.txt:\n\techo y > good.txt\n")
    done = treadle("-T", "slurm", "-r", "3", *FAST, "wf.mf", cwd=tmp_path)
    assert done.returncode == 1
    assert "--job-name" in done.stderr and "(1 attempt)" in done.stderr, done.stderr
    assert (tmp_path / "good.txt").read_text() == "y\n" and not (tmp_path / "bad.txt").exists()


def test_a_rule_s_options_replace_the_global_ones(tmp_path: Path, cancel_runs: None) -> None:
    """-B asks for a partition that does not exist; the rule that names the real one still runs."""
    (tmp_path / "wf.mf").write_text("a.txt:\n\t@BATCH_OPTIONS=--partition=debug\n\techo a > a.txt\n")
    done = treadle("-T", "slurm", "-B", "--partition=nope", *FAST, "wf.mf", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a.txt").read_text() == "a\n"


@pytest.mark.parametrize(("keep", "kept"), [("all", 2), ("none", 0)])
def test_keep_batch_logs_says_which_of_slurm_s_logs_stay(tmp_path: Path, cancel_runs: None, keep: str,
                                                        kept: int) -> None:
    (tmp_path / "wf.mf").write_text("good.txt:\n\techo ok > good.txt\n\nbad.txt:\n\texit 1\n")
    env, calls = counting_path(tmp_path)
    done = treadle("-T", "slurm", "--keep-batch-logs", keep, "--slurm-array", "off", *FAST, "wf.mf", cwd=tmp_path,
                   env=env)
    assert done.returncode == 1
    assert len(list((tmp_path / "wf.mf.batch" / "logs").iterdir())) == kept
    assert calls_of(calls, "sbatch") == 2  # no arrays: one job per rule
    assert ("batch log" in done.stderr) == (keep == "all")
