"""Progress lines: plain text off a terminal, at most every PLAIN_INTERVAL seconds."""

from __future__ import annotations

import io

from treadle.flow import progress as pg


def test_plain_progress_lines_are_rate_limited(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(pg.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    p = pg.Progress(10, stream=out, live=False)
    p.update([10, 0, 0, 0, 0])
    assert out.getvalue() == ""  # short runs print nothing extra
    clock[0] += pg.PLAIN_INTERVAL + 1
    p.update([4, 2, 4, 0, 0])
    line = out.getvalue().strip()
    assert line.startswith("progress: 4 waiting, 2 running, 4 done, 0 failed of 10")
    assert "rules/s" in line and "ETA 0:00:" in line
    p.update([3, 2, 5, 0, 0])
    assert out.getvalue().count("\n") == 1
    p.stop()


def test_live_display_renders_counts():
    out = io.StringIO()
    p = pg.Progress(4, stream=out, live=True)
    p.update([1, 1, 1, 1, 0])
    p.stop()
    text = out.getvalue()
    assert "1/4 done" in text and "1 failed" in text
