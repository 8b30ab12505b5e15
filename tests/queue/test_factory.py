"""The worker factory against real managers: it grows the pool for waiting tasks, and the
workers leave when idle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tests._wait import alive, wait_for
from tests.queue.conftest import pick_free_port

from treadle.queue.factory import Factory, FactoryConfig, query_status
from treadle.queue.protocol import ProtocolError
from treadle.queue.providers import JobState, Provider, WorkerSpec, get_provider
from treadle.queue.providers.local import LocalProvider


def start_factory(tmp_path: Path, port: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "treadle", "factory", "-T", "local", "--interval", "0.3",
         "-s", str(tmp_path), *extra, "127.0.0.1", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def stop_factory(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return out


def started_pids(out: str) -> list[int]:
    """The pids of ``factory: submitted 2 workers as 123,124 (2/2)`` lines."""
    return [int(pid) for line in out.splitlines() if line.startswith("factory: submitted")
            for pid in line.split()[5].split(",")]


def workers_using(scratch: Path) -> list[int]:
    """Worker processes whose command line names ``scratch`` (their ``-s`` directory)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if str(scratch).encode() in argv and b"worker" in argv and alive(int(entry)):
            found.append(int(entry))
    return found


def test_local_provider_follows_the_interface(tmp_path: Path, free_port: int) -> None:
    provider = get_provider("local", batch_dir=str(tmp_path / "batch"))
    assert isinstance(provider, Provider) and isinstance(provider, LocalProvider)
    spec = WorkerSpec(args=("--connect-timeout", "30", "-s", str(tmp_path), "127.0.0.1", str(free_port)),
                      cores=1)
    jobs = provider.submit(spec, 2)
    assert len(jobs) == 2 and provider.status(jobs) == {job: JobState.RUNNING for job in jobs}
    provider.cancel(jobs[:1])
    wait_for(lambda: provider.status(jobs[:1])[jobs[0]] is JobState.DONE, 15, "the cancelled job to end")
    assert provider.status(["no-such-job"]) == {"no-such-job": JobState.DONE}
    assert provider.status(jobs[1:]) == {jobs[1]: JobState.RUNNING}
    log = provider.log_path(jobs[1])
    assert log is not None and os.path.dirname(log) == str(tmp_path / "batch" / "logs")
    provider.close()
    wait_for(lambda: provider.status(jobs[1:])[jobs[1]] is JobState.DONE, 15, "close() to end the rest")


def test_target_follows_waiting_tasks_within_bounds(tmp_path: Path) -> None:
    f = Factory(FactoryConfig("h", 1, min_workers=1, max_workers=4, cores=2),
                get_provider("local", batch_dir=str(tmp_path)))
    assert f.target(None) == 1
    assert f.target({"tasks_waiting": 0, "tasks_on_workers": 0}) == 1
    assert f.target({"tasks_waiting": 5, "tasks_on_workers": 0}) == 3
    assert f.target({"tasks_waiting": 50, "tasks_on_workers": 2}) == 4
    assert f.target({"tasks_waiting": 50, "workers_wanted": 2}) == 2
    assert f.target({"tasks_waiting": 0, "workers_wanted": 9}) == 4
    assert f.target({"tasks_waiting": 9, "workers_wanted": 0}) == 1


def test_factory_follows_the_workers_the_manager_wants(tmp_path: Path) -> None:
    from treadle.queue import Manager

    with Manager(port=0, host="127.0.0.1") as m:
        assert "workers_wanted" not in query_status("127.0.0.1", m.port)[0]
        m.workers_wanted = 3  # no task queued: only the published wish asks for workers
        assert query_status("127.0.0.1", m.port)[0]["workers_wanted"] == 3
        config = FactoryConfig("127.0.0.1", m.port, max_workers=5, worker_timeout=30,
                               workdir=str(tmp_path), interval=0.1)
        rounds = []  # one entry per status the factory got: each is one round of it

        def counted() -> dict:
            status = query_status("127.0.0.1", m.port)[0]
            rounds.append(status)
            return status

        factory = Factory(config, get_provider("local", batch_dir=str(tmp_path / "batch")), status=counted)
        runner = threading.Thread(target=factory.run)
        runner.start()
        try:
            wait_for(lambda: m.stats.workers_connected == 3, 30, "three workers")
            seen = len(rounds)
            # three more rounds of the factory with three workers connected: still three
            wait_for(lambda: len(rounds) >= seen + 3, 30, "three more rounds of the factory")
            assert m.stats.workers_connected == 3
            assert factory.started == 3
        finally:
            factory.stop()
            runner.join(60)


@pytest.mark.reference
def test_factory_serves_makeflow_up_to_max_workers(tmp_path: Path, start_makeflow) -> None:
    (tmp_path / "Makeflow").write_text("".join(
        f"o{i}:\n\tsleep 1; echo {i} > o{i}\n" for i in range(6)))
    mf, port = start_makeflow("Makeflow", cwd=tmp_path)
    factory = start_factory(tmp_path, port, "--max-workers", "3", "--cores", "1", "-t", "2")
    try:
        mf.communicate(timeout=90)
        assert all((tmp_path / f"o{i}").read_text() == f"{i}\n" for i in range(6))
    finally:
        out = stop_factory(factory)
    pids = started_pids(out)
    assert len(pids) == 3, out  # six waiting tasks, at most three workers
    wait_for(lambda: not any(alive(pid) for pid in pids), 20, "the factory's workers to end")


def test_factory_workers_leave_when_idle_under_treadle_manager(tmp_path: Path) -> None:
    from treadle.queue import Manager, Task

    with Manager(port=0, host="127.0.0.1") as m:
        factory = start_factory(tmp_path, m.port, "--max-workers", "2", "--cores", "1",
                                "-t", "1.5")
        try:
            for i in range(4):
                m.submit(Task(f"sleep 0.3; echo {i}", cores=1))
            done = []
            deadline = time.monotonic() + 60
            while not m.empty() and time.monotonic() < deadline:
                t = m.wait(timeout=1)
                if t is not None:
                    done.append(t.output)
            assert sorted(done) == [b"0\n", b"1\n", b"2\n", b"3\n"]
            status = query_status("127.0.0.1", m.port)[0]
            assert status["tasks_waiting"] == 0
            # the manager stays up; the idle workers leave and are not replaced
            wait_for(lambda: m.stats.workers_connected == 0, 20, "the idle workers to leave")
            # ...and exit by themselves, before the factory stops (which would cancel them)
            wait_for(lambda: not workers_using(tmp_path), 20, "the idle workers to exit")
        finally:
            out = stop_factory(factory)
    pids = started_pids(out)
    assert 1 <= len(pids) <= 2, out
    wait_for(lambda: not any(alive(pid) for pid in pids), 20, "the idle workers to exit")
    assert not any(os.path.basename(p).startswith("worker-") for p in os.listdir(tmp_path))


@pytest.mark.reference
def test_status_query_passes_the_password_step_of_makeflow(tmp_path: Path,
                                                           start_makeflow) -> None:
    (tmp_path / "Makeflow").write_text("x:\n\techo x > x\n")
    (tmp_path / "pw.txt").write_text("pw\n")
    _, port = start_makeflow("Makeflow", "--password", "pw.txt", cwd=tmp_path)
    (status,) = query_status("127.0.0.1", port, b"pw\n")[:1]
    assert status["tasks_waiting"] == 1
    with pytest.raises((OSError, ProtocolError)):
        query_status("127.0.0.1", port, b"wrong\n")


def test_factory_with_a_tls_manager(tmp_path: Path, tls_server) -> None:
    from treadle.queue import Manager, Task

    server, cert = tls_server
    with Manager(port=0, host="127.0.0.1", ssl=server) as m:
        m.submit(Task("echo tls", cores=1))
        assert query_status("127.0.0.1", m.port, tls_ca=str(cert))[0]["tasks_waiting"] == 1
        factory = start_factory(tmp_path, m.port, "--max-workers", "1", "--cores", "1",
                                "-t", "2", "--tls-ca", str(cert))
        try:
            done = m.wait(timeout=60)
            assert done is not None and done.output == b"tls\n"
        finally:
            out = stop_factory(factory)
    assert len(started_pids(out)) == 1, out


@pytest.mark.reference
def test_factory_finds_the_manager_through_a_local_catalog(tmp_path: Path, reference_env: dict) -> None:
    from treadle.queue import Manager, Task

    free_port = _two_free_ports()  # catalog_server listens on the port and on the next one

    catalog = subprocess.Popen(["catalog_server", "-I", "127.0.0.1", "-p", str(free_port),
                                "-u", f"127.0.0.1:{free_port}"], env=reference_env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    where = f"127.0.0.1:{free_port}"
    try:
        # the manager announces itself (UDP) at once: the catalog must be listening by then
        wait_for(lambda: _answers(where), 20, "the catalog server to answer")
        with Manager(port=0, name=f"treadle-factory-{free_port}", catalog=where) as m:
            m.submit(Task("echo catalogued", cores=1))
            factory = subprocess.Popen(
                [sys.executable, "-m", "treadle", "factory", "-T", "local", "--interval", "0.3",
                 "-s", str(tmp_path), "--max-workers", "1", "--cores", "1", "-t", "5",
                 "-M", "treadle-factory-.*", "--catalog", where],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                env=reference_env)
            try:
                done = m.wait(timeout=60)
                assert done is not None and done.output == b"catalogued\n"
            finally:
                out = stop_factory(factory)
    finally:
        catalog.kill()
        catalog.wait()
    assert len(started_pids(out)) == 1, out


def _answers(catalog: str) -> bool:
    from treadle.errors import TreadleError
    from treadle.queue.status import query_catalog

    try:
        query_catalog(catalog, timeout=1)
    except TreadleError:
        return False
    return True


def _two_free_ports() -> int:
    """A port ``p`` such that ``p`` and ``p + 1`` are both free for TCP and UDP now."""
    import socket

    while True:
        p = pick_free_port()
        try:
            for port in (p, p + 1):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return p
