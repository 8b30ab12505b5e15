"""What Work Queue tells its user (issue 11 item 2, issue 9 --bind), with real processes.

* a manager listens where it is told (every interface by default);
* a worker that cannot reach its manager says so once and retries with backoff;
* a worker whose manager finished and went away exits 0, as the reference's does;
* the factory warns once while its manager is unreachable, and takes ``-d``;
* ``treadle status`` flags a waiting task that no connected worker can ever fit.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests._lines import Lines
from tests._wait import wait_for

from treadle.queue import Manager, Task

TREADLE = [sys.executable, "-m", "treadle"]


def reachable(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=5).close()
    except ConnectionRefusedError:
        return False
    return True


@pytest.mark.parametrize(("bind", "on_other_address"), [("127.0.0.1", False), ("", True)])
def test_manager_listens_only_on_the_bound_address(bind: str, on_other_address: bool) -> None:
    # 127.0.0.2 is loopback too on Linux: a second local address to try
    with Manager(0, host=bind) as m:
        assert reachable("127.0.0.1", m.port)
        assert reachable("127.0.0.2", m.port) is on_other_address
        assert m.listening == f"listening for workers on port {m.port}" + (
            " (127.0.0.1 only)" if bind else "")


def test_worker_says_once_that_the_manager_is_unreachable_and_backs_off(
        start_worker, tmp_path: Path, free_port: int) -> None:
    debug = tmp_path / "debug.log"
    proc = start_worker("-i", "0.05", "-b", "0.4", "--connect-timeout", "60", "-d", "all",
                        "-o", str(debug), "-s", str(tmp_path), "127.0.0.1", str(free_port))
    err = Lines(proc.stderr)

    def delays() -> list[float]:
        text = debug.read_text() if debug.exists() else ""
        return [float(x) for x in re.findall(r"retrying in ([0-9.]+)s", text)]

    wait_for(lambda: len(delays()) >= 5, 30, "five retries")
    assert delays()[:5] == [0.05, 0.1, 0.2, 0.4, 0.4]  # doubling up to -b
    # the manager comes up later: the retrying worker joins it
    with Manager(free_port, host="127.0.0.1") as m:
        wait_for(lambda: m.stats.workers_able == 1, 30, "the worker to connect")
        err.wait(rf"worker: connected to manager 127\.0\.0\.1:{free_port}$")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    said = [line for line in err.rest() if "cannot reach manager" in line]
    assert said == [f"worker: cannot reach manager 127.0.0.1:{free_port} (Connection refused); "
                    "retrying for up to 60 s"]


def _worker_argv(kind: str, tmp_path: Path, port: int) -> list[str]:
    # idle timeout long, connect timeout short: only the manager's going away can end it
    options = ["--idle-timeout", "120", "--connect-timeout", "2", "-s", str(tmp_path)]
    if kind == "reference":
        return ["work_queue_worker", *options, "-i", "1", "-b", "1", "127.0.0.1", str(port)]
    return [*TREADLE, "worker", *options, "-i", "0.1", "-b", "0.5", "127.0.0.1", str(port)]


@pytest.mark.parametrize("kind", ["treadle", pytest.param("reference", marks=[
    pytest.mark.reference,
    pytest.mark.skipif(shutil.which("work_queue_worker") is None, reason="no cctools")])])
def test_worker_exits_0_when_its_manager_finished_and_went_away(
        kind: str, tmp_path: Path, reference_env: dict) -> None:
    m = Manager(0, host="127.0.0.1")
    proc = subprocess.Popen(_worker_argv(kind, tmp_path, m.port), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=reference_env, start_new_session=True)
    try:
        wait_for(lambda: m.stats.workers_able == 1, 30, "the worker to connect")
        m.submit(Task("echo done"))
        assert m.wait(30).output == b"done\n"
        m.close()  # the workflow is over: release the worker and stop listening
        assert proc.wait(timeout=60) == 0
    finally:
        m.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if kind == "treadle":
        err = proc.stderr.read().decode()
        assert err.count("cannot reach manager") == 1, err


def test_worker_that_never_reached_a_manager_still_fails(
        start_worker, tmp_path: Path, free_port: int) -> None:
    proc = start_worker("--connect-timeout", "1", "-i", "0.1", "-b", "0.2", "-s", str(tmp_path),
                        "127.0.0.1", str(free_port))
    assert proc.wait(timeout=30) == 1
    assert proc.stderr.read().decode().count("cannot reach manager") == 1


def test_factory_warns_once_while_the_manager_is_unreachable(
        tmp_path: Path, free_port: int) -> None:
    debug = tmp_path / "factory.log"
    proc = subprocess.Popen(
        [*TREADLE, "factory", "-T", "local", "--interval", "0.1", "-d", "all", "-o", str(debug),
         "-s", str(tmp_path), "127.0.0.1", str(free_port)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    err = Lines(proc.stderr)
    try:
        err.wait(rf"^factory: warning: cannot reach manager 127\.0\.0\.1:{free_port} "
                 r"\(Connection refused\)")
        wait_for(lambda: debug.exists() and debug.read_text().count("not reachable") >= 3, 30,
                 "three looks at the manager in the debug log")
        with Manager(free_port, host="127.0.0.1"):
            err.wait(rf"^factory: manager 127\.0\.0\.1:{free_port} answers again$")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sum("cannot reach manager" in line for line in err.rest()) == 1


def test_status_flags_a_task_no_connected_worker_can_ever_fit(
        start_worker, tmp_path: Path) -> None:
    with Manager(0, host="127.0.0.1") as m:
        start_worker("--cores", "2", "--memory", "1000", "--disk", "1000", "-s", str(tmp_path),
                     "127.0.0.1", str(m.port))
        wait_for(lambda: m.stats.workers_able == 1, 30, "the worker to connect")
        huge = m.submit(Task("true", cores=64))
        busy = m.submit(Task("sleep 60", cores=2))
        queued = m.submit(Task("true", cores=1))  # waits for room, but fits one day
        picky = m.submit(Task("true", cores=1, features=("gpu-node",)))
        wait_for(lambda: m.stats.tasks_running == 1, 30, "the sleeping task to start")
        argv = [*TREADLE, "status", "127.0.0.1", str(m.port)]
        table = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        js = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=60)
    assert table.returncode == 0 and js.returncode == 0, table.stderr + js.stderr
    flagged = {t["taskid"]: t.get("never_fits") for t in json.loads(js.stdout)["tasks"]}
    assert flagged == {
        huge: "asks 64 cores, the largest connected worker has 2",
        busy: None, queued: None,
        picky: "needs features gpu-node",
    }
    assert (f"task {huge} can never run on the connected workers: asks 64 cores, "
            "the largest connected worker has 2") in table.stdout.splitlines()
    assert f"task {queued} can never" not in table.stdout
