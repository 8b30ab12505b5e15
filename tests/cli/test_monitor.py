"""``treadle monitor``: reads logs while they grow; -H exits once every workflow finished."""

from __future__ import annotations

import subprocess
import sys
import time

from treadle.cli.monitor import LogView


def test_monitor_h_terminates_when_the_workflow_finishes(tmp_path):
    (tmp_path / "wf.mf").write_text("".join(f"o{i}:\n\tsleep 0.2; touch o{i}\n" for i in range(4)))
    run = subprocess.Popen([sys.executable, "-m", "treadle", "run", "-j", "1", "-l", "mon.log", "wf.mf"],
                           cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if (tmp_path / "mon.log").exists():
                break
            time.sleep(0.05)
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
