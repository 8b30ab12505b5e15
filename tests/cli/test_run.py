"""``treadle run``: the reference's command line, the lines scripts grep, exit statuses."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests._examples import copy_tracked
from tests._wait import alive, wait_for

from treadle.backends import registry
from treadle.backends.base import own_options
from treadle.backends.workqueue import WorkQueueBackend, WorkQueueOptions
from treadle.cli.run import OPTIONS, parse_args, tokenize
from treadle.errors import UsageError
from treadle.flow.options import RunOptions
from treadle.flow.run import INERT_OPTIONS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "makeflow"


def treadle(*args: str, cwd: Path, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "treadle", "run", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
    )


def copy_example(name: str, dest: Path) -> Path:
    copy_tracked(EXAMPLES, dest)
    return dest / name


# --- option parsing ----------------------------------------------------------------------


def test_long_options_may_be_abbreviated_to_a_unique_prefix():
    o = parse_args(["--summary=s.txt", "--max-l=3", "wf.mf"], {})
    assert (o.summary_log, o.max_local, o.dagfile) == ("s.txt", 3, "wf.mf")
    with pytest.raises(UsageError, match="ambiguous"):
        parse_args(["--c=x"], {})


def test_options_and_dagfile_in_any_order():
    o = parse_args(["wf.mf", "-j", "2", "-g", "ref_cnt"], {})
    assert (o.dagfile, o.max_local, o.gc) == ("wf.mf", 2, "ref_cnt")


def test_clean_takes_only_an_attached_argument():
    assert parse_args(["-c"], {}).clean == "all"
    assert parse_args(["-coutputs"], {}).clean == "outputs"
    assert parse_args(["--clean=intermediates"], {}).clean == "intermediates"
    o = parse_args(["-c", "outputs"], {})
    assert (o.clean, o.dagfile) == ("all", "outputs")
    with pytest.raises(UsageError):
        parse_args(["--clean=everything"], {})


def test_short_options_take_attached_or_separate_values():
    pairs, words = tokenize(["-dall", "-j3", "-T", "local", "x.mf"])
    assert [(o.dest, v) for o, v in pairs] == [("debug", "all"), ("max_local", "3"), ("batch_type", "local")]
    assert words == ["x.mf"]


def test_unknown_option_and_batch_type_are_refused():
    with pytest.raises(UsageError, match="unrecognized option"):
        parse_args(["--no-such-option"], {})
    with pytest.raises(UsageError, match="unrecognized option"):
        parse_args(["-Y"], {})
    with pytest.raises(UsageError, match="-T sge is not a treadle batch type"):
        parse_args(["-T", "sge"], {})
    assert parse_args(["-T", "slurm"], {}).batch_type == "slurm"


def test_environment_variables():
    o = parse_args([], {"MAKEFLOW_BATCH_QUEUE_TYPE": "dryrun", "BATCH_OPTIONS": "-q x"})
    assert (o.batch_type, o.batch_options) == ("dryrun", "-q x")
    assert parse_args([], {"MAKEFLOW_MAX_LOCAL_JOBS": "1"}).max_local is None  # only lowers -j
    assert parse_args(["-j", "4"], {"MAKEFLOW_MAX_LOCAL_JOBS": "2"}).max_local == 2
    assert parse_args(["-j", "1"], {"MAKEFLOW_MAX_LOCAL_JOBS": "2"}).max_local == 1
    assert parse_args(["-B", "mine"], {"BATCH_OPTIONS": "env"}).batch_options == "mine"


def test_job_limits_follow_the_reference():
    assert parse_args(["-j", "3", "-J", "2"], {}).job_limits(8) == (2, 2)
    assert parse_args([], {}).job_limits(8) == (8, 8)
    wq_default = WorkQueueBackend.default_max_remote
    assert wq_default == 1000
    assert parse_args(["-T", "wq"], {}).job_limits(8, wq_default) == (8, 1000)
    assert parse_args(["-T", "wq", "-J", "5"], {}).job_limits(8, wq_default) == (8, 5)


def test_retry_options_and_wq_spellings():
    assert parse_args(["-R"], {}).retries == 5
    assert parse_args(["-r", "2"], {}).retries == 2
    assert parse_args(["--wq-fast-abort", "3"], {}).backend_settings["fast_abort"] == 3.0
    assert parse_args(["--fast-abort=2"], {}).backend_settings["fast_abort"] == 2.0
    assert parse_args(["--dry-run"], {}).batch_type == "dryrun"


def test_every_option_is_read_by_the_run_or_by_a_backend():
    """An option RunOptions has no field for goes to backend_settings; some backend must declare it.

    Otherwise a table row with a mistyped dest would be parsed, then silently ignored.
    """
    run_fields = {f.name for f in dataclasses.fields(RunOptions)}
    backend_fields = {f.name for name in registry.BACKENDS
                      if (t := registry.backend_class(name).options_type) is not None
                      for f in dataclasses.fields(t)}
    # the options parse_args turns into something else (-R into retries, --json into fmt...)
    # -b writes a bundle in place of a run (treadle.cli.run.execute)
    translated = {"help", "version", "argv", "retry", "json", "jx", "dry_run", "no_save_failed", "archive",
                  "bundle_dir"}
    to_backends = {o.dest for o in OPTIONS} - run_fields - translated - set(INERT_OPTIONS)  # these only say why not
    assert to_backends - backend_fields == set()
    assert "port" in to_backends and "fast_abort" in to_backends


def test_wq_options_reach_the_wq_backend_s_options():
    o = parse_args(["-T", "wq", "-p", "0", "--bind", "127.0.0.1", "-N", "proj", "-t", "9"], {})
    wq = own_options(WorkQueueOptions, o.backend_settings)
    assert (wq.port, wq.bind, wq.project_name, wq.keepalive_timeout) == (0, "127.0.0.1", "proj", 9)
    assert not hasattr(o, "port")  # the generic options know nothing of Work Queue


def test_argv_file(tmp_path):
    inner = tmp_path / "inner.json"
    inner.write_text(json.dumps({"max-local": 2}))
    outer = tmp_path / "outer.json"
    outer.write_text(json.dumps({"MAKEFLOW": "wf.mf", "skip-file-check": None, "argv": str(inner)}))
    o = parse_args(["--argv", str(outer)], {})
    assert (o.dagfile, o.skip_file_check, o.max_local) == ("wf.mf", True, 2)


def test_help_version_and_errors_from_the_command_line(tmp_path):
    h = treadle("-h", cwd=tmp_path)
    assert h.returncode == 0 and "--max-local" in h.stdout
    assert treadle("--help", cwd=tmp_path).returncode == 0
    v = treadle("-v", cwd=tmp_path)
    assert v.returncode == 0 and "version" in v.stdout
    bad = treadle("--bogus", cwd=tmp_path)
    assert bad.returncode == 1 and "unrecognized option" in bad.stderr and "Traceback" not in bad.stderr
    badt = treadle("-T", "pbs", cwd=tmp_path)
    assert badt.returncode == 1 and "-T pbs is not a treadle batch type" in badt.stderr


# --- running -----------------------------------------------------------------------------


def test_tour_runs_and_prints_the_reference_lines(tmp_path):
    wf = copy_example("tour.mf", tmp_path)
    r = treadle("tour.mf", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "parsing tour.mf..."
    assert lines[1].startswith("local resources: ") and " cores, " in lines[1]
    assert lines[2].startswith("max running local jobs: ")
    assert lines[3:6] == ["checking tour.mf for consistency...", "tour.mf has 4 rules.", "creating new log file tour.mf.makeflowlog..."]
    assert lines[6] == "checking files for unexpected changes...  (use --skip-file-check to skip this step)"
    assert lines[7] == "starting workflow...."
    assert lines[-1] == "nothing left to do."
    assert sum(1 for x in lines if x.startswith("submitting job: ")) == 4
    assert sum(1 for x in lines if x.startswith("job ") and x.endswith(" completed")) == 4
    assert (tmp_path / "report.txt").read_text() == "hello alice\nhello bob\n!\n3\n5\n"
    again = treadle("--skip-file-check", str(wf.name), cwd=tmp_path)
    assert "recovering from log file tour.mf.makeflowlog..." in again.stdout
    assert "skipping file checks.\nstarting workflow....\nnothing left to do.\n" in again.stdout
    assert "submitting job" not in again.stdout


def test_failed_rule_fails_the_workflow(tmp_path):
    copy_example("failing.mf", tmp_path)
    r = treadle("-f", "summary.txt", "failing.mf", cwd=tmp_path)
    assert r.returncode == 1
    assert "failed with exit code 7" in r.stderr
    assert "rule 1 failed, moving any outputs to makeflow.failed.1" in r.stderr
    assert "workflow failed." in r.stderr and "failing.mf:" in r.stderr
    assert "nothing left to do." not in r.stdout
    assert (tmp_path / "ok.txt").exists() and not (tmp_path / "after_bad.txt").exists()
    info = json.loads((tmp_path / "makeflow.failed.1" / "INFO.json").read_text())
    assert info["exit_code"] == 7 and info["outputs"] == [{"size": 8, "dag_name": "bad.txt"}]
    assert (tmp_path / "makeflow.failed.1" / "bad.txt").read_text() == "partial\n"
    summary = (tmp_path / "summary.txt").read_text()
    assert "Workflow failed:" in summary and "Failed tasks:\t 1/3" in summary and "Tasks not run:\t 1/3" in summary
    log = (tmp_path / "failing.mf.makeflowlog").read_text().splitlines()
    assert log[-1].startswith("# FAILED ")
    # the failed rule runs again next time (it is not retried within a run without -r)
    again = treadle("failing.mf", cwd=tmp_path)
    assert "will retry failed rule: echo partial > bad.txt; exit 7" in again.stderr
    assert again.stdout.count("submitting job:") == 1


def test_retries_and_the_transient_exit_status(tmp_path):
    (tmp_path / "r.mf").write_text("a:\n\techo x >> attempts; test \\$(wc -l < attempts) -ge 3 && touch a\n")
    r = treadle("-r", "2", "r.mf", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "attempts").read_text().split()) == 3
    # exit status 101 asks for a retry even without -r
    (tmp_path / "t.mf").write_text(
        "b:\n\techo x >> b_attempts; test \\$(wc -l < b_attempts) -ge 3 && touch b || exit 101\n"
    )
    r = treadle("t.mf", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "b_attempts").read_text().split()) == 3
    # anything else is not retried without -r
    (tmp_path / "n.mf").write_text("c:\n\techo x >> c_attempts; exit 1\n")
    r = treadle("n.mf", cwd=tmp_path)
    assert r.returncode == 1 and len((tmp_path / "c_attempts").read_text().split()) == 1


def test_missing_output_is_a_failure(tmp_path):
    (tmp_path / "m.mf").write_text("a:\n\ttrue\n")
    r = treadle("--do-not-save-failed-output", "m.mf", cwd=tmp_path)
    assert r.returncode == 1 and "true did not create file a" in r.stderr
    assert not (tmp_path / "makeflow.failed.0").exists()


def test_missing_source_is_an_error_before_anything_runs(tmp_path):
    (tmp_path / "m.mf").write_text("a: nope\n\ttouch a\n")
    r = treadle("m.mf", cwd=tmp_path)
    assert r.returncode == 1
    assert "error: nope does not exist, and is not created by any rule." in r.stdout
    assert "submitting" not in r.stdout


def test_parse_error_is_one_line_with_status_1(tmp_path):
    (tmp_path / "bad.mf").write_text("a:\n")
    r = treadle("bad.mf", cwd=tmp_path)
    assert r.returncode == 1 and "bad.mf:" in r.stderr and "error:" in r.stderr and "Traceback" not in r.stderr


def test_dry_run_writes_the_script_and_runs_nothing(tmp_path):
    copy_example("chain.mf", tmp_path)
    r = treadle("--dry-run", "chain.mf", cwd=tmp_path)
    assert r.returncode == 0 and "nothing left to do." in r.stdout
    script = (tmp_path / "chain.mf.sh").read_text().splitlines()
    assert script[:4] == ["#!/bin/sh", "set -x", "set -e", ""]
    assert script[6] == 'env "CORES=1" "OMP_NUM_THREADS=1" sh -c "rev < input.txt > b.txt"'
    assert script[7] == 'test -e "b.txt"'
    assert not (tmp_path / "a.txt").exists() and not (tmp_path / "joined.txt").exists()
    assert not (tmp_path / "chain.mf.makeflowlog").exists()
    real = treadle("chain.mf", cwd=tmp_path)
    assert real.stdout.count("submitting job:") == 3 and (tmp_path / "joined.txt").exists()


def test_a_second_engine_on_the_same_log_is_refused(tmp_path):
    (tmp_path / "s.mf").write_text("a:\n\tsleep 3; touch a\n")
    first = subprocess.Popen([sys.executable, "-m", "treadle", "run", "s.mf"], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        log = tmp_path / "s.mf.makeflowlog"
        wait_for(lambda: log.exists() and "# RULE" in log.read_text(), 10, "the first engine's log")
        second = treadle("s.mf", cwd=tmp_path)
        assert second.returncode == 1 and "in use by another" in second.stderr
    finally:
        first.wait(timeout=30)
    assert first.returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGQUIT])
def test_abort_is_fast_journalled_and_leaves_no_orphan(tmp_path, sig):
    (tmp_path / "s.mf").write_text(
        "a:\n\tsh -c 'sleep 60 & echo $! > a.pid; wait'\nb:\n\tsleep 61 > b\n"
    )
    p = subprocess.Popen([sys.executable, "-m", "treadle", "run", "s.mf"], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pid_file = tmp_path / "a.pid"
        grandchild = int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 10, "a.pid"))
        t = time.monotonic()
        p.send_signal(sig)
        out, err = p.communicate(timeout=10)
        took = time.monotonic() - t
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 1
    assert took < 3  # generous for a loaded machine; the engine reacts within ABORT_POLL
    assert "got abort signal..." in out and out.count("aborting local job ") == 2
    assert "workflow was aborted." in err
    assert not (tmp_path / "b").exists()
    log = (tmp_path / "s.mf.makeflowlog").read_text().splitlines()
    assert log[-1].startswith("# ABORTED")
    assert sum(1 for x in log if not x.startswith("#") and x.split()[2] == "4") == 2
    wait_for(lambda: not alive(grandchild), 10, "the aborted job's child to end")


def test_nested_workflow_runs_the_same_treadle(tmp_path):
    copy_example("nested.mf", tmp_path)
    r = treadle("nested.mf", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"submitting job: {sys.executable} -m treadle run -T local chain.mf -l chain.mf.0.makeflowlog" in r.stdout
    assert (tmp_path / "joined.txt").read_text() == "THE QUICK BROWN FOX\nxof nworb kciuq eht\n"
    assert (tmp_path / "chain.mf.0.makeflowlog").exists()
    c = treadle("-c", "nested.mf", cwd=tmp_path)
    assert c.returncode == 0
    for gone in ("joined.txt", "a.txt", "b.txt", "chain.mf.0.makeflowlog", "nested.mf.makeflowlog"):
        assert not (tmp_path / gone).exists(), gone
    assert (tmp_path / "input.txt").exists()


def test_local_packing_keeps_big_rules_apart(tmp_path):
    (tmp_path / "p.mf").write_text(
        "CORES=2\n"
        + "".join(f"o{i}:\n\techo start >> trace; sleep 0.3; echo end >> trace; touch o{i}\n" for i in range(3))
    )
    r = treadle("-j", "4", "--local-cores", "2", "p.mf", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "trace").read_text().split() == ["start", "end"] * 3


def test_change_directory_and_log_options(tmp_path):
    sub = tmp_path / "w"
    sub.mkdir()
    (sub / "x.mf").write_text("x:\n\ttouch x\n")
    r = treadle("-X", "w", "-l", "my.log", "x.mf", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (sub / "x").exists() and (sub / "my.log").exists()
    assert not (sub / "x.mf.batchlog").exists()  # local mode creates no batch log (§3.5)


def test_sandbox_runs_each_rule_in_a_private_directory(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "data.txt").write_text("payload\n")
    (tmp_path / "stray.txt").write_text("not an input\n")
    (tmp_path / "s.mf").write_text(
        "out/result.txt: in/data.txt\n\tmkdir -p out; ls > listing; cat in/data.txt > out/result.txt; cat listing >> out/result.txt\n"
        "fail.txt:\n\techo x > fail.txt; exit 3\n"
    )
    r = treadle("--sandbox", "s.mf", cwd=tmp_path)
    assert r.returncode == 1  # the failing rule keeps its status through the sandbox
    assert (tmp_path / "out" / "result.txt").read_text() == "payload\nin\nlisting\nout\n"
    assert not (tmp_path / "listing").exists()  # files that are not outputs stay in the sandbox
    assert "submitting job: echo x > fail.txt; exit 3" in r.stdout
    assert (tmp_path / "makeflow.failed.1" / "fail.txt").read_text() == "x\n"


def test_debug_output_goes_to_the_debug_file(tmp_path):
    (tmp_path / "d.mf").write_text("x:\n\ttouch x\n")
    r = treadle("-d", "all", "-o", "debug.txt", "d.mf", cwd=tmp_path)
    assert r.returncode == 0 and "debug:" not in r.stderr
    text = (tmp_path / "debug.txt").read_text()
    assert "submitted to local as job" in text and "ended: exit 0" in text
    w = treadle("-d", "nonsense", "d.mf", cwd=tmp_path)
    assert w.returncode == 0 and "unknown debug subsystem" in w.stderr


def test_log_verbose_writes_the_structure_into_a_new_log(tmp_path):
    copy_example("chain.mf", tmp_path)
    assert treadle("--log-verbose", "chain.mf", cwd=tmp_path).returncode == 0
    log = (tmp_path / "chain.mf.makeflowlog").read_text().splitlines()
    assert "# PARENTS\t2\t0\t1" in log and "# TARGETS\t2\tjoined.txt" in log
    assert any(x.startswith("# COMMAND\t0\ttr a-z A-Z") for x in log)


@pytest.mark.reference
@pytest.mark.slow
def test_work_queue_runs_remote_rules_and_local_rules_stay_here(tmp_path):
    if shutil.which("work_queue_worker") is None:
        pytest.skip("reference work_queue_worker not installed")
    copy_example("tour.mf", tmp_path)
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    run = subprocess.Popen([sys.executable, "-m", "treadle", "run", "-T", "wq", "-p", "0", "-Z", "port", "tour.mf"],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    worker = None
    try:
        port = tmp_path / "port"
        number = wait_for(lambda: port.exists() and port.read_text().strip(), 10, "the port file")
        worker = subprocess.Popen(["work_queue_worker", "-t", "30", "127.0.0.1", number],
                                  cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        out, err = run.communicate(timeout=60)
    finally:
        for p in (run, worker):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert run.returncode == 0, err
    assert "max running remote jobs: 1000" in out
    assert (tmp_path / "report.txt").read_text() == "hello alice\nhello bob\n!\n3\n5\n"
    local_ids = [line.split()[-1] for line in out.splitlines() if line.startswith("submitted job ")]
    assert len(local_ids) == 4


def test_zero_length_outputs_and_waiting_for_files(tmp_path):
    (tmp_path / "z.mf").write_text("empty:\n\ttouch empty\n")
    assert treadle("z.mf", cwd=tmp_path).returncode == 0
    (tmp_path / "z2.mf").write_text("empty2:\n\ttouch empty2\n")
    r = treadle("-z", "z2.mf", cwd=tmp_path)
    assert r.returncode == 1 and "did not create file empty2" in r.stderr
    (tmp_path / "late.mf").write_text("late:\n\t(sleep 0.5; touch late) > /dev/null 2>&1 &\n")
    assert treadle("--wait-for-files-upto", "10", "late.mf", cwd=tmp_path).returncode == 0


def test_remote_renaming_is_refused_under_local_execution(tmp_path):
    (tmp_path / "in").write_text("x\n")
    (tmp_path / "r.mf").write_text("out: in->renamed\n\tcp renamed out\n")
    r = treadle("r.mf", cwd=tmp_path)
    assert r.returncode == 1 and "Remote renaming is not supported" in r.stderr
    assert "Traceback" not in r.stderr


ARGS = [["-j", "2"], ["--gc=ref_cnt"], ["-r", "3"], ["--skip-file-check"], ["-coutputs"], ["-l", "x.log"]]


@settings(max_examples=30, deadline=None)
@given(order=st.permutations(range(len(ARGS))), at=st.integers(0, len(ARGS)))
def test_options_and_the_dagfile_may_come_in_any_order(order, at):
    argv = [w for i in order for w in ARGS[i]]
    argv.insert(sum(len(ARGS[i]) for i in order[:at]), "wf.mf")
    o = parse_args(argv, {})
    assert (o.dagfile, o.max_local, o.gc, o.retries, o.skip_file_check, o.clean, o.log_path) == (
        "wf.mf", 2, "ref_cnt", 3, True, "outputs", "x.log")


def test_options_without_effect_here_say_so_and_the_run_goes_on(tmp_path):
    """Reference scripts keep working, and the user learns the option changed nothing."""
    wf = tmp_path / "one.mf"
    wf.write_text("a.txt:\n\techo a > a.txt\n")
    res = treadle("--storage-type", "1", "-W", "fcfs", "one.mf", cwd=tmp_path)
    assert res.returncode == 0 and (tmp_path / "a.txt").read_text() == "a\n"
    assert "--storage-type, --storage-limit and --storage-print have no effect" in res.stderr
    assert "-W has no effect" in res.stderr
    quiet = treadle("one.mf", cwd=tmp_path)
    assert "no effect" not in quiet.stderr
