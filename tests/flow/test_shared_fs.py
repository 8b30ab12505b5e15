"""``--shared-fs`` and ``--wait-for-files-upto``: files on a shared filesystem are used in place, never shipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests._wq import run_wq

from treadle.backends.base import FileSpec
from treadle.backends.workqueue import _travelling


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "treadle", "run", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_wq_leaves_files_on_the_shared_fs_where_they_are(tmp_path: Path) -> None:
    shared = tmp_path / "nfs"
    shared.mkdir()
    marker = "only-on-the-shared-filesystem-7f3a"
    (shared / "big.dat").write_text(marker + "\n")
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "local.txt").write_text("shipped\n")
    wf = (f"{shared}/copy.dat out.txt: {shared}/big.dat local.txt\n"
          f"\tcat {shared}/big.dat local.txt > out.txt && cp {shared}/big.dat {shared}/copy.dat\n")
    done = run_wq(tmp_path, wf, "--shared-fs", str(shared))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "wf" / "out.txt").read_text() == marker + "\nshipped\n"
    assert (shared / "copy.dat").read_text() == marker + "\n"


def test_files_on_the_shared_fs_do_not_travel(tmp_path: Path) -> None:
    shared = str(tmp_path / "nfs")
    files = (FileSpec(f"{shared}/a.dat", "a.dat"), FileSpec(f"{shared}/b.dat", f"{shared}/b.dat"),
             FileSpec(f"{shared}x/c.dat", "c.dat"), FileSpec("local.txt", "local.txt"))
    assert [f.task_name for f in _travelling(files, (shared,))] == ["c.dat", "local.txt"]


def test_a_rename_on_the_shared_fs_is_refused_before_anything_runs(tmp_path: Path) -> None:
    shared = tmp_path / "nfs"
    shared.mkdir()
    (shared / "in.dat").write_text("x\n")
    (tmp_path / "wf.mf").write_text(f"out.txt: {shared}/in.dat->in.dat\n\tcat in.dat > out.txt\n")
    done = _run(tmp_path, "-T", "wq", "-p", "0", "--shared-fs", str(shared), "wf.mf")
    assert done.returncode != 0
    assert f"{shared}/in.dat->in.dat" in done.stderr and "--shared-fs" in done.stderr
    assert not (tmp_path / "out.txt").exists()


def test_shared_fs_must_be_absolute(tmp_path: Path) -> None:
    (tmp_path / "wf.mf").write_text("out.txt:\n\ttouch out.txt\n")
    done = _run(tmp_path, "--shared-fs", "nfs", "wf.mf")
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and "absolute" in done.stderr


def test_wait_for_files_upto_waits_for_an_output_that_appears_late(tmp_path: Path) -> None:
    # The command ends at once; its output appears 1.5 s later, as on NFS with a slow attribute cache.
    late = "out.txt:\n\t(sleep 1.5; echo late > out.txt) >/dev/null 2>&1 &\n"
    (tmp_path / "wf.mf").write_text(late)
    done = _run(tmp_path, "--wait-for-files-upto", "10", "wf.mf")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.txt").read_text() == "late\n"


def test_without_wait_for_files_a_late_output_fails_the_rule(tmp_path: Path) -> None:
    (tmp_path / "wf.mf").write_text("out.txt:\n\t(sleep 3; echo late > out.txt) >/dev/null 2>&1 &\n")
    done = _run(tmp_path, "wf.mf")
    assert done.returncode != 0
    assert "did not create file out.txt" in done.stdout + done.stderr
