"""``treadle vfs doctor``: one line per check, the same findings as JSON, and the mode a run picks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.vfs.conftest import Filled

pytestmark = pytest.mark.vfs

TIMEOUT = 60
CHECKS = ["kernel", "fuse", "passthrough", "mount namespace", "user namespace", "ptrace",
          "seccomp", "io_uring", "trace"]


def _doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "treadle", "vfs", "doctor", *args],
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_one_line_per_check_and_what_auto_picks() -> None:
    res = _doctor()
    names = [line.split("  ")[0] for line in res.stdout.splitlines()]
    assert names == [*CHECKS, "auto"], res.stdout
    auto = res.stdout.splitlines()[-1]
    assert res.returncode == (0 if " ok  picks " in auto else 1), res.stdout
    assert res.stderr == ""


def test_json_holds_the_same_findings() -> None:
    text = _doctor().stdout
    found = json.loads(_doctor("--json").stdout)
    assert [c["name"] for c in found["checks"]] == CHECKS
    assert found["auto"] in ("fuse", "trace", None)
    for check in found["checks"]:
        assert f"{'ok ' if check['ok'] else 'no '} {check['detail']}" in text


def test_the_fuse_line_names_the_kernel_s_protocol_version() -> None:
    fuse = json.loads(_doctor("--json").stdout)["checks"][1]
    if not fuse["ok"]:
        pytest.skip(f"no FUSE here: {fuse['detail']}")
    assert "FUSE 7." in fuse["detail"]


def test_a_run_picks_what_the_doctor_says(filled_repo: Filled, tmp_path: Path) -> None:
    auto = json.loads(_doctor("--json").stdout)["auto"]
    if auto is None:
        pytest.skip("no mode works on this host")
    env = dict(os.environ, TREADLE_CACHE=str(tmp_path / "cache"))
    res = subprocess.run([sys.executable, "-m", "treadle", "vfs", "run", "-v", "--stats", "s.json",
                          "-m", f"/treadle-test-{tmp_path.name}={filled_repo.path}", "--", "true"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
    assert f"treadle vfs: mode {auto}: " in res.stderr
    assert json.loads((tmp_path / "s.json").read_text())["mode"] == auto


def test_an_impossible_mode_is_125_naming_what_is_missing(filled_repo: Filled,
                                                          tmp_path: Path) -> None:
    """Without /dev/fuse (hidden in a mount namespace of the test's own), --mode fuse cannot work."""
    if os.geteuid() != 0:
        pytest.skip("hiding /dev/fuse needs a mount namespace of our own (root here)")
    script = ("mount --make-rprivate / && mount --bind /dev/null /dev/fuse && exec \"$@\"")
    res = subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", sys.executable, "-m",
                          "treadle", "vfs", "run", "--mode", "fuse",
                          "-m", f"/treadle-test-{tmp_path.name}={filled_repo.path}", "--", "true"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT,
                         env=dict(os.environ, TREADLE_CACHE=str(tmp_path / "cache")))
    assert res.returncode == 125, res.stderr
    assert "mode fuse cannot work here" in res.stderr and "Traceback" not in res.stderr
