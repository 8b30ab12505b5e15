"""`treadle run -T wq` when a rule's task cannot travel or its output cannot be written (issue 9).

Both used to hang the workflow: a rule with an output path too long for a protocol line
stayed RUNNING with nothing sent, and a full disk while retrieving an output dropped
the healthy worker and re-ran the rule forever. Now that rule fails with the reason,
the other rules complete, and the run ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests._wait import wait_for


def _run_with_a_worker(tmp_path: Path, makeflow: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``treadle run -T wq`` on ``makeflow`` with one treadle worker; both stopped at the end."""
    (tmp_path / "Makeflow").write_text(makeflow)
    port = tmp_path / "port"
    run = subprocess.Popen([sys.executable, "-m", "treadle", "run", "-T", "wq", "-p", "0", "-Z", str(port), "Makeflow"],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    worker = None
    try:

        def port_written() -> str:
            assert run.poll() is None, run.communicate()
            return port.read_text().strip() if port.exists() else ""

        number = wait_for(port_written, 20, "the port file")
        worker = subprocess.Popen([sys.executable, "-m", "treadle", "worker", "-t", "30", "127.0.0.1",
                                   number], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            out, err = run.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail("the workflow hung")
        return subprocess.CompletedProcess(run.args, run.returncode, out, err)
    finally:
        for p in (run, worker):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_an_output_path_too_long_for_the_protocol_fails_its_rule_not_the_workflow(tmp_path):
    """URL-encoding triples '~': a valid 1400-byte path makes a 4200-byte `outfile` line."""
    folder = "/".join(["~" * 200] * 7)
    long = f"{folder}/out.txt"
    r = _run_with_a_worker(tmp_path, f"{long}:\n\tmkdir -p {folder} && echo hi > {long}\n\n"
                                     "ok.txt:\n\techo ok > ok.txt\n")
    assert r.returncode == 1
    assert "too long for one protocol line" in r.stdout + r.stderr
    assert (tmp_path / "ok.txt").read_text() == "ok\n"  # the rule beside it ran


@pytest.fixture
def full_dir(tmp_path: Path, small_disk):
    """A directory on a 1 MiB tmpfs: writing more than that fails with ENOSPC, for real."""
    return small_disk(tmp_path / "full", "1m")


def test_a_full_disk_while_retrieving_an_output_fails_the_rule_with_the_reason(tmp_path, full_dir):
    r = _run_with_a_worker(tmp_path, "full/big.bin:\n\tmkdir -p full && head -c 2097152 /dev/zero > full/big.bin\n\n"
                                     "ok.txt:\n\techo ok > ok.txt\n")
    text = r.stdout + r.stderr
    assert r.returncode == 1, text
    assert "No space left on device" in text and str(full_dir / "big.bin") in text
    assert "OUTPUT_TRANSFER_ERROR" in text
    assert (tmp_path / "ok.txt").read_text() == "ok\n"
