"""The ``wq`` backend: jobs with renamed inputs, directories and outputs on reference workers."""

from __future__ import annotations

import time

import pytest
from tests._wait import wait_for
from tests.queue import _manager_fixtures as fx

from treadle.backends.base import Backend, FileSpec, Job, Resources
from treadle.backends.workqueue import WorkQueueBackend

workers = fx.workers

pytestmark = pytest.mark.reference


def _results(b: WorkQueueBackend, n: int, timeout: float = 30) -> dict:
    out = {}
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, "jobs did not finish"
        r = b.wait(1)
        if r is not None:
            out[r.job_id] = r
    return out


def test_backend_runs_jobs_without_shared_filesystem(workers, tmp_path):
    wd = tmp_path / "wf"
    (wd / "data" / "sub").mkdir(parents=True)
    (wd / "shared.txt").write_text("shared\n")
    (wd / "data" / "sub" / "x.txt").write_text("x\n")
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    b = WorkQueueBackend(workdir=str(wd), port=0, password_file=str(pw))
    try:
        assert isinstance(b, Backend) and b.name == "wq" and b.sandboxed
        workers.start(b.port, "-P", str(pw), log=str(tmp_path / "worker.log"))
        j1 = Job(
            rule_id=1,
            command="cat s.txt d/sub/x.txt > result1.txt; echo $MSG >> result1.txt",
            inputs=(FileSpec("shared.txt", "s.txt"), FileSpec("data", "d")),
            outputs=(FileSpec("out/one.txt", "result1.txt"),),
            resources=Resources(cores=1),
            environment={"MSG": "exported"},
        )
        j2 = Job(rule_id=2, command="cat s.txt > two.txt; exit 4", inputs=(FileSpec("shared.txt", "s.txt"),),
                 outputs=(FileSpec("two.txt", "two.txt"),))
        j3 = Job(rule_id=3, command="kill -9 $$", resources=Resources(cores=1, wall_time=30))
        ids = [b.submit(j) for j in (j1, j2, j3)]
        res = _results(b, 3)
        assert res[ids[0]].succeeded
        assert (wd / "out" / "one.txt").read_text() == "shared\nx\nexported\n"
        assert res[ids[1]].exit_code == 4 and (wd / "two.txt").read_text() == "shared\n"
        assert not res[ids[2]].succeeded  # a reference worker reports signal 9 as exit 9
    finally:
        b.close()


def test_missing_input_is_an_error_result(workers, tmp_path):
    b = WorkQueueBackend(workdir=str(tmp_path), port=0)
    try:
        workers.start(b.port)
        jid = b.submit(Job(rule_id=1, command="true", inputs=(FileSpec("absent", "absent"),)))
        (r,) = _results(b, 1).values()
        assert r.job_id == jid and r.error and "INPUT_MISSING" in r.error
    finally:
        b.close()


def test_cancel_kills_running_job(workers, tmp_path):
    b = WorkQueueBackend(workdir=str(tmp_path), port=0)
    try:
        workers.start(b.port)
        jid = b.submit(Job(rule_id=1, command="sleep 30"))
        wait_for(lambda: b.manager.stats.tasks_running == 1)
        b.cancel(jid)
        assert b.wait(0.5) is None
        jid2 = b.submit(Job(rule_id=2, command="echo next"))
        assert _results(b, 1)[jid2].succeeded
    finally:
        b.close()


WORKFLOW = """\
out1.txt: shared.txt data
\tcat shared.txt data/a.txt data/sub/b.txt > out1.txt

out2.txt->o2.txt: shared.txt->s.txt out1.txt
\tcat s.txt out1.txt > o2.txt

result/final.txt: out2.txt shared.txt
\tmkdir -p result && cat out2.txt shared.txt > result/final.txt
"""


# the same workflow without renaming, which -T local refuses (as the reference does)
LOCAL_WORKFLOW = WORKFLOW.replace("out2.txt->o2.txt: shared.txt->s.txt", "out2.txt: shared.txt").replace(
    "cat s.txt out1.txt > o2.txt", "cat shared.txt out1.txt > out2.txt"
)


def _make_workflow(d, text=WORKFLOW):
    (d / "data" / "sub").mkdir(parents=True)
    (d / "shared.txt").write_text("shared\n")
    (d / "data" / "a.txt").write_text("a\n")
    (d / "data" / "sub" / "b.txt").write_text("b\n")
    (d / "wf.mf").write_text(text)


def test_treadle_run_wq_with_reference_workers_matches_local(workers, tmp_path):
    import subprocess
    import sys

    local, remote = tmp_path / "local", tmp_path / "remote"
    for d, text in ((local, LOCAL_WORKFLOW), (remote, WORKFLOW)):
        d.mkdir()
        _make_workflow(d, text)
    run = [sys.executable, "-m", "treadle", "run"]
    r = subprocess.run([*run, "wf.mf"], cwd=local, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    pw = tmp_path / "pw"
    pw.write_text("pass\n")
    portfile = remote / "port"
    mf = subprocess.Popen([*run, "-T", "wq", "-p", "0", "-Z", str(portfile), "--password", str(pw), "wf.mf"],
                          cwd=remote, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: portfile.exists() and portfile.read_text().strip() != "", 30, "port file")
        port = int(portfile.read_text().split()[0])
        workers.start(port, "-P", str(pw))
        workers.start(port, "-P", str(pw))
        out, err = mf.communicate(timeout=120)
    finally:
        if mf.poll() is None:
            mf.kill()
    assert mf.returncode == 0, err
    for name in ("out1.txt", "out2.txt", "result/final.txt"):
        assert (remote / name).read_text() == (local / name).read_text(), name
    assert (remote / "result/final.txt").read_text() == "shared\nshared\na\nb\nshared\n"


def test_absolute_paths_are_used_in_place_and_renamed_ones_travel(workers, tmp_path):
    """Weaver names files outside its sandbox by absolute path: such a job must run."""
    wd = tmp_path / "wf"
    wd.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("from outside\n")
    b = WorkQueueBackend(workdir=str(wd), port=0)
    try:
        workers.start(b.port)
        in_place = Job(rule_id=1, command=f"cat {outside} > copy.txt",
                       inputs=(FileSpec(str(outside), str(outside)),),
                       outputs=(FileSpec("copy.txt", "copy.txt"),))
        shipped = Job(rule_id=2, command="cat o.txt > shipped.txt",
                      inputs=(FileSpec(str(outside), "o.txt"),),
                      outputs=(FileSpec("shipped.txt", "shipped.txt"),))
        for job in (in_place, shipped):
            b.submit(job)
        results = _results(b, 2, timeout=60)
        assert all(r.succeeded for r in results.values()) and len(results) == 2
        assert (wd / "copy.txt").read_text() == "from outside\n"
        assert (wd / "shipped.txt").read_text() == "from outside\n"
    finally:
        b.close()
