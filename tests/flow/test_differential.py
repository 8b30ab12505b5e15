"""The same workflows under the reference ``makeflow`` and ``treadle run``: same files, status, rules."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests._examples import copy_tracked

pytestmark = pytest.mark.reference

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "makeflow"
ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def reference(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["makeflow", *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=ENV)


def ours(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "treadle", "run", *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=ENV)


def setup(d: Path) -> None:
    d.mkdir()
    copy_tracked(EXAMPLES, d)


def snapshot(d: Path, ignore: tuple[str, ...]) -> dict[str, str]:
    return {
        p.name: p.read_text(errors="replace")
        for p in d.iterdir()
        if p.is_file() and not p.name.endswith(ignore)
    }


def ran(out: str) -> list[str]:
    return sorted(x.split(": ", 1)[1] for x in out.splitlines() if x.startswith("submitting job: "))


LOGS = (".makeflowlog", ".batchlog")


@pytest.mark.parametrize(("dagfile", "args"), [("tour.mf", ()), ("chain.mf", ("-j", "1")), ("gc_counts.mf", ("-j", "1"))])
def test_same_outputs_status_and_rules(tmp_path, dagfile, args):
    if shutil.which("makeflow") is None:
        pytest.skip("reference makeflow not installed")
    a, b = tmp_path / "ref", tmp_path / "ours"
    setup(a)
    setup(b)
    ra = reference(*args, dagfile, cwd=a)
    rb = ours(*args, dagfile, cwd=b)
    assert (ra.returncode, rb.returncode) == (0, 0), (ra.stdout + ra.stderr, rb.stderr)
    assert ran(ra.stdout) == ran(rb.stdout)
    assert snapshot(a, LOGS) == snapshot(b, LOGS)
    # and a second run does nothing in both
    assert ran(reference(*args, dagfile, cwd=a).stdout) == ran(ours(*args, dagfile, cwd=b).stdout) == []


@pytest.mark.parametrize(("gc", "counts"), [(("-g", "ref_cnt", "-G", "1"), "7 5 6 5"), (("-g", "on_demand", "-G", "4"), "7 8 6 8")])
def test_gc_counts_match_the_reference(tmp_path, gc, counts):
    for d, runner in ((tmp_path / "ref", reference), (tmp_path / "ours", ours)):
        d.mkdir()
        shutil.copy(EXAMPLES / "gc_counts.mf", d)
        (d / "makeflow").symlink_to(sys.executable)
        r = runner("-j", "1", *gc, "gc_counts.mf", cwd=d)
        assert r.returncode == 0, r.stderr
        assert " ".join((d / "count.7").read_text().split()) == counts, d.name


def test_each_reads_the_others_log(tmp_path):
    a, b = tmp_path / "ref_first", tmp_path / "ours_first"
    setup(a)
    setup(b)
    assert reference("chain.mf", cwd=a).returncode == 0
    again = ours("chain.mf", cwd=a)
    assert again.returncode == 0 and ran(again.stdout) == []
    assert ours("chain.mf", cwd=b).returncode == 0
    again = reference("chain.mf", cwd=b)
    assert again.returncode == 0 and ran(again.stdout) == [] and "nothing left to do." in again.stdout


def test_the_documented_difference_for_failures(tmp_path):
    """[F-a]: the reference retries and exits 0; treadle stops the rule's dependents and exits 1."""
    a, b = tmp_path / "ref", tmp_path / "ours"
    setup(a)
    setup(b)
    ra = reference("failing.mf", cwd=a)
    rb = ours("failing.mf", cwd=b)
    assert rb.returncode == 1 and ra.returncode != rb.returncode
    for d in (a, b):
        assert (d / "ok.txt").exists() and not (d / "after_bad.txt").exists()
