"""--archive: finished rules stored by what made them and restored in a later run, end to end."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from treadle.cli.run import parse_args
from treadle.flow.archive import Stored, default_dir, manifest_text, parse_manifest, rule_key

# Each command that runs appends a line to ../ran, so a test sees which rules ran, across directories.
WORKFLOW = (
    "up.txt: in.txt\n"
    "\ttr a-z A-Z < in.txt > up.txt; echo up >> ../ran\n"
    "both.txt: up.txt in.txt\n"
    "\tcat up.txt in.txt > both.txt; echo both >> ../ran\n"
)


def _workdir(path: Path, workflow: str = WORKFLOW, text: str = "hello\n") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "wf.mf").write_text(workflow)
    (path / "in.txt").write_text(text)
    return path


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "treadle", "run", *args, "wf.mf"], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def _ran(tmp_path: Path) -> list[str]:
    marker = tmp_path / "ran"
    return marker.read_text().split() if marker.exists() else []


def test_a_second_run_in_a_fresh_directory_restores_without_running(tmp_path):
    archive = tmp_path / "archive"
    first = _run(_workdir(tmp_path / "one"), f"--archive={archive}")
    assert first.returncode == 0, first.stderr
    assert _ran(tmp_path) == ["up", "both"]
    second = _run(_workdir(tmp_path / "two"), f"--archive={archive}")
    assert second.returncode == 0, second.stderr
    assert _ran(tmp_path) == ["up", "both"]  # nothing ran again
    assert second.stdout.count("restored from archive: ") == 2
    assert (tmp_path / "two" / "both.txt").read_text() == "HELLO\nhello\n"
    log = (tmp_path / "two" / "wf.mf.makeflowlog").read_text()
    assert log.count("# ARCHIVE ") == 2 and "# COMPLETED" in log
    assert not list((archive / "tmp").iterdir())  # no half-written entry left behind
    again = _run(tmp_path / "two", f"--archive={archive}")
    assert again.returncode == 0 and "nothing left to do" in again.stdout  # the journal says done


def test_a_changed_input_or_command_misses(tmp_path):
    archive = tmp_path / "archive"
    assert _run(_workdir(tmp_path / "one"), f"--archive={archive}").returncode == 0
    changed = _run(_workdir(tmp_path / "two", text="other\n"), f"--archive={archive}")
    assert changed.returncode == 0, changed.stderr
    assert _ran(tmp_path) == ["up", "both", "up", "both"]
    assert (tmp_path / "two" / "both.txt").read_text() == "OTHER\nother\n"
    edited = WORKFLOW.replace("cat up.txt in.txt", "cat in.txt up.txt")
    third = _run(_workdir(tmp_path / "three", workflow=edited), f"--archive={archive}")
    assert third.returncode == 0, third.stderr
    assert _ran(tmp_path)[4:] == ["both"]  # up.txt's rule is unchanged and restored; both.txt's runs
    assert (tmp_path / "three" / "both.txt").read_text() == "hello\nHELLO\n"


def test_a_corrupted_object_is_detected_and_the_rule_runs(tmp_path):
    archive = tmp_path / "archive"
    assert _run(_workdir(tmp_path / "one"), f"--archive={archive}").returncode == 0
    for obj in (archive / "objects").rglob("*"):
        if obj.is_file() and obj.read_bytes() == b"HELLO\n":
            obj.write_bytes(b"JELLO\n")
    second = _run(_workdir(tmp_path / "two"), f"--archive={archive}")
    assert second.returncode == 0, second.stderr
    assert "does not match its hash" in second.stderr
    assert _ran(tmp_path) == ["up", "both", "up"]
    assert (tmp_path / "two" / "up.txt").read_text() == "HELLO\n"
    assert not list((tmp_path / "two").glob(".up.txt.restore.*"))


def test_read_only_stores_nothing_and_write_only_restores_nothing(tmp_path):
    archive = tmp_path / "archive"
    assert _run(_workdir(tmp_path / "one"), "--archive-read", "--archive-dir", str(archive)).returncode == 0
    assert not (archive / "rules").exists()
    assert _run(_workdir(tmp_path / "two"), "--archive-write", "--archive-dir", str(archive)).returncode == 0
    assert _run(_workdir(tmp_path / "three"), "--archive-write", "--archive-dir", str(archive)).returncode == 0
    assert _ran(tmp_path) == ["up", "both"] * 3
    assert _run(_workdir(tmp_path / "four"), "--archive-read", "--archive-dir", str(archive)).returncode == 0
    assert len(_ran(tmp_path)) == 6


def test_two_runs_at_once_share_the_archive(tmp_path):
    archive = tmp_path / "archive"
    rules = "".join(f"out{i}.txt: in.txt\n\tsleep 0.2; sed s/^/{i}/ in.txt > out{i}.txt; echo {i} >> ../ran\n"
                    for i in range(6))
    procs = [subprocess.Popen([sys.executable, "-m", "treadle", "run", "-j", "3", f"--archive={archive}", "wf.mf"],
                              cwd=_workdir(tmp_path / name, workflow=rules), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for name in ("one", "two")]
    for p in procs:
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    for name in ("one", "two"):
        assert [(tmp_path / name / f"out{i}.txt").read_text() for i in range(6)] == [f"{i}hello\n" for i in range(6)]
    assert not list((archive / "tmp").iterdir())
    runs = len(_ran(tmp_path))
    third = _run(_workdir(tmp_path / "three", workflow=rules), f"--archive={archive}")
    assert third.returncode == 0, third.stderr
    assert len(_ran(tmp_path)) == runs and third.stdout.count("restored from archive: ") == 6


def test_same_outputs_as_the_reference_makeflow(tmp_path):
    if shutil.which("makeflow") is None:
        pytest.skip("reference makeflow not installed")
    ref_dir = _workdir(tmp_path / "ref")
    args = ["--archive", f"--archive-dir={tmp_path / 'ref-archive'}"]
    ref = subprocess.run(["makeflow", *args, "wf.mf"], cwd=ref_dir, capture_output=True, text=True, timeout=120)
    if ref.returncode != 0 and ref.stdout.startswith("Use:"):
        # cctools 8.0.0 as Debian packages it prints its usage for every --archive option.
        pytest.skip("this reference makeflow refuses --archive")
    assert ref.returncode == 0, ref.stderr
    ref_again = _workdir(tmp_path / "ref2")
    assert subprocess.run(["makeflow", *args, "wf.mf"], cwd=ref_again, capture_output=True,
                          timeout=120).returncode == 0
    ours = _workdir(tmp_path / "ours")
    assert _run(ours, f"--archive={tmp_path / 'archive'}").returncode == 0
    ours_again = _workdir(tmp_path / "ours2")
    assert _run(ours_again, f"--archive={tmp_path / 'archive'}").returncode == 0
    for name in ("up.txt", "both.txt"):
        assert (ours_again / name).read_text() == (ref_again / name).read_text()


def test_the_command_line():
    opts = parse_args(["--archive=/a", "wf.mf"])
    assert (opts.archive_read, opts.archive_write, opts.archive_dir) == (True, True, "/a")
    opts = parse_args(["--archive", "wf.mf"])
    assert (opts.archive_read, opts.archive_write, opts.archive_dir, opts.dagfile) == (True, True, None, "wf.mf")
    opts = parse_args(["--archive-read", "--archive-dir", "/b", "wf.mf"])
    assert (opts.archive_read, opts.archive_write, opts.archive_dir) == (True, False, "/b")
    assert default_dir({"XDG_CACHE_HOME": "/c"}) == "/c/treadle/archive"


def test_keys_cover_what_decides_the_results():
    base = rule_key("cmd", {"A": "1", "B": "2"}, "", ["out"], [("in", "0" * 64)])
    assert base == rule_key("cmd", {"B": "2", "A": "1"}, "", ["out"], [("in", "0" * 64)])
    others = [
        rule_key("cmd2", {"A": "1", "B": "2"}, "", ["out"], [("in", "0" * 64)]),
        rule_key("cmd", {"A": "1", "B": "3"}, "", ["out"], [("in", "0" * 64)]),
        rule_key("cmd", {"A": "1", "B": "2"}, "docker:x", ["out"], [("in", "0" * 64)]),
        rule_key("cmd", {"A": "1", "B": "2"}, "", ["out2"], [("in", "0" * 64)]),
        rule_key("cmd", {"A": "1", "B": "2"}, "", ["out"], [("in", "1" * 64)]),
    ]
    assert len({base, *others}) == 6


def test_a_manifest_for_other_outputs_or_keys_is_refused():
    text = manifest_text("k", [Stored("out", "a" * 64, 3)])
    assert parse_manifest("k", text, ["out"]) == [Stored("out", "a" * 64, 3)]
    assert parse_manifest("other", text, ["out"]) is None
    assert parse_manifest("k", text, ["elsewhere"]) is None
    assert parse_manifest("k", text[:-5], ["out"]) is None
    assert parse_manifest("k", manifest_text("k", [Stored("out", "../x", 3)]), ["out"]) is None
