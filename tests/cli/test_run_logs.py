"""Rules' stdout and stderr (issue 11, item 1) and a full disk (issue 9, defect 8), through ``treadle run``.

Every attempt's streams are kept in ``.<log>.logs/<rule>.<attempt>.out``/``.err``
(one combined ``.out`` over Work Queue), never in the engine's own output; a
failed rule's are linked into ``makeflow.failed.<id>/`` and named in its
``INFO.json``, and the failure summary shows the end of its stderr. A full disk
fails the rule with the reason instead of a traceback.

The markers are printed with ``printf 'A%sB' _`` so that the engine echoing the
command (``submitting job: ...``) never shows the text the rule prints.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests._wq import run_wq

from treadle.backends.logs import LOG_CAP

FAILING = (
    "ok.txt:\n"
    "\tprintf 'OK%sOUT\\n' _; printf 'OK%sERR\\n' _ >&2; echo > ok.txt\n"
    "bad.txt: ok.txt\n"
    "\tprintf 'BAD%sOUT\\n' _; seq 1 15 | sed 's/^/BAD_ERR_/' >&2; exit 3\n"
)
LOGS = ".wf.mf.logs"


def treadle_run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "treadle", "run", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def _journal_states(log: Path, rule: int) -> list[int]:
    """The states a rule went through, from the log's rule records."""
    states = []
    for line in log.read_text().splitlines():
        words = line.split()
        if len(words) == 10 and words[1] == str(rule):
            states.append(int(words[2]))
    return states


def test_a_failed_rule_keeps_its_stdout_and_stderr_out_of_the_engine_output(tmp_path):
    (tmp_path / "wf.mf").write_text(FAILING)
    r = treadle_run("wf.mf", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    engine_output = r.stdout + r.stderr
    for text in ("OK_OUT", "OK_ERR", "BAD_OUT"):
        assert text not in engine_output
    logs = tmp_path / LOGS
    assert (logs / "1.1.out").read_text() == "BAD_OUT\n"
    assert (logs / "1.1.err").read_text() == "".join(f"BAD_ERR_{i}\n" for i in range(1, 16))
    assert not (logs / "0.1.out").exists() and not (logs / "0.1.err").exists()  # it succeeded

    summary = r.stderr[r.stderr.index("workflow failed."):].splitlines()
    assert f"    last lines of stderr (all of it in {LOGS}/1.1.err):" in summary
    shown = [line.strip() for line in summary if line.strip().startswith("BAD_ERR_")]
    assert shown == [f"BAD_ERR_{i}" for i in range(6, 16)]

    failed = tmp_path / "makeflow.failed.1"
    info = json.loads((failed / "INFO.json").read_text())
    assert (info["stdout"], info["stderr"]) == (f"{LOGS}/1.1.out", f"{LOGS}/1.1.err")
    assert info["stderr_in_stdout"] is False and info["log_cap_bytes"] == LOG_CAP
    assert (info["stdout_copy"], info["stderr_copy"]) == ("makeflow.failed.1/INFO.stdout", "makeflow.failed.1/INFO.stderr")
    assert (failed / "INFO.stdout").read_text() == "BAD_OUT\n"
    assert (failed / "INFO.stderr").read_text() == (logs / "1.1.err").read_text()


def test_successful_rules_logs_are_removed_unless_kept(tmp_path):
    (tmp_path / "wf.mf").write_text(FAILING.split("bad.txt")[0])
    r = treadle_run("wf.mf", cwd=tmp_path)
    assert r.returncode == 0 and "OK_OUT" not in r.stdout + r.stderr
    assert not (tmp_path / LOGS).exists()
    r = treadle_run("-c", "wf.mf", cwd=tmp_path)
    r = treadle_run("--keep-logs", "wf.mf", cwd=tmp_path)
    assert r.returncode == 0 and "OK_OUT" not in r.stdout + r.stderr
    assert (tmp_path / LOGS / "0.1.out").read_text() == "OK_OUT\n"
    assert (tmp_path / LOGS / "0.1.err").read_text() == "OK_ERR\n"
    treadle_run("-c", "wf.mf", cwd=tmp_path)
    assert not (tmp_path / LOGS).exists()  # cleaning removes the logs with the log


def test_each_attempt_has_its_own_logs(tmp_path):
    (tmp_path / "wf.mf").write_text("x:\n\tprintf 'TRY%sERR\\n' _ >&2; exit 1\n")
    r = treadle_run("-r", "1", "wf.mf", cwd=tmp_path)
    assert r.returncode == 1
    assert [(tmp_path / LOGS / f"0.{n}.err").read_text() for n in (1, 2)] == ["TRY_ERR\n"] * 2
    assert f"(all of it in {LOGS}/0.2.err)" in r.stderr


def test_the_size_cap_is_applied_and_said_in_the_log(tmp_path):
    n = 3 * LOG_CAP
    (tmp_path / "wf.mf").write_text(f"x:\n\t(printf FIRST; yes y | head -c {n}; echo; echo LAST) >&2; exit 1\n")
    r = treadle_run("wf.mf", cwd=tmp_path)
    assert r.returncode == 1
    kept = (tmp_path / LOGS / "0.1.err").read_bytes()
    assert kept.startswith(b"FIRSTy") and kept.endswith(b"y\n\nLAST\n")
    total = len("FIRST") + n + len("\nLAST\n")
    assert f"[treadle: {total - LOG_CAP} bytes cut here; a log longer than {LOG_CAP} bytes".encode() in kept
    assert len(kept) < LOG_CAP + 200
    assert "      LAST" in r.stderr.splitlines()


# --- Work Queue: a real treadle worker ---------------------------------------------------


WQ_FAILING = (
    "ok.txt:\n"
    "\tprintf 'WOK%sOUT\\n' _; echo > ok.txt\n"
    "bad.txt: ok.txt\n"
    "\tprintf 'W%sOUT\\n' _; printf 'W%sERR\\n' _ >&2; exit 2\n"
)


@pytest.mark.slow
def test_over_work_queue_a_failed_rules_output_is_kept_in_one_file(tmp_path):
    r = run_wq(tmp_path, WQ_FAILING)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    before_summary = r.stdout + r.stderr[: r.stderr.index("workflow failed.")]
    for text in ("WOK_OUT", "W_OUT", "W_ERR"):
        assert text not in before_summary
    wd = tmp_path / "wf"
    combined = (wd / LOGS / "1.1.out").read_text()
    assert "W_OUT\n" in combined and "W_ERR\n" in combined  # protocol 9 merges the two streams
    assert not (wd / LOGS / "1.1.err").exists() and not (wd / LOGS / "0.1.out").exists()
    info = json.loads((wd / "makeflow.failed.1" / "INFO.json").read_text())
    assert info["stdout"] == info["stderr"] == f"{LOGS}/1.1.out" and info["stderr_in_stdout"] is True
    assert (wd / "makeflow.failed.1" / "INFO.stdout").read_text() == combined
    assert f"    last lines of stdout and stderr together (all of it in {LOGS}/1.1.out):" in r.stderr
    assert "      W_ERR" in r.stderr.splitlines()


# --- a full disk -------------------------------------------------------------------------


def _fill(directory: Path) -> None:
    """Write to ``directory`` until its filesystem is full."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_a_full_disk_fails_the_rule_with_the_reason(tmp_path, small_disk):
    """The workflow's directory fills up: the failed rule's INFO.json cannot be written."""
    wd = small_disk(tmp_path / "disk")
    (tmp_path / "journal").mkdir()
    log = tmp_path / "journal" / "wf.makeflowlog"  # the journal and the rules' logs live elsewhere
    (wd / "wf.mf").write_text("big.txt:\n\thead -c 1000000 /dev/zero > big.txt; exit 1\n")
    r = treadle_run("-l", str(log), "-f", "summary.txt", "wf.mf", cwd=wd)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "treadle: could not write the summary file summary.txt: No space left on device"
    )
    assert "could not save the failed rule's files in makeflow.failed.0: No space left on device" in r.stderr
    assert "workflow failed." in r.stderr
    assert not (wd / "makeflow.failed.0" / "INFO.json").exists()
    assert _journal_states(log, 0) == [1, 3]  # running, failed: the journal says what happened
    assert "# FAILED" in log.read_text()
    assert "No space left on device" in (tmp_path / "journal" / ".wf.logs" / "0.1.err").read_text()


def test_a_log_that_fills_the_disk_stops_the_run_and_the_next_run_resumes(tmp_path, small_disk):
    """The journal itself cannot be written: one clear line, and nothing done is lost or redone."""
    wd = small_disk(tmp_path / "disk")
    (wd / "wf.mf").write_text("".join(f"x{i}:\n\ttouch x{i}\n" for i in range(100)))
    _fill(wd)
    filler = wd / "filler"
    os.truncate(filler, filler.stat().st_size - 8192)  # room for a few dozen rules' records
    r = treadle_run("-j", "1", "wf.mf", cwd=wd)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "treadle: could not write to log file wf.mf.makeflowlog: No space left on device"
    )
    first = r.stdout.count("submitting job:")
    assert 0 < first < 100
    filler.unlink()
    r = treadle_run("-j", "1", "wf.mf", cwd=wd)
    assert r.returncode == 0, r.stderr
    assert all((wd / f"x{i}").exists() for i in range(100))
    assert r.stdout.count("submitting job:") <= 100 - first + 1  # at most the rule cut off is run again


@pytest.mark.slow
def test_over_work_queue_a_log_that_cannot_be_written_fails_the_rule(tmp_path, small_disk):
    _fill(small_disk(tmp_path / "wf" / LOGS))
    r = run_wq(tmp_path, "ok.txt:\n\techo > ok.txt; printf 'W%sOUT\\n' _\n")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"could not keep its output in {LOGS}/0.1.out: No space left on device" in r.stderr
    assert "W_OUT" not in r.stdout + r.stderr
