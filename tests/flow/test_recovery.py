"""Recovery at start-up (spec §3.3): restart, identities [F-c], changed inputs [F-d], foreign logs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "makeflow"


def treadle(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "treadle", "run", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def deleted(out: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("deleted ")]


def ran(out: str) -> list[str]:
    return [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("submitting job: ")]


def touch_later(path: Path) -> None:
    """``touch`` a file in a later whole second than its creation (the check works in whole seconds)."""
    time.sleep(1.05)
    os.utime(path)


def test_restart_acceptance(tmp_path):
    """Delete file.5: 6 files rebuilt. Touch file.2: 8 rebuilt (counted by `deleted file.` lines)."""
    shutil.copy(EXAMPLES / "restart.jx", tmp_path)
    (tmp_path / "file.1").write_text("hello\n")
    first = treadle("--jx", "restart.jx", cwd=tmp_path)
    assert first.returncode == 0 and len(ran(first.stdout)) == 9
    (tmp_path / "file.5").unlink()
    second = treadle("--jx", "restart.jx", cwd=tmp_path)
    assert second.returncode == 0
    assert "warning: file.5 was previously created by makeflow, but someone else deleted it!" in second.stdout
    assert deleted(second.stdout) == [f"file.{i}" for i in range(5, 11)]
    assert len(ran(second.stdout)) == 6
    touch_later(tmp_path / "file.2")
    third = treadle("--jx", "restart.jx", cwd=tmp_path)
    assert "but someone else modified it!" in third.stdout
    assert len(deleted(third.stdout)) == 8
    assert (tmp_path / "file.10").read_text() == "hello\n"
    fourth = treadle("--jx", "restart.jx", cwd=tmp_path)
    assert ran(fourth.stdout) == [] and "warning" not in fourth.stdout


def test_inserting_a_rule_never_marks_the_wrong_rule_done(tmp_path):
    """[F-c]: records follow identities, not positions."""
    wf = tmp_path / "wf.mf"
    wf.write_text("a:\n\techo a > a\nb: a\n\tcat a > b\n")
    assert treadle("wf.mf", cwd=tmp_path).returncode == 0
    wf.write_text("z:\n\techo z > z\na:\n\techo a > a\nb: a\n\tcat a > b\n")
    r = treadle("wf.mf", cwd=tmp_path)
    assert ran(r.stdout) == ["echo z > z"]
    assert (tmp_path / "z").exists()
    wf.write_text("z:\n\techo z > z\na:\n\techo A > a\nb: a\n\tcat a > b\n")
    r = treadle("wf.mf", cwd=tmp_path)
    assert ran(r.stdout) == ["echo A > a", "cat a > b"]  # a changed command is a new rule


def test_a_changed_original_input_reruns_downstream(tmp_path):
    """[F-d]"""
    for f in ("chain.mf", "input.txt"):
        shutil.copy(EXAMPLES / f, tmp_path)
    assert treadle("chain.mf", cwd=tmp_path).returncode == 0
    assert ran(treadle("chain.mf", cwd=tmp_path).stdout) == []
    (tmp_path / "input.txt").write_text("a changed input line\n")
    r = treadle("chain.mf", cwd=tmp_path)
    assert sorted(ran(r.stdout)) == sorted(["tr a-z A-Z < input.txt > a.txt", "rev < input.txt > b.txt", "cat a.txt b.txt > joined.txt"])
    assert (tmp_path / "joined.txt").read_text().startswith("A CHANGED INPUT LINE")
    assert ran(treadle("chain.mf", cwd=tmp_path).stdout) == []


def test_checksum_sources_detects_same_size_same_mtime_edits(tmp_path):
    (tmp_path / "in").write_text("aaaa\n")
    (tmp_path / "wf.mf").write_text("out: in\n\tcp in out\n")
    assert treadle("--checksum-sources", "wf.mf", cwd=tmp_path).returncode == 0
    st = (tmp_path / "in").stat()
    (tmp_path / "in").write_text("bbbb\n")
    os.utime(tmp_path / "in", ns=(st.st_atime_ns, st.st_mtime_ns))
    r = treadle("--checksum-sources", "wf.mf", cwd=tmp_path)
    assert ran(r.stdout) == ["cp in out"] and (tmp_path / "out").read_text() == "bbbb\n"


def test_a_missing_original_input_stops_the_run(tmp_path):
    for f in ("chain.mf", "input.txt"):
        shutil.copy(EXAMPLES / f, tmp_path)
    assert treadle("chain.mf", cwd=tmp_path).returncode == 0
    (tmp_path / "input.txt").unlink()
    r = treadle("chain.mf", cwd=tmp_path)
    assert r.returncode == 1 and "error: input.txt does not exist, and is not created by any rule." in r.stdout
    assert "found 1 errors and 0 warnings during consistency check." in r.stdout
    assert treadle("--skip-file-check", "chain.mf", cwd=tmp_path).returncode == 0


def test_a_rule_that_was_running_when_the_engine_died_runs_again(tmp_path):
    wf = tmp_path / "wf.mf"
    wf.write_text("a:\n\techo a > a\nb: a\n\tcat a > b\n")
    assert treadle("wf.mf", cwd=tmp_path).returncode == 0
    log = tmp_path / "wf.mf.makeflowlog"
    lines = log.read_text().splitlines()
    ident = next(x for x in lines if x.startswith("# RULE") and x.split()[3] == "1").split()[4]
    # a segment that ends with rule 1 running: the engine died there
    ts = int(time.time() * 1e6)
    with log.open("a") as f:
        f.write(f"# STARTED {ts}\n# TREADLE {ts} x\n# RULE {ts} 1 {ident}\n{ts} 1 1 4242 0 1 1 0 0 2\n")
    r = treadle("wf.mf", cwd=tmp_path)
    assert "rule still running: cat a > b" in r.stderr
    assert deleted(r.stdout) == ["b"] and ran(r.stdout) == ["cat a > b"]


def test_a_log_written_by_the_reference_is_understood(tmp_path):
    (tmp_path / "wf.mf").write_text("a:\n\techo a > a\nb: a\n\tcat a > b\n")
    (tmp_path / "a").write_text("a\n")
    (tmp_path / "b").write_text("a\n")
    ts = int(time.time() * 1e6) + 5_000_000
    (tmp_path / "wf.mf.makeflowlog").write_text(
        f"# FILE {ts} wf.mf.batchlog 1 0\n# STARTED {ts}\n# FILE {ts} a 1 1073741824\n"
        f"{ts} 0 1 100 1 1 0 0 0 2\n# FILE {ts} a 2 2\n{ts} 0 2 100 1 0 1 0 0 2\n"
        f"# FILE {ts} b 1 1073741824\n{ts} 1 1 101 0 1 1 0 0 2\n# FILE {ts} b 2 2\n"
        f"# FILE {ts} a 3 2\n{ts} 1 2 101 0 0 2 0 0 2\n# COMPLETED {ts}\n"
    )
    r = treadle("wf.mf", cwd=tmp_path)
    assert r.returncode == 0 and ran(r.stdout) == []
    # the same log for a workflow with another rule count cannot be trusted
    (tmp_path / "wf.mf").write_text("a:\n\techo a > a\nb: a\n\tcat a > b\nc:\n\techo c > c\n")
    r = treadle("wf.mf", cwd=tmp_path)
    assert "rules will run again because the log has no rule identities" in r.stderr
    assert len(ran(r.stdout)) == 3


def test_names_with_blanks_survive_a_restart(tmp_path):
    """[F-i]"""
    (tmp_path / "wf.mf").write_text("'my file':\n\techo x > 'my file'\nout: 'my file'\n\tcat 'my file' > out\n")
    assert treadle("wf.mf", cwd=tmp_path).returncode == 0
    assert "my%20file" in (tmp_path / "wf.mf.makeflowlog").read_text()
    assert ran(treadle("wf.mf", cwd=tmp_path).stdout) == []
    (tmp_path / "my file").unlink()
    r = treadle("wf.mf", cwd=tmp_path)
    assert "warning: my file was previously created by makeflow, but someone else deleted it!" in r.stdout
    assert len(ran(r.stdout)) == 2
