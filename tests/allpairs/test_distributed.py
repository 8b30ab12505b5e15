"""Distributed mode against real workers on 127.0.0.1 (spec §2.5, §4.4)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tests._wait import wait_for

from treadle.allpairs import allpairs

from .conftest import TREADLE, make_script, write_items, write_list

REFERENCE = shutil.which("work_queue_worker")


def have_treadle_worker() -> bool:
    import importlib.util

    return importlib.util.find_spec("treadle.cli.worker") is not None


def worker_command(kind: str, port: str, cores: int = 2, disk_mb: int | None = None) -> list[str]:
    disk = ["--disk", str(disk_mb)] if disk_mb else []
    if kind == "reference":
        return ["work_queue_worker", "--single-shot", "--cores", str(cores), *disk, "-t", "60",
                "127.0.0.1", port]
    return [sys.executable, "-m", "treadle", "worker", "--single-shot", "--cores", str(cores),
            *disk, "-t", "60", "127.0.0.1", port]


class Workers:
    """Starts workers once the engine has written its port file; kills them at the end."""

    def __init__(self, port_file: Path, kind: str):
        self.port_file = port_file
        self.kind = kind
        self.procs: list[subprocess.Popen] = []

    def port(self) -> str:
        return wait_for(lambda: self.port_file.exists() and self.port_file.read_text().strip(),
                        30, "the engine's port file")

    def start(self, cores: int = 2, disk_mb: int | None = None,
              workdir: Path | None = None) -> subprocess.Popen:
        command = worker_command(self.kind, self.port(), cores, disk_mb)
        if workdir is not None:
            command[-2:-2] = ["-s", str(workdir)]  # an option before HOST PORT
        proc = subprocess.Popen(command,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_until_published(call, workers: Workers, go: Path, **worker_options):
    """Run ``call`` (an engine whose F waits for the file ``go``) on a thread while one
    worker serves it; poll ``treadle status`` until the manager publishes
    ``workers_wanted``, then let F go. Returns (what ``call`` returned, the published value)."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as e:  # handed to the test's thread
            outcome["error"] = e

    engine = threading.Thread(target=run, daemon=True)
    engine.start()
    published = None
    try:
        workers.start(**worker_options)
        deadline = time.monotonic() + 60
        while published is None and time.monotonic() < deadline and engine.is_alive():
            status = subprocess.run(TREADLE + ["status", "127.0.0.1", workers.port(), "--json"],
                                    capture_output=True, text=True)
            if status.returncode == 0:
                published = json.loads(status.stdout)["queue"].get("workers_wanted")
            time.sleep(0.1)
        go.touch()
        engine.join(120)
    finally:
        go.touch()
        workers.stop()
    assert "error" not in outcome, outcome
    return outcome["value"], published


def kinds() -> list:
    out = [pytest.param("reference", marks=[pytest.mark.reference,
                                            pytest.mark.skipif(REFERENCE is None, reason="no cctools")])]
    out.append(pytest.param("treadle", marks=pytest.mark.skipif(
        not have_treadle_worker(), reason="treadle worker not in the tree yet")))
    return out


@pytest.mark.parametrize("kind", kinds())
def test_blocks_on_a_worker_equal_local(kind, tmp_path):
    """Executable and callable F run by the shipped runner; each item sent once."""
    paths = write_items(tmp_path / "d", [bytes([k % 7]) * 65536 for k in range(12)])
    listed = write_list(tmp_path / "set.list", paths)
    fns = tmp_path / "fns.py"
    fns.write_text("from treadle.allpairs import takes_bytes\n@takes_bytes\n"
                   "def ham(a, b):\n    return sum(x != y for x, y in zip(a[:64], b[:64]))\n")
    sh = make_script(tmp_path / "sizes.sh", '#!/bin/sh\ncat "$1" "$2" | wc -c\n')
    local_ham = allpairs(listed, listed, f"{fns}:ham", quiet=True, output="lh.txt")
    for name, f in (("sh", sh), ("py", f"{fns}:ham")):
        workers = Workers(tmp_path / f"port-{name}", kind)
        threading.Thread(target=workers.start, daemon=True).start()
        try:
            result = allpairs(listed, listed, f, mode="wq", random_port_file=str(workers.port_file),
                              host="127.0.0.1", block=4, comparison_time=0.01,
                              output=f"{name}.txt", quiet=True)
        finally:
            workers.stop()
        assert result.stats["mode"] == "wq" and result.stats["workers"] == 1
        assert result.stats["bytes_sent_ratio"] < 1.06, result.stats
        if name == "py":
            assert Path("py.txt").read_text() == Path(local_ham.output).read_text()
        else:
            assert Path("sh.txt").read_text().count(f"\t{2 * 65536}\n") == 144


@pytest.mark.parametrize("kind", kinds())
def test_symmetric_on_a_worker(kind, tmp_path):
    paths = write_items(tmp_path / "d", [bytes([k]) * (k + 3) for k in range(7)])
    listed = write_list(tmp_path / "set.list", paths)
    workers = Workers(tmp_path / "port", kind)
    threading.Thread(target=workers.start, daemon=True).start()
    try:
        result = allpairs(listed, listed, "BITWISE", mode="wq", symmetric=True,
                          random_port_file=str(workers.port_file), host="127.0.0.1", block=3,
                          comparison_time=0.01, output="s.txt", quiet=True)
    finally:
        workers.stop()
    assert result.stats["pairs"] == 28
    allpairs(listed, listed, "BITWISE", output="l.txt", quiet=True)
    assert Path("s.txt").read_text() == Path("l.txt").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("kind", kinds())
def test_worker_killed_mid_block(kind, tmp_path):
    """Kill the worker running a block; a second worker finishes the run."""
    paths = write_items(tmp_path / "d", [bytes([k]) for k in range(4)])
    listed = write_list(tmp_path / "set.list", paths)
    started = tmp_path / "started"
    f = make_script(tmp_path / "slow.sh", f'#!/bin/sh\ntouch "{started}"\nsleep 0.3\necho 1\n')
    workers = Workers(tmp_path / "port", kind)

    def choreography():
        first = workers.start()
        wait_for(started.exists, 60, "a block to start on the first worker")
        os.killpg(first.pid, signal.SIGKILL)
        workers.start()

    threading.Thread(target=choreography, daemon=True).start()
    try:
        result = allpairs(listed, listed, f, mode="wq", random_port_file=str(workers.port_file),
                          host="127.0.0.1", block=2, comparison_time=0.3, output="o.txt",
                          quiet=True)
    finally:
        workers.stop()
    assert Path("o.txt").read_text().count("\t1\n") == 16
    assert result.stats["blocks"] == 4


@pytest.mark.parametrize("kind", kinds())
def test_failing_pair_on_a_worker(kind, tmp_path):
    from treadle.errors import AllPairsError

    paths = write_items(tmp_path / "d", [b"a", b"b", b"c"])
    f = make_script(tmp_path / "f.sh", '#!/bin/sh\ncase "$2" in *item002*) echo bad >&2; exit 4;; '
                    'esac\necho 0\n')
    workers = Workers(tmp_path / "port", kind)
    threading.Thread(target=workers.start, daemon=True).start()
    try:
        with pytest.raises(AllPairsError, match=r"pair \(0, 2\).*exit status 4.*bad"):
            allpairs(paths, paths, f, mode="wq", random_port_file=str(workers.port_file),
                     host="127.0.0.1", block=3, comparison_time=0.01, retries=2,
                     output="o.txt", quiet=True)
    finally:
        workers.stop()


@pytest.mark.parametrize("kind", kinds())
def test_first_worker_sizes_blocks_and_h_star_is_published(kind, tmp_path):
    """k comes from the first worker's report, its disk caps the block side, and h* is the
    manager's workers_wanted while blocks run; finished tasks measure d_task."""
    paths = write_items(tmp_path / "d", [bytes([k]) * 131072 for k in range(12)])
    listed = write_list(tmp_path / "set.list", paths)
    go = tmp_path / "go"
    f = make_script(tmp_path / "gate.sh", f'#!/bin/sh\nwhile [ ! -e "{go}" ]; do sleep 0.05; done\n'
                    'cat "$1" "$2" | wc -c\n')
    workers = Workers(tmp_path / "port", kind)
    result, published = run_until_published(
        lambda: allpairs(listed, listed, f, mode="wq", random_port_file=str(workers.port_file),
                         host="127.0.0.1", comparison_time=1.0,
                         output=str(tmp_path / "o.txt"), quiet=True),
        workers, go, cores=3, disk_mb=2)
    plan = result.plan
    assert plan.k == 3 and plan.k_source == "first worker's report"
    # 50% of a 2 MB disk holds x + y items of 128 KiB: 4 per side, where the model
    # alone (c* = 72 cells) would have allowed 8 x 8
    assert (plan.x, plan.y) == (4, 4) and plan.side_cap_by == "worker disk"
    assert published == min(plan.h_star, plan.blocks) and published >= 1
    assert result.stats["k_worker"] == 3 and result.stats["d_task"] >= 0
    assert Path(tmp_path / "o.txt").read_text().count(f"\t{2 * 131072}\n") == 144


@pytest.mark.parametrize("kind", kinds())
def test_a_failed_block_is_retried_on_another_worker(kind, tmp_path):
    """Spec §2.5: F fails on every block on one worker (a broken host); each retry goes
    to the other worker, although the broken one holds the block's inputs already."""
    paths = write_items(tmp_path / "d", [bytes([k]) for k in range(4)])
    listed = write_list(tmp_path / "set.list", paths)
    f = make_script(tmp_path / "f.sh", '#!/bin/sh\ncase "$PWD" in *brokenhost*) '
                    'echo broken >&2; exit 5;; esac\necho 1\n')
    (tmp_path / "brokenhost").mkdir()
    (tmp_path / "sound").mkdir()
    workers = Workers(tmp_path / "port", kind)

    def start_both():
        workers.start(cores=1, workdir=tmp_path / "brokenhost")
        workers.start(cores=1, workdir=tmp_path / "sound")

    threading.Thread(target=start_both, daemon=True).start()
    try:
        result = allpairs(listed, listed, f, mode="wq", random_port_file=str(workers.port_file),
                          host="127.0.0.1", block=2, comparison_time=0.01, retries=2,
                          output="o.txt", quiet=True)
    finally:
        workers.stop()
    assert Path("o.txt").read_text().count("\t1\n") == 16
    assert result.stats["blocks"] == 4
