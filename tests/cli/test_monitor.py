"""``treadle monitor``: reads logs while they grow; -H exits once every workflow finished."""

from __future__ import annotations

import subprocess
import sys

from tests._wait import wait_for

from treadle.cli.monitor import LogView


def test_monitor_h_terminates_when_the_workflow_finishes(tmp_path):
    (tmp_path / "wf.mf").write_text("".join(f"o{i}:\n\tsleep 0.2; touch o{i}\n" for i in range(4)))
    run = subprocess.Popen([sys.executable, "-m", "treadle", "run", "-j", "1", "-l", "mon.log", "wf.mf"],
                           cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for((tmp_path / "mon.log").exists, 5, "the workflow's log")
        mon = subprocess.run([sys.executable, "-m", "treadle", "monitor", "-t", "0.2", "-H", "mon.log"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
    finally:
        run.wait(timeout=60)
    assert mon.returncode == 0
    assert "STATUS" in mon.stdout


def test_log_view_counts_and_status(tmp_path):
    log = tmp_path / "l"
    log.write_text("# STARTED 1000000\n2000000 0 1 5 1 1 0 0 0 2\n")
    v = LogView(str(log))
    v.poll()
    assert v.status == "running" and v.counts == [1, 1, 0, 0, 0] and v.total == 2
    with log.open("a") as f:
        f.write("3000000 0 2 5 1 0 1 0 0 2\n4000000 1 2 6 0 0 2 0 0 2\n# COMPLET")
    v.poll()
    assert v.counts[2] == 2 and not v.finished
    with log.open("a") as f:
        f.write("ED 5000000\n")
    v.poll()
    assert v.finished and v.status == "completed" and v.progress == 1.0
    assert "completed" in v.row(10.0)
    with log.open("a") as f:
        f.write("# STARTED 6000000\n")
    v.poll()
    assert not v.finished


def _start_run(tmp_path, log: str) -> subprocess.Popen:
    (tmp_path / "wf.mf").write_text("".join(f"o{i}:\n\tsleep 0.2; touch o{i}\n" for i in range(4)))
    return subprocess.Popen([sys.executable, "-m", "treadle", "run", "-j", "1", "-l", log, "wf.mf"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_monitor_exits_by_itself_when_the_run_ends(tmp_path):
    """The README's tour command, `treadle monitor LOG` without -H, must not hang."""
    run = _start_run(tmp_path, "tour.log")
    try:
        mon = subprocess.run([sys.executable, "-m", "treadle", "monitor", "-t", "0.1", "tour.log"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
    finally:
        run.wait(timeout=60)
    assert mon.returncode == 0, mon.stderr
    assert mon.stdout.rstrip().splitlines()[-1].split()[:2] == ["tour.log", "completed"]


def test_monitor_of_a_finished_log_prints_once_and_exits(tmp_path):
    run = _start_run(tmp_path, "done.log")
    assert run.wait(timeout=60) == 0
    mon = subprocess.run([sys.executable, "-m", "treadle", "monitor", "done.log"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert mon.returncode == 0
    assert mon.stdout.count("STATUS") == 1 and "completed" in mon.stdout


def test_monitor_warns_about_a_missing_log_then_follows_it(tmp_path):
    mon = subprocess.Popen([sys.executable, "-m", "treadle", "monitor", "-H", "-t", "0.1", "later.log"],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert mon.stdout is not None
        assert "STATUS" in mon.stdout.readline()  # the first table: the log was looked for
        assert _start_run(tmp_path, "later.log").wait(timeout=60) == 0
        out, err = mon.communicate(timeout=60)
    finally:
        if mon.poll() is None:
            mon.kill()
            mon.wait()
    assert mon.returncode == 0
    assert err.splitlines() == ["treadle monitor: warning: later.log does not exist (yet); waiting for it"]
