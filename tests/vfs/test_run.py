"""``treadle vfs run`` as a caller sees it: exit statuses, signals, leftovers, nesting, failures.

Every test runs the real command (``python -m treadle vfs run``) in a real mode against a real
repository or a real ``treadle repo serve`` on loopback; a mode this host cannot offer is
skipped with the doctor's reason.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests._wait import alive, wait_for
from tests.vfs.conftest import Filled

pytestmark = pytest.mark.vfs

TIMEOUT = 60


def _env(tmp_path: Path) -> dict[str, str]:
    """The run's environment: a cache of the test's own, no token from the developer's shell."""
    env = dict(os.environ, TREADLE_CACHE=str(tmp_path / "cache"))
    env.pop("TREADLE_REPO_TOKEN", None)
    env.pop("TREADLE_REPO_TOKEN_FILE", None)
    return env


def vfs_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "treadle", "vfs", *args]


def vfs(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``treadle vfs ARGS`` run to its end in ``tmp_path``."""
    return subprocess.run(vfs_argv(*args), cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=TIMEOUT)


@pytest.fixture(params=["fuse", "trace"])
def mode(request: pytest.FixtureRequest) -> str:
    """Each mode this host offers; the others are skipped with the mode's own reason."""
    if request.param == "fuse":
        from treadle.vfs.fusemode import fuse_available as available
    else:
        from treadle.vfs.trace import trace_available as available
    ok, why = available()
    if not ok:
        pytest.skip(f"mode {request.param} cannot work here: {why}")
    return str(request.param)


def _mount(tmp_path: Path) -> str:
    """A mount point of the test's own, missing on the host, so that parallel tests do not meet."""
    return f"/treadle-test-{tmp_path.name}"


# --- exit statuses ---------------------------------------------------------------------------


@pytest.mark.parametrize(("command", "status"), [
    (["sh", "-c", "exit 7"], 7),
    (["false"], 1),
    (["sh", "-c", "kill -TERM $$"], 128 + signal.SIGTERM),
    (["sh", "-c", "kill -KILL $$"], 128 + signal.SIGKILL),
    (["treadle-no-such-program"], 127),
    (["./not-executable"], 126),
    (["."], 126),
])
def test_exit_status_is_the_command_s(mode: str, filled_repo: Filled, tmp_path: Path,
                                      command: list[str], status: int) -> None:
    (tmp_path / "not-executable").write_text("#!/bin/sh\necho never\n")
    m = _mount(tmp_path)
    res = vfs(tmp_path, "run", "--mode", mode, "-m", f"{m}={filled_repo.path}", "--", *command)
    assert res.returncode == status, res.stderr
    if status in (126, 127):
        assert res.stderr.count("\n") == 1 and command[0] in res.stderr, res.stderr
        assert "never" not in res.stdout


def test_a_command_sees_the_repository_s_bytes(mode: str, filled_repo: Filled,
                                               tmp_path: Path) -> None:
    m = _mount(tmp_path)
    fileid, (data, ext) = next(iter(filled_repo.files.items()))
    res = subprocess.run(vfs_argv("run", "--mode", mode, "-m", f"{m}={filled_repo.path}", "--",
                                  "cat", f"{m}/fileid/{fileid}", f"{m}/fileid/{fileid}.{ext}"),
                         cwd=tmp_path, env=_env(tmp_path), capture_output=True, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
    assert res.stdout == data + data


@pytest.mark.parametrize("why", [
    ["-m", "/x=no-such.repo"],
    ["-m", "/x/y={repo}", "-m", "/x={repo}"],
    ["-m", "/x={repo}", "-m", "/x/={repo}"],
    ["-m", "relative={repo}"],
])
def test_vfs_s_own_failure_is_125_in_one_line(filled_repo: Filled, tmp_path: Path,
                                              why: list[str]) -> None:
    args = [w.format(repo=filled_repo.path) for w in why]
    res = vfs(tmp_path, "run", *args, "--", "touch", "ran")
    assert res.returncode == 125, res.stderr
    assert len(res.stderr.splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "ran").exists()


# --- signals and leftovers -----------------------------------------------------------------


@pytest.mark.parametrize(("signum", "to_group"), [
    (signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGHUP, False),
    (signal.SIGINT, True),  # Ctrl-C at a terminal: the whole process group gets it
])
def test_a_signal_to_vfs_reaches_the_command(mode: str, filled_repo: Filled, tmp_path: Path,
                                             signum: int, to_group: bool) -> None:
    m = _mount(tmp_path)
    run = subprocess.Popen(vfs_argv("run", "--mode", mode, "-m", f"{m}={filled_repo.path}", "--",
                                    "sh", "-c", "echo $$ > ready; exec sleep 300"),
                           cwd=tmp_path, env=_env(tmp_path), stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        command = int(wait_for(lambda: _read(tmp_path / "ready"), what="the command to start"))
        wait_for(lambda: _exe(command) == "sleep", what="the command to become sleep")
        assert os.getpgid(command) == run.pid  # the command stays in vfs's process group
        if to_group:
            os.killpg(run.pid, signum)
        else:
            run.send_signal(signum)
        assert run.wait(TIMEOUT) == 128 + signum
        assert not alive(command)
    finally:
        _stop(run)


def test_a_daemonised_grandchild_is_killed_at_exit(mode: str, filled_repo: Filled,
                                                   tmp_path: Path) -> None:
    m = _mount(tmp_path)
    script = ("( setsid sh -c 'echo $$ > daemon.pid; exec sleep 300' </dev/null >/dev/null 2>&1 & ); "
              "while [ ! -s daemon.pid ]; do sleep 0.01; done")
    res = vfs(tmp_path, "run", "--mode", mode, "-m", f"{m}={filled_repo.path}", "--",
              "sh", "-c", script)
    assert res.returncode == 0, res.stderr
    daemon = int((tmp_path / "daemon.pid").read_text())
    assert not alive(daemon)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _exe(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _stop(run: subprocess.Popen[str]) -> None:
    if run.poll() is None:
        run.kill()
        run.wait(TIMEOUT)
    if run.stderr is not None:
        run.stderr.close()


# --- nesting and start-up --------------------------------------------------------------------


def test_nesting_leaves_the_mount_to_the_outer_run(mode: str, filled_repo: Filled,
                                                   tmp_path: Path) -> None:
    m = _mount(tmp_path)
    fileid, (data, _) = next(iter(filled_repo.files.items()))
    inner = vfs_argv("run", "-v", "--stats", "inner.json", "-m", f"{m}={filled_repo.path}", "--",
                     "cat", f"{m}/fileid/{fileid}")
    res = subprocess.run(vfs_argv("run", "--mode", mode, "-m", f"{m}={filled_repo.path}", "--",
                                  *inner),
                         cwd=tmp_path, env=_env(tmp_path), capture_output=True, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
    assert res.stdout == data
    assert f"{m} is served by an outer treadle vfs run".encode() in res.stderr
    assert json.loads((tmp_path / "inner.json").read_text())["mode"] == "none"


def test_a_mount_inside_an_outer_run_s_is_125(mode: str, filled_repo: Filled,
                                              tmp_path: Path) -> None:
    m = _mount(tmp_path)
    inner = vfs_argv("run", "-m", f"{m}/fileid/inner={filled_repo.path}", "--", "touch", "ran")
    res = subprocess.run(vfs_argv("run", "--mode", mode, "-m", f"{m}={filled_repo.path}", "--",
                                  "sh", "-c", '"$@"; echo "inner exit $?"', "sh", *inner),
                         cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "inner exit 125\n"
    assert f"lies inside {m}" in res.stderr
    assert not (tmp_path / "ran").exists()


def test_stats_summarise_the_run(mode: str, filled_repo: Filled, tmp_path: Path) -> None:
    m = _mount(tmp_path)
    fileid = next(iter(filled_repo.files))
    res = vfs(tmp_path, "run", "--mode", mode, "--stats", "run.json", "-m",
              f"{m}={filled_repo.path}", "--", "cat", f"{m}/fileid/{fileid}", f"{m}/fileid/{fileid}")
    assert res.returncode == 0, res.stderr
    stats = json.loads((tmp_path / "run.json").read_text())
    assert stats["mode"] == mode and stats["exit_status"] == 0
    assert stats["opens"] >= 1 and stats["lookups"] >= 1 and stats["eio"] == 0
    assert isinstance(stats["passthrough"], bool)
    if mode == "trace":
        assert stats["traps"] > 0


def test_a_run_with_http_mounts_only_imports_no_sqlalchemy(
        mode: str, served_repo: tuple[Filled, str], tmp_path: Path) -> None:
    filled, url = served_repo
    fileid, (data, _) = next(iter(filled.files.items()))
    m = _mount(tmp_path)
    res = subprocess.run([sys.executable, "-X", "importtime", *vfs_argv(
        "run", "--mode", mode, "-m", f"{m}={url}", "--", "cat", f"{m}/fileid/{fileid}")[1:]],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout == data
    imported = [line.rsplit("|", 1)[-1].strip() for line in res.stderr.decode().splitlines()
                if line.startswith("import time:")]
    assert "treadle.vfs.launcher" in imported
    assert not [name for name in imported if name.split(".")[0] == "sqlalchemy"]


# --- the failure table, at the command level -----------------------------------------------

PROBE = """\
import errno, sys
what, path = sys.argv[1], sys.argv[2]
try:
    if what == "read":
        open(path, "rb").read()
    else:
        open(path, "w").close()
    print("ok")
except OSError as e:
    print(errno.errorcode[e.errno])
"""


def _probe(tmp_path: Path, mode: str, source: str, what: str, path: str,
           *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "probe.py").write_text(PROBE)
    m = _mount(tmp_path)
    return vfs(tmp_path, "run", "--mode", mode, "--timeout", "1", *extra, "-m", f"{m}={source}",
               "--", sys.executable, "probe.py", what, f"{m}/{path}")


@pytest.fixture
def stopped_server(filled_repo: Filled, tmp_path: Path) -> Iterator[str]:
    """The URL of a ``treadle repo serve`` that was started and stopped: nothing listens there."""
    server = subprocess.Popen([sys.executable, "-m", "treadle", "repo", "serve",
                               str(filled_repo.path), "--bind", "127.0.0.1:0", "--no-auth"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    server.terminate()
    server.wait(TIMEOUT)
    server.stdout.close()
    yield url


@pytest.fixture
def guarded_server(filled_repo: Filled, tmp_path: Path) -> Iterator[str]:
    """The URL of a ``treadle repo serve`` that wants a token, which the runs will not have."""
    subprocess.run([sys.executable, "-m", "treadle", "repo", "token", "create",
                    str(filled_repo.path), "--scope", "read", "--name", "t", "-o",
                    str(tmp_path / "good.token")], check=True, capture_output=True, timeout=TIMEOUT)
    server = subprocess.Popen([sys.executable, "-m", "treadle", "repo", "serve",
                               str(filled_repo.path), "--bind", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        yield server.stdout.readline().strip()
    finally:
        server.terminate()
        server.wait(TIMEOUT)
        if server.stdout is not None:
            server.stdout.close()


def _corrupt_every_replica(filled: Filled, fileid: int) -> None:
    import hashlib

    data = filled.files[fileid][0]
    digest = hashlib.sha256(data).hexdigest()
    stored = list(filled.path.glob(f"stores/*/objects/sha256/*/*/{digest}"))
    assert stored, "the replica was not where the store layout puts it"
    for path in stored:
        path.chmod(0o644)
        path.write_bytes(b"X" + data[1:])


def test_an_absent_fileid_is_enoent(mode: str, filled_repo: Filled, tmp_path: Path) -> None:
    res = _probe(tmp_path, mode, str(filled_repo.path), "read", "fileid/999999")
    assert (res.returncode, res.stdout.strip()) == (0, "ENOENT"), res.stderr


def test_a_write_is_erofs(mode: str, filled_repo: Filled, tmp_path: Path) -> None:
    fileid = next(iter(filled_repo.files))
    res = _probe(tmp_path, mode, str(filled_repo.path), "write", f"fileid/{fileid}")
    assert (res.returncode, res.stdout.strip()) == (0, "EROFS"), res.stderr


def test_an_unreachable_service_is_eio_never_enoent(mode: str, stopped_server: str,
                                                    tmp_path: Path) -> None:
    res = _probe(tmp_path, mode, stopped_server, "read", "fileid/1")
    assert (res.returncode, res.stdout.strip()) == (0, "EIO"), res.stderr
    assert stopped_server.split("//", 1)[1] in res.stderr


def test_a_refused_token_is_eacces(mode: str, guarded_server: str, tmp_path: Path) -> None:
    res = _probe(tmp_path, mode, guarded_server, "read", "fileid/1")
    assert (res.returncode, res.stdout.strip()) == (0, "EACCES"), res.stderr
    assert "TREADLE_REPO_TOKEN" in res.stderr


def test_a_token_accepted_reads(mode: str, guarded_server: str, tmp_path: Path) -> None:
    res = _probe(tmp_path, mode, guarded_server, "read", "fileid/1", "--token-file", "good.token")
    assert (res.returncode, res.stdout.strip()) == (0, "ok"), res.stderr


def test_bytes_that_fail_verification_everywhere_are_eio(mode: str, filled_repo: Filled,
                                                         tmp_path: Path) -> None:
    fileid = next(iter(filled_repo.files))
    _corrupt_every_replica(filled_repo, fileid)
    res = _probe(tmp_path, mode, str(filled_repo.path), "read", f"fileid/{fileid}")
    assert (res.returncode, res.stdout.strip()) == (0, "EIO"), res.stderr
