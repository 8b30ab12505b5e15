"""Crash resume at block granularity (spec §2.9): kill -9, rerun, count F calls."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tests._wait import processes_in, wait_for

from treadle.allpairs import allpairs
from treadle.errors import AllPairsError

from .conftest import TREADLE, make_script, write_items, write_list


def journal_lines(path: Path) -> int:
    return path.read_text().count("done ") if path.exists() else 0


@pytest.mark.slow
def test_kill_9_and_resume(tmp_path):
    paths = write_items(tmp_path / "d", [bytes([k]) * (k + 1) for k in range(12)])
    listed = write_list(tmp_path / "set.list", paths)
    counter = tmp_path / "calls"
    f = make_script(tmp_path / "f.sh", f'#!/bin/sh\necho x >> "{counter}"\nsleep 0.04\n'
                    'cat "$1" "$2" | wc -c\n')
    argv = TREADLE + ["allpairs", listed, listed, f, "-o", "m.txt", "-x", "3", "-y", "3",
                      "-c", "2", "-t", "0.04"]
    engine = subprocess.Popen(argv, start_new_session=True, stderr=subprocess.DEVNULL)
    journal = Path("m.txt.apstate/journal")
    deadline = time.monotonic() + 60
    while journal_lines(journal) < 8 and time.monotonic() < deadline and engine.poll() is None:
        time.sleep(0.02)
    os.killpg(engine.pid, signal.SIGKILL)
    engine.wait()
    wait_for(lambda: not processes_in(Path.cwd()), 10, "the killed run's processes to end")
    done = journal_lines(journal)
    assert 0 < done < 16, "the run was not killed in the middle"
    assert not Path("m.txt").exists()
    first = counter.read_text().count("x")
    counter.unlink()
    subprocess.run(argv, check=True, stderr=subprocess.DEVNULL)
    rerun = counter.read_text().count("x")
    assert rerun == 144 - 9 * done
    assert first + rerun <= 144 + 2 * 2 * 9  # at most the blocks in flight were lost
    sizes = [Path(p).stat().st_size for p in paths]
    want = "".join(f"{a}\t{b}\t{sizes[i] + sizes[j]}\n" for i, a in enumerate(paths)
                   for j, b in enumerate(paths))
    assert Path("m.txt").read_text() == want
    assert not Path("m.txt.apstate").exists()


def test_changed_inputs_refuse_resume(tmp_path):
    paths = write_items(tmp_path / "d", [b"a", b"bb", b"ccc"])
    listed = write_list(tmp_path / "set.list", paths)
    allpairs(listed, listed, "BITWISE", output="m.txt", keep_state=True, quiet=True)
    assert Path("m.txt.apstate/plan.json").exists()
    Path(paths[1]).write_bytes(b"bbbb")
    with pytest.raises(AllPairsError, match="different run.*--restart"):
        allpairs(listed, listed, "BITWISE", output="m.txt", quiet=True)
    run = subprocess.run(TREADLE + ["allpairs", listed, listed, "BITWISE", "-o", "m.txt"],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "--restart" in run.stderr
    allpairs(listed, listed, "BITWISE", output="m.txt", restart=True, quiet=True)
    assert Path("m.txt").read_text().splitlines()[1].endswith("\t4")


def test_resume_reuses_plan_and_skips_done_blocks(tmp_path):
    paths = write_items(tmp_path / "d", [bytes([k]) * 3 for k in range(6)])
    counter = tmp_path / "calls"
    f = make_script(tmp_path / "f.sh", f'#!/bin/sh\necho x >> "{counter}"\n'
                    'case "$1$2" in *item005*item005*) [ -e ok ] || exit 1;; esac\necho 1\n')
    with pytest.raises(AllPairsError, match=r"pair \(5, 5\)"):
        allpairs(paths, paths, f, output="m.txt", block=2, cores=1, comparison_time=0.01,
                 retries=1, quiet=True)
    counter.unlink()
    Path("ok").touch()
    result = allpairs(paths, paths, f, output="m.txt", block=2, cores=1, quiet=True)
    assert result.stats["resumed"] and result.stats["blocks"] == 1
    assert counter.read_text().count("x") == 4
    assert Path("m.txt").read_text().count("\t1\n") == 36


def test_resumed_run_with_nothing_left_needs_no_port(tmp_path):
    """All blocks journalled: a -T wq rerun assembles without listening (the port is taken)."""
    import socket

    paths = write_items(tmp_path / "d", [bytes([k]) * 3 for k in range(5)])
    first = allpairs(paths, paths, "BITWISE", output="m.txt", block=2, mode="local",
                     keep_state=True, quiet=True)
    table = Path("m.txt").read_text()
    Path("m.txt").unlink()
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        again = allpairs(paths, paths, "BITWISE", output="m.txt", mode="wq",
                         port=busy.getsockname()[1], quiet=True)
    assert again.stats["resumed"] and again.stats["blocks"] == 0
    assert again.stats["blocks_total"] == first.stats["blocks_total"] == 9
    assert Path("m.txt").read_text() == table
