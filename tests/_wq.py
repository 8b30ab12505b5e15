"""The suite's one way to run a workflow through ``treadle run -T wq`` with one treadle worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests._wait import wait_for


def run_wq(tmp_path: Path, workflow: str, *args: str) -> subprocess.CompletedProcess:
    """``treadle run -T wq`` in ``tmp_path/wf`` with one treadle worker; both stopped by pid."""
    wd = tmp_path / "wf"
    wd.mkdir(exist_ok=True)
    (wd / "wf.mf").write_text(workflow)
    port = wd / "port"
    run = subprocess.Popen([sys.executable, "-m", "treadle", "run", "-T", "wq", "-p", "0", "-Z", "port", *args, "wf.mf"],
                           cwd=wd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = None
    try:
        wait_for(lambda: port.exists() and port.read_text().strip() != "", 30, "the manager's port file")
        (tmp_path / "w").mkdir(exist_ok=True)
        worker = subprocess.Popen([sys.executable, "-m", "treadle", "worker", "-t", "30", "-s", str(tmp_path / "w"),
                                   "127.0.0.1", port.read_text().strip()],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out, err = run.communicate(timeout=120)
    finally:
        for p in (run, worker):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    return subprocess.CompletedProcess(run.args, run.returncode, out, err)
