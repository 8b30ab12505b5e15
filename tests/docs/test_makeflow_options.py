"""docs/coming-from-cctools.md names every option of the installed reference ``makeflow``, so the table cannot drift."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "coming-from-cctools.md"
LONG_OPTION = re.compile(r"(?<![\w-])--[a-z0-9][a-z0-9-]*")


def _table() -> str:
    """The section "Every makeflow option", up to the next section."""
    text = PAGE.read_text()
    start = text.index("## Every makeflow option")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_the_table_names_every_long_option_of_makeflow_help() -> None:
    makeflow = shutil.which("makeflow")
    if makeflow is None:
        pytest.skip("the reference makeflow is not installed (Debian: coop-computing-tools)")
    help_text = subprocess.run([makeflow, "--help"], capture_output=True, text=True, timeout=30)
    options = set(LONG_OPTION.findall(help_text.stdout + help_text.stderr))
    assert len(options) > 50, "makeflow --help no longer lists its options the way this test reads them"
    named = {m.strip("`") for m in re.findall(r"`--[a-z0-9-]+`", _table())}
    assert sorted(options - named) == []


def test_every_option_treadle_accepts_without_effect_is_in_the_table() -> None:
    """The options that print 'no effect' are documented as such (the table says what they do)."""
    from treadle.flow.run import BACKEND_ONLY_OPTIONS, INERT_OPTIONS

    rows = [line for line in _table().splitlines() if line.startswith("| `")]
    for name, _ in (*INERT_OPTIONS.values(), *BACKEND_ONLY_OPTIONS.values()):
        long = name.split("/")[-1]
        row = next(r for r in rows if f"`{long}`" in r)
        assert "no effect" in row, row
