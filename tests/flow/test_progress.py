"""The live progress line on a terminal: drawn from the first update, not after ten seconds."""

from __future__ import annotations

import io

from treadle.flow import progress as pg


class _Terminal(io.StringIO):
    """A stream that says it is a terminal, so rich draws the live line into it as it goes."""

    def isatty(self) -> bool:
        return True


def test_live_line_shows_the_first_update_at_once():
    term = _Terminal()
    p = pg.Progress(13, stream=term, live=True)
    try:
        p.update([8, 2, 3, 0, 0])  # three rules finished within the run's first second
        assert "3/13 done" in term.getvalue()
        assert "2 running" in term.getvalue()
    finally:
        p.stop()


def test_live_line_keeps_up_with_later_updates(monkeypatch):
    clock = [50.0]
    monkeypatch.setattr(pg.time, "monotonic", lambda: clock[0])
    term = _Terminal()
    p = pg.Progress(13, stream=term, live=True)
    try:
        p.update([12, 1, 0, 0, 0])
        clock[0] += pg.LIVE_INTERVAL
        p.update([5, 1, 7, 0, 0])
        assert "7/13 done" in term.getvalue()
    finally:
        p.stop()
