"""The local backend: real processes, process groups, the watchdog, direct exec == sh -c."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from hypothesis import given, settings
from hypothesis import strategies as st
from tests._wait import alive, wait_for

from treadle.backends.base import Backend, Job
from treadle.backends.local import LocalBackend
from treadle.queue.spawn import shell_free_argv


def _run(backend: LocalBackend, command: str, env: dict[str, str] | None = None, stderr: str | None = None):
    job_id = backend.submit(Job(0, command, environment=env or {}, stderr=stderr))
    result = backend.wait(10.0)
    assert result is not None and result.job_id == job_id
    return result


def test_is_a_backend():
    b = LocalBackend()
    try:
        assert isinstance(b, Backend)
        assert b.name == "local" and b.sandboxed is False
    finally:
        b.close()


def _via(command: str, direct: bool, cwd, env_extra: dict[str, str] | None = None
         ) -> tuple[int | None, int | None, str, str]:
    """(exit code, signal, what the command wrote to out.txt, its stderr log)."""
    out = cwd / "out.txt"
    err = cwd / "err.log"
    b = LocalBackend(direct_exec=direct)
    old = os.getcwd()
    os.chdir(cwd)
    try:
        r = _run(b, f"{command}", env_extra, stderr=str(err))
    finally:
        os.chdir(old)
        b.close()
    text = out.read_text() if out.exists() else ""
    if out.exists():
        out.unlink()
    return r.exit_code, r.signal, text, err.read_text()


WORDS = st.text(alphabet="abcXYZ019_.,:+@%^=-/", min_size=1, max_size=8)


@settings(max_examples=25, deadline=None)
@given(args=st.lists(WORDS, min_size=0, max_size=4))
def test_direct_exec_gives_the_same_result_as_the_shell(tmp_path_factory, args):
    """The optimisation is invisible: same argv, status and output as /bin/sh -c."""
    cwd = tmp_path_factory.mktemp("eq")
    script = cwd / "show"
    script.write_text("#!/bin/sh\nprintf '[%s]' \"$0\" \"$@\" > out.txt\nexit 3\n")
    script.chmod(0o755)
    command = " ".join(["./show", *args])
    assert shell_free_argv(command) is not None
    assert _via(command, True, cwd) == _via(command, False, cwd)


def test_missing_program_falls_back_to_the_shell_with_status_127(tmp_path):
    for direct in (True, False):
        code, sig, _, err = _via("no-such-program-treadle arg", direct, tmp_path)
        assert (code, sig) == (127, None)
        assert "not found" in err


def test_script_without_shebang_runs_like_the_shell_runs_it(tmp_path):
    script = tmp_path / "noshebang"
    script.write_text("echo from-script > out.txt\n")
    script.chmod(0o755)
    assert _via("./noshebang", True, tmp_path) == (0, None, "from-script\n", "")


def test_a_program_killed_by_a_signal_is_reported_as_the_shell_reports_it(tmp_path, capfd):
    """dash outlives its child: exit 128+N and a message, whether or not the shell was skipped.

    The message is the job's: it lands in the job's stderr log, not on the engine's stderr.
    """
    script = tmp_path / "crash"
    script.write_text("#!/bin/sh\necho before > out.txt\nkill -SEGV $$\n")
    script.chmod(0o755)
    results = [_via("./crash", direct, tmp_path) for direct in (True, False)]
    assert results[0][:3] == results[1][:3] == (128 + signal.SIGSEGV, None, "before\n")
    assert all("Segmentation fault" in err for *_, err in results)
    assert "Segmentation fault" not in capfd.readouterr().err


def test_path_of_the_job_environment_is_searched(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    prog = bindir / "myprog"
    prog.write_text("#!/bin/sh\necho mine > out.txt\n")
    prog.chmod(0o755)
    env = {"PATH": f"{bindir}:{os.environ.get('PATH', '')}"}
    assert _via("myprog", True, tmp_path, env) == (0, None, "mine\n", "")


def test_exit_status_and_signal_are_reported(tmp_path):
    b = LocalBackend()
    try:
        assert _run(b, "exit 5").exit_code == 5
        r = _run(b, "kill -9 $$")
        assert r.signal == signal.SIGKILL and r.exit_code is None and not r.succeeded
        assert _run(b, "true").succeeded
    finally:
        b.close()


def test_job_environment_adds_to_the_engine_environment(tmp_path):
    code, _, text, _ = _via("sh -c 'echo $TREADLE_T1-$HOME > out.txt'", True, tmp_path, {"TREADLE_T1": "v"})
    assert code == 0 and text == f"v-{os.environ['HOME']}\n"


def test_wait_times_out_with_nothing_finished():
    b = LocalBackend()
    try:
        b.submit(Job(0, "sleep 5"))
        t = time.monotonic()
        assert b.wait(0.2) is None
        assert time.monotonic() - t < 2
        assert b.wait(0.0) is None
    finally:
        b.close()


def test_each_job_is_its_own_process_group_and_cancel_kills_it_all(tmp_path):
    pidfile = tmp_path / "child.pid"
    b = LocalBackend()
    try:
        job = b.submit(Job(0, f"sh -c 'sleep 60 & echo $! > {pidfile}; wait'"))
        assert os.getpgid(job) == job
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 5, "the job's child")
        grandchild = int(pidfile.read_text())
        b.cancel(job)
        assert b.wait(0.5) is None  # a cancelled job is not reported
    finally:
        b.close()
    wait_for(lambda: not alive(grandchild), 5, "the cancelled job's child to end")


def test_watchdog_kills_jobs_of_an_engine_killed_with_sigkill(tmp_path):
    pidfile = tmp_path / "pids"
    engine = textwrap.dedent(
        f"""
        import time
        from treadle.backends.base import Job
        from treadle.backends.local import LocalBackend
        b = LocalBackend()
        for i in range(3):
            b.submit(Job(i, "sh -c 'sleep 60 & echo $! >> {pidfile}; wait'"))
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    p = subprocess.Popen([sys.executable, "-c", engine], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        wait_for(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 3, 5, "three jobs")
        pids = [int(x) for x in pidfile.read_text().split()]
        assert all(alive(x) for x in pids)
        p.kill()
        p.wait()
        wait_for(lambda: not any(alive(x) for x in pids), 5, "the watchdog to kill the jobs")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
