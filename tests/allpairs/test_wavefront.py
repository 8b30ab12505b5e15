"""Wavefront against a sequential loop, resume from .partial, boundary errors (spec §3)."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest
from tests._wait import wait_for

from treadle.allpairs.wavefront import read_boundary, wavefront
from treadle.allpairs.wavefront_model import distributed_time, sweep_time
from treadle.errors import AllPairsError

from .conftest import TREADLE, make_script
from .test_distributed import kinds

A, B = "kitten", "sitting"
EDIT = (
    "A, B = 'kitten', 'sitting'\n"
    "def cell(x, y, left, bottom, diag):\n"
    "    same = A[x - 1] == B[y - 1]\n"
    "    return min(int(left) + 1, int(bottom) + 1, int(diag) + (0 if same else 1))\n"
)


def edge_file(path: Path) -> str:
    lines = [f"{x} 0 {x}" for x in range(len(A) + 1)] + [f"0 {y} {y}" for y in range(1, len(B) + 1)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def sequential() -> str:
    r = {(x, 0): x for x in range(len(A) + 1)} | {(0, y): y for y in range(len(B) + 1)}
    out = []
    for x in range(1, len(A) + 1):
        for y in range(1, len(B) + 1):
            same = A[x - 1] == B[y - 1]
            r[(x, y)] = min(r[(x - 1, y)] + 1, r[(x, y - 1)] + 1, r[(x - 1, y - 1)] + (not same))
    for x in range(1, len(A) + 1):
        for y in range(1, len(B) + 1):
            out.append(f"{x} {y} {r[(x, y)]}\n")
    return "".join(out)


def test_edit_distance_callable(tmp_path):
    (tmp_path / "ed.py").write_text(EDIT)
    edge = edge_file(tmp_path / "edge.txt")
    stats = wavefront(f"{tmp_path}/ed.py:cell", edge, 6, 7, output="d.txt", cores=2, quiet=True,
                      bitmap="grid.bmp")
    text = Path("d.txt").read_text()
    assert text == sequential()
    assert text.splitlines()[-1] == "6 7 3" and len(text.splitlines()) == 42
    assert stats["cells"] == 42
    assert Path("grid.bmp").read_bytes()[:2] == b"BM"
    assert not Path("d.txt.partial").exists()


def test_edit_distance_executable_cli(tmp_path):
    f = make_script(tmp_path / "cell.sh",
                    '#!/bin/sh\nA=kitten; B=sitting\n'
                    'a=$(printf %s "$A" | cut -c"$1"); b=$(printf %s "$B" | cut -c"$2")\n'
                    'l=$(cat "$3"); d=$(cat "$4"); g=$(cat "$5")\n'
                    '[ "$a" = "$b" ] && c=0 || c=1\n'
                    'm=$((l + 1)); [ $((d + 1)) -lt $m ] && m=$((d + 1)); '
                    '[ $((g + c)) -lt $m ] && m=$((g + c))\necho $m\n')
    edge = edge_file(tmp_path / "edge.txt")
    subprocess.run(TREADLE + ["wavefront", f, "6", "7", edge, "d.txt", "-c", "2"], check=True)
    assert Path("d.txt").read_text() == sequential()


def test_resume_from_partial(tmp_path):
    counter = tmp_path / "calls"
    (tmp_path / "ed.py").write_text(
        EDIT + f"def counted(x, y, left, bottom, diag):\n    open({str(counter)!r}, 'a').write('x')\n"
        "    return cell(x, y, left, bottom, diag)\n")
    edge = edge_file(tmp_path / "edge.txt")
    lines = sequential().splitlines(keepends=True)
    # a crash left 20 finished cells and half a line
    Path("d.txt.partial").write_text("".join(lines[:20:2] + lines[1:20:2]) + "6 7 9")
    wavefront(f"{tmp_path}/ed.py:counted", edge, 6, 7, output="d.txt", cores=1, quiet=True,
              comparison_time=0.01)
    assert counter.read_text() == "x" * 22
    assert Path("d.txt").read_text() == sequential()


def test_boundary_errors(tmp_path):
    with pytest.raises(AllPairsError, match=r"missing boundary cell\(s\) \(2, 0\), \(3, 0\)"):
        read_boundary({(0, 0): 0, (1, 0): 1, (0, 1): 1}, 3, 1)
    with pytest.raises(AllPairsError, match=r"interior cell\(s\) in the boundary: \(1, 1\)"):
        read_boundary({(0, 0): 0, (1, 0): 1, (0, 1): 1, (1, 1): 5}, 1, 1)
    Path("b.txt").write_text("0 0 a\n1 0 b\n0 1 c\nx y\n")
    with pytest.raises(AllPairsError, match=r"b.txt:4: expected 'x y value'"):
        read_boundary("b.txt", 1, 1)
    Path("e.txt").write_text("0 0 a\n1 0 b\n")
    run = subprocess.run(TREADLE + ["wavefront", "true", "1", "1", "e.txt", "o.txt"],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "missing boundary cell(s) (0, 1)" in run.stderr
    assert "Traceback" not in run.stderr


def test_failing_cell_is_named(tmp_path):
    (tmp_path / "bad.py").write_text("def f(x, y, l, b, d):\n    if (x, y) == (2, 1):\n"
                                     "        raise RuntimeError('nope')\n    return 0\n")
    with pytest.raises(AllPairsError, match=r"cell \(2, 1\).*nope"):
        wavefront(f"{tmp_path}/bad.py:f", {(x, 0): 0 for x in range(3)} | {(0, 1): 0}, 2, 1,
                  output="o.txt", quiet=True, comparison_time=0.1)


def test_model():
    assert sweep_time(30, 30, 2, 0.05) == pytest.approx(23.25)
    assert sweep_time(3, 2, 1, 1.0) == 6.0
    assert sweep_time(1, 1, 4, 2.0) == 2.0
    # one block holding everything on one worker: the local sweep plus the two dispatch costs
    assert distributed_time(4, 4, 4, 1, 2, 1.0) == pytest.approx(sweep_time(4, 4, 2, 1.0) + 0.1 + 10)


@pytest.mark.parametrize("kind", kinds())
def test_distributed_blocks(kind, tmp_path):
    """b×b blocks on a worker, computed by the shipped runner."""
    from .test_distributed import Workers
    (tmp_path / "ed.py").write_text(EDIT)
    edge = edge_file(tmp_path / "edge.txt")
    workers = Workers(tmp_path / "port", kind)
    threading.Thread(target=workers.start, daemon=True).start()
    try:
        stats = wavefront(f"{tmp_path}/ed.py:cell", edge, 6, 7, output="d.txt", mode="wq",
                          block=3, random_port_file=str(workers.port_file), host="127.0.0.1",
                          quiet=True, comparison_time=0.01, bitmap="grid.bmp")
    finally:
        workers.stop()
    assert stats["plan"]["mode"] == "wq"
    assert Path("grid.bmp").read_bytes()[:2] == b"BM"
    assert Path("d.txt").read_text() == sequential()


def test_distributed_publishes_workers_wanted(tmp_path):
    """k is the first worker's cores, and the plan's h is the manager's workers_wanted while
    blocks run (``treadle status``)."""
    from .test_distributed import Workers, run_until_published

    go = tmp_path / "go"
    (tmp_path / "ed.py").write_text(
        f"import os, time\nGO = {str(go)!r}\n" + EDIT.replace(
            "def cell(x, y, left, bottom, diag):\n",
            "def cell(x, y, left, bottom, diag):\n"
            "    while not os.path.exists(GO):\n        time.sleep(0.05)\n"))
    edge = edge_file(tmp_path / "edge.txt")
    workers = Workers(tmp_path / "port", "treadle")
    stats, published = run_until_published(
        lambda: wavefront(f"{tmp_path}/ed.py:cell", edge, 6, 7, output="d.txt", mode="wq",
                          block=2, cores=2, comparison_time=5.0,
                          random_port_file=str(workers.port_file), host="127.0.0.1",
                          quiet=True),
        workers, go, cores=3)
    # 3 x 4 blocks of 2 x 2 cells, 5 s a cell: three workers cover the widest anti-diagonal
    plan = stats["plan"]
    assert plan["k"] == 3 and plan["k_source"] == "first worker's report"
    assert published == plan["workers"] == 3
    assert Path("d.txt").read_text() == sequential()


def test_a_sh_cell_program_leaves_no_shell_behind_in_the_calling_process(tmp_path):
    """The reused shells end with the run, also the one that sampled on the caller's thread."""
    import gc

    import psutil

    cell = tmp_path / "cell"
    cell.write_text('#!/bin/sh\nread l < "$3"; read b < "$4"; echo $(( l + b ))\n')
    cell.chmod(0o755)
    edge = {(x, 0): x for x in range(5)} | {(0, y): y for y in range(1, 5)}
    wavefront(str(cell), edge, 4, 4, output=str(tmp_path / "w.txt"), cores=2, mode="local",
              quiet=True)
    assert (tmp_path / "w.txt").read_text().strip()
    gc.collect()
    assert [p.name() for p in psutil.Process().children() if p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE] == []


@pytest.mark.parametrize("kind", kinds())
def test_a_failed_block_is_retried_on_another_worker(kind, tmp_path):
    """F fails on every block on one worker (a broken host); each retry goes to the other
    worker, although the broken one is idle and holds the runner and F already (issue 10: 4,
    the behaviour All-Pairs has had since its spec §2.5)."""
    from .test_distributed import Workers

    go, broken = tmp_path / "go", tmp_path / "broken-calls"
    (tmp_path / "ed.py").write_text(
        f"import os, time\nGO, BROKEN = {str(go)!r}, {str(broken)!r}\n" + EDIT.replace(
            "def cell(x, y, left, bottom, diag):\n",
            "def cell(x, y, left, bottom, diag):\n"
            "    while not os.path.exists(GO):\n        time.sleep(0.05)\n"
            "    if 'brokenhost' in os.getcwd():\n"
            "        open(BROKEN, 'a').write('x')\n        raise RuntimeError('broken host')\n"
            "    time.sleep(0.1)\n"))
    edge = edge_file(tmp_path / "edge.txt")
    (tmp_path / "brokenhost").mkdir()
    (tmp_path / "sound").mkdir()
    workers = Workers(tmp_path / "port", kind)
    outcome: dict = {}

    def run() -> None:
        try:  # F is sampled here, and waits for GO: no block goes out before both workers are in
            outcome["stats"] = wavefront(f"{tmp_path}/ed.py:cell", edge, 6, 7, output="d.txt",
                                         mode="wq", block=2, retries=2, host="127.0.0.1",
                                         random_port_file=str(workers.port_file), quiet=True)
        except BaseException as e:  # handed to the test's thread
            outcome["error"] = e

    engine = threading.Thread(target=run, daemon=True)
    engine.start()
    try:
        workers.start(cores=1, workdir=tmp_path / "brokenhost")
        workers.start(cores=1, workdir=tmp_path / "sound")

        def both_reported() -> bool:
            assert engine.is_alive(), outcome
            status = subprocess.run(TREADLE + ["status", "127.0.0.1", workers.port(), "--json"],
                                    capture_output=True, text=True)
            return status.returncode == 0 and sum(
                1 for w in json.loads(status.stdout)["workers"] if w.get("cores_total")) == 2

        wait_for(both_reported, timeout=60, what="both workers to report to the manager",
                 interval=0.1)
        go.touch()
        engine.join(120)
    finally:
        go.touch()
        workers.stop()
    assert "error" not in outcome, outcome
    assert broken.exists()  # the broken host did get blocks, and failed them
    assert Path("d.txt").read_text() == sequential()
