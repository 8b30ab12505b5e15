"""treadle workers serve the reference manager (``makeflow -T wq``), spec section 4.

The same workflow also runs under ``makeflow -T local``; the outputs must be equal.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
from tests._wait import wait_for

pytestmark = pytest.mark.reference

WORKFLOW = """\
out1.txt: in.txt shared.txt
\tcat in.txt shared.txt > out1.txt; echo "rule1 stdout"
out2.txt: shared.txt out1.txt
\twc -c shared.txt out1.txt > out2.txt
renamed.txt: data/local_name.txt->remote.txt shared.txt
\tcat remote.txt shared.txt > renamed.txt
listing.txt: indir emptydir
\t(cd indir && find . | sort) > listing.txt; ls -A emptydir >> listing.txt; cat indir/link_to_a indir/sub/b.txt >> listing.txt
outdir: indir
\tmkdir -p outdir/sub && echo hello-env > outdir/sub/v.txt && ln -s sub/v.txt outdir/link && cp -r indir outdir/copy
env.txt: envcheck.sh
\tsh envcheck.sh > env.txt
"""

OUTPUTS = ["out1.txt", "out2.txt", "renamed.txt", "listing.txt", "outdir"]
ENVCHECK = """\
echo "cores=$CORES omp=$OMP_NUM_THREADS memory=$MEMORY"
case "$TMPDIR" in "$PWD"/cctools-temp-t.*) echo "tmpdir in sandbox";; esac
test -d "$WORK_QUEUE_SANDBOX/cache" && echo "sandbox is the workspace"
test -d "$WORKER_TMPDIR" && echo "worker tmpdir"
basename "$PWD"
"""


# makeflow -T local has no sandbox and refuses remote names: same rule, local names
LOCAL_WORKFLOW = WORKFLOW.replace("data/local_name.txt->remote.txt", "data/local_name.txt")
LOCAL_WORKFLOW = LOCAL_WORKFLOW.replace("cat remote.txt", "cat data/local_name.txt")


def make_inputs(d: Path, workflow: str = WORKFLOW) -> None:
    (d / "Makeflow").write_text(workflow)
    (d / "in.txt").write_text("hello world\n")
    (d / "shared.txt").write_text("shared by several rules\n")
    (d / "data").mkdir()
    (d / "data" / "local_name.txt").write_text("renamed on the worker\n")
    (d / "indir" / "sub").mkdir(parents=True)
    (d / "indir" / "a.txt").write_text("aaa\n")
    (d / "indir" / "sub" / "b.txt").write_text("bbb\n")
    os.symlink("a.txt", d / "indir" / "link_to_a")
    (d / "emptydir").mkdir()
    (d / "pw.txt").write_text("not-a-real-secret\n")
    (d / "envcheck.sh").write_text(ENVCHECK)


def tree(path: Path) -> dict:
    """Relative path -> content (symlinks followed), '<dir>' for directories."""
    if path.is_file():
        return {".": path.read_bytes()}
    out = {}
    for p in sorted(path.rglob("*")):
        rel = str(p.relative_to(path))
        out[rel] = "<dir>" if p.is_dir() else p.read_bytes()
    return out


@pytest.fixture
def local_run(tmp_path: Path, reference_env: dict) -> Path:
    d = tmp_path / "local"
    d.mkdir()
    make_inputs(d, LOCAL_WORKFLOW)
    subprocess.run(["makeflow", "-T", "local", "Makeflow"], cwd=d, env=reference_env,
                   check=True, capture_output=True, timeout=120)
    return d


def test_treadle_workers_serve_makeflow_with_password(
        tmp_path: Path, local_run: Path, start_makeflow, start_worker) -> None:
    d = tmp_path / "wq"
    d.mkdir()
    make_inputs(d)
    mf, port = start_makeflow("Makeflow", "--password", "pw.txt", cwd=d)
    workers = [start_worker("--single-shot", "-t", "60", "--cores", "1", "--memory", "500",
                            "--disk", "1000", "-P", str(d / "pw.txt"), "-s", str(tmp_path),
                            "127.0.0.1", str(port)) for _ in range(2)]
    out, _ = mf.communicate(timeout=120)
    assert mf.returncode == 0, out.decode()
    assert b"rule1 stdout" in out
    for name in OUTPUTS:
        assert tree(d / name) == tree(local_run / name), name
    lines = (d / "env.txt").read_text().splitlines()
    assert lines[:4] == ["cores=1 omp=1 memory=500", "tmpdir in sandbox",
                         "sandbox is the workspace", "worker tmpdir"]
    assert lines[4].startswith("t.")
    for w in workers:  # released by the manager, single-shot: they leave on their own
        assert w.wait(timeout=30) == 0
    assert not list(tmp_path.glob("worker-*")), "workspace left behind"


FAILING = """\
missing.txt:
\techo no output here
failing.txt:
\techo failing; exit 3
"""


def test_missing_output_and_failing_command_fail_the_workflow_as_locally(
        tmp_path: Path, start_makeflow, start_worker, reference_env: dict) -> None:
    (tmp_path / "Makeflow").write_text(FAILING)
    local = subprocess.run(["makeflow", "-T", "local", "-r", "0", "Makeflow"], cwd=tmp_path,
                           env=reference_env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
    subprocess.run(["makeflow", "-c", "Makeflow"], cwd=tmp_path, env=reference_env,
                   capture_output=True, timeout=60)
    mf, port = start_makeflow("Makeflow", "-r", "0", cwd=tmp_path)
    worker = start_worker("-t", "60", "--cores", "2", "--memory", "500", "--disk", "500",
                          "-s", str(tmp_path), "127.0.0.1", str(port))
    out, _ = mf.communicate(timeout=60)
    # makeflow 9.9 exits 0 even when rules fail; its messages tell the outcome
    for text in (local.stdout.decode(), out.decode()):
        assert "did not create file missing.txt" in text
        assert "failed with exit code 3" in text
    assert not (tmp_path / "missing.txt").exists()
    assert worker.poll() is None  # a failed task is no reason for the worker to leave


def test_wrong_password_is_refused(tmp_path: Path, start_makeflow, start_worker) -> None:
    (tmp_path / "Makeflow").write_text("x.txt:\n\techo x > x.txt\n")
    (tmp_path / "pw.txt").write_text("right\n")
    (tmp_path / "wrong.txt").write_text("wrong\n")
    mf, port = start_makeflow("Makeflow", "--password", "pw.txt", cwd=tmp_path)
    bad = start_worker("--single-shot", "-t", "20", "-P", str(tmp_path / "wrong.txt"),
                       "-s", str(tmp_path), "127.0.0.1", str(port))
    assert bad.wait(timeout=30) != 0
    assert b"password" in bad.stderr.read()
    nopw = start_worker("--single-shot", "-t", "20", "-s", str(tmp_path),
                        "127.0.0.1", str(port))
    assert nopw.wait(timeout=30) != 0
    assert not (tmp_path / "x.txt").exists()
    good = start_worker("--single-shot", "-t", "20", "-P", str(tmp_path / "pw.txt"),
                        "-s", str(tmp_path), "127.0.0.1", str(port))
    mf.communicate(timeout=60)
    assert mf.returncode == 0 and (tmp_path / "x.txt").read_text() == "x\n"
    assert good.wait(timeout=30) == 0


def catalog_lists(port: int, project: str) -> bool:
    """Whether the catalog server on ``port`` answers, and lists ``project`` when one is named."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/query.json", timeout=2) as reply:
            entries = json.load(reply)
    except (OSError, ValueError):
        return False
    return not project or any(e.get("project") == project for e in entries)


def test_worker_finds_the_manager_through_a_local_catalog(
        tmp_path: Path, start_makeflow, start_worker, reference_env: dict,
        free_port: int) -> None:
    catalog = subprocess.Popen(["catalog_server", "-I", "127.0.0.1", "-p", str(free_port),
                                "-u", f"127.0.0.1:{free_port}"], env=reference_env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        (tmp_path / "Makeflow").write_text("x.txt:\n\techo found > x.txt\n")
        reference_env["CATALOG_HOST"] = f"127.0.0.1:{free_port}"
        project = f"treadle-test-{free_port}"
        wait_for(lambda: catalog_lists(free_port, ""), timeout=30, what="the catalog server")
        mf, _ = start_makeflow("Makeflow", "-N", project, "-C", f"127.0.0.1:{free_port}",
                               cwd=tmp_path)
        # makeflow reports again only every minute: a first report lost before the
        # catalog listened would leave the worker looking for 30 s and giving up
        wait_for(lambda: catalog_lists(free_port, project), timeout=30,
                 what="the manager in the catalog")
        worker = start_worker("--single-shot", "-t", "30", "-i", "0.2", "-b", "0.5",
                              "-M", "treadle-test-.*", "-C", f"127.0.0.1:{free_port}",
                              "-s", str(tmp_path))
        mf.communicate(timeout=60)
        assert (tmp_path / "x.txt").read_text() == "found\n"
        assert worker.wait(timeout=30) == 0
    finally:
        catalog.kill()
        catalog.wait()
