"""Progress on stderr (spec §2.9, §3.2): plain lines off a terminal, a rich line on one."""

from __future__ import annotations

import io
import subprocess

from rich.console import Console
from tests._wait import wait_for

from treadle.allpairs.progress import Progress, WaveProgress

from .conftest import TREADLE, make_script, write_list


def terminal(buffer: io.StringIO) -> Console:
    return Console(file=buffer, force_terminal=True, width=120)


def test_allpairs_plain_line_from_a_cli_run(items, tmp_path):
    listed = write_list(tmp_path / "set.list", items)
    run = subprocess.run(TREADLE + ["allpairs", listed, listed, "BITWISE", "-o", "o.txt",
                                    "-x", "2", "-y", "3", "-T", "local", "-c", "2"],
                         capture_output=True, text=True, cwd=tmp_path, check=True)
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("allpairs: blocks 6/6, "), run.stderr
    assert "pairs/s" in last and "ETA 0:00:00" in last and last.endswith("2 processes")
    assert "\x1b[" not in run.stderr and "━" not in run.stderr  # no terminal codes in a pipe


def test_wavefront_plain_line_from_a_cli_run(tmp_path):
    edge = tmp_path / "edge.txt"
    edge.write_text("".join(f"{x} 0 {x}\n" for x in range(4))
                    + "".join(f"0 {y} {y}\n" for y in range(1, 4)))
    step = make_script(tmp_path / "step.sh", '#!/bin/sh\necho $(( $(cat "$3") + 1 ))\n')
    run = subprocess.run(TREADLE + ["wavefront", step, "3", "3", str(edge), "out.txt", "-c", "2",
                                    "-T", "local"],
                         capture_output=True, text=True, cwd=tmp_path, check=True)
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("wavefront: 100% complete, "), run.stderr
    assert "elapsed, 0 cells running, 0 ready, 2 processes" in last
    assert "\x1b[" not in run.stderr


def test_plain_lines_repeat_every_interval():
    out = io.StringIO()
    p = Progress(4, 40, stream=out, interval=0.02)
    p.workers = 3
    p.advance(1, 10)
    wait_for(lambda: out.getvalue().count("\n") >= 2, 30, "two progress lines")
    assert out.getvalue().startswith("allpairs: blocks 1/4, ")
    p.advance(3, 30)
    p.stop()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3
    assert lines[-1].startswith("allpairs: blocks 4/4, ") and lines[-1].endswith("3 workers")
    p.stop()  # stopping twice prints nothing more
    assert out.getvalue().splitlines() == lines


def test_allpairs_rich_line_on_a_terminal():
    buffer = io.StringIO()
    p = Progress(4, 40, console=terminal(buffer))
    p.workers = 2
    p.advance(2, 20)
    p.stop()
    text = buffer.getvalue()
    assert "\x1b[" in text and "━" in text
    assert "blocks 2/4" in text and "pairs/s" in text and "ETA" in text and "2 workers" in text


def test_wavefront_rich_line_on_a_terminal():
    buffer = io.StringIO()
    p = WaveProgress(10, console=terminal(buffer))
    p.cells, p.running, p.ready, p.workers = 5, 2, 1, 1
    p.stop()
    text = buffer.getvalue()
    assert "\x1b[" in text
    assert "50% complete" in text and "elapsed" in text
    assert "2 cells running" in text and "1 ready" in text and "1 worker" in text


def test_quiet_shows_nothing():
    buffer = io.StringIO()
    p = Progress(1, 1, quiet=True, console=terminal(buffer))
    p.advance(1, 1)
    p.stop()
    assert buffer.getvalue() == ""
