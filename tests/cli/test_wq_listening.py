"""The Work Queue managers of ``treadle run -T wq``, ``allpairs`` and ``wavefront`` say
where workers must connect, listen where told (``--bind``), and the abstractions take
``--password`` while ``-P`` keeps meaning priority (issue 11 item 2, issue 9)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from tests._lines import Lines

ROOT = Path(__file__).resolve().parents[2]
TREADLE = [sys.executable, "-m", "treadle"]


@pytest.fixture
def procs():
    """Start processes in their own session; kill what is still running at teardown."""
    started: list[subprocess.Popen] = []

    def start(argv: list[str], cwd: Path, **popen) -> subprocess.Popen:
        # the workers' python3 runs F's shipped runner, which imports treadle
        path = [p for p in (os.environ.get("PYTHONPATH"), str(ROOT / "src")) if p]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
        proc = subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=True,
                                stdin=subprocess.DEVNULL, **popen)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def worker(port: int, tmp_path: Path, *extra: str) -> list[str]:
    return [*TREADLE, "worker", "--single-shot", "--cores", "1", "-t", "60", "-s", str(tmp_path),
            *extra, "127.0.0.1", str(port)]


def refused(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_run_wq_prints_the_port_it_picked_and_listens_only_where_bound(procs, tmp_path: Path) -> None:
    (tmp_path / "wf.mf").write_text("out.txt:\n\techo hi > out.txt\n")
    run = procs([*TREADLE, "run", "-T", "wq", "-p", "0", "--bind", "127.0.0.1", "wf.mf"],
                tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = Lines(run.stdout).wait(r"^listening for workers on port (\d+) \(127\.0\.0\.1 only\)\.$")
    port = int(line.group(1))
    assert port != 0
    assert refused("127.0.0.2", port)  # another loopback address of this host
    procs(worker(port, tmp_path), tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert run.wait(timeout=60) == 0, run.stderr.read()
    assert (tmp_path / "out.txt").read_text() == "hi\n"


def test_run_help_says_where_the_manager_listens() -> None:
    out = subprocess.run([*TREADLE, "run", "--help"], capture_output=True, text=True, timeout=60)
    text = " ".join(out.stdout.split())  # the help wraps at the terminal's width
    assert "listens on every interface" in text
    assert "--bind ADDRESS" in text


def _script(path: Path, body: str) -> str:
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _allpairs(tmp_path: Path) -> tuple[list[str], str]:
    for k in range(3):
        (tmp_path / f"item{k}").write_text("x" * (k + 1))
    (tmp_path / "set.list").write_text("".join(f"item{k}\n" for k in range(3)))
    f = _script(tmp_path / "sizes.sh", '#!/bin/sh\ncat "$1" "$2" | wc -c\n')
    argv = ["allpairs", "set.list", "set.list", f, "-o", "out.txt", "-t", "0.01", "-x", "3"]
    expect = "".join(f"item{i}\titem{j}\t{i + j + 2}\n" for i in range(3) for j in range(3))
    return argv, expect


def _wavefront(tmp_path: Path) -> tuple[list[str], str]:
    # R[x][y] = max of the three neighbours + 1 = x + y - 1, from a boundary of zeros
    f = _script(tmp_path / "step.sh",
                '#!/bin/sh\nm=$(cat "$3" "$4" "$5" | sort -n | tail -n 1)\necho $((m + 1))\n')
    (tmp_path / "edge.txt").write_text(
        "".join(f"{x} 0 0\n" for x in range(4)) + "".join(f"0 {y} 0\n" for y in range(1, 4)))
    argv = ["wavefront", f, "3", "3", "edge.txt", "out.txt", "-t", "0.01", "--block", "3"]
    expect = "".join(f"{x} {y} {x + y - 1}\n" for x in range(1, 4) for y in range(1, 4))
    return argv, expect


@pytest.mark.parametrize("make", [_allpairs, _wavefront], ids=["allpairs", "wavefront"])
def test_abstraction_prints_its_port_and_takes_only_workers_with_the_password(
        make, procs, tmp_path: Path) -> None:
    argv, expect = make(tmp_path)
    (tmp_path / "pw").write_text("sesame\n")
    name = argv[0]
    # -P 5 is a priority here (as in the reference's allpairs_master): no file "5" is read
    run = procs([*TREADLE, *argv, "-T", "wq", "-p", "0", "--bind", "127.0.0.1",
                 "--password", "pw", "-P", "5"],
                tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = Lines(run.stderr)
    line = err.wait(rf"^{name}: listening for workers on port (\d+) \(127\.0\.0\.1 only\)$")
    port = int(line.group(1))
    assert refused("127.0.0.2", port)
    stranger = procs(worker(port, tmp_path), tmp_path,
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert stranger.wait(timeout=60) != 0  # refused: it has no password
    assert run.poll() is None
    procs(worker(port, tmp_path, "-P", "pw"), tmp_path,
          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert run.wait(timeout=120) == 0, err.rest()
    assert (tmp_path / "out.txt").read_text() == expect


@pytest.mark.parametrize("name", ["allpairs", "wavefront"])
def test_abstraction_help_documents_password_and_priority(name: str) -> None:
    out = subprocess.run([*TREADLE, name, "--help"], capture_output=True, text=True, timeout=60)
    text = " ".join(out.stdout.split())
    assert "--password FILE" in text and "-P, --priority" in text
    assert "-P means priority here" in text and "listens on every interface" in text
    assert "--bind ADDRESS" in text
