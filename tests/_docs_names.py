"""Which names a documentation page shows in examples that run (tests/docs runs them)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.docs.test_examples import parse_blocks

DOCS = Path(__file__).resolve().parents[1] / "docs"
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def names_in_examples(page: str) -> set[str]:
    """Every identifier in the runnable blocks (python, sh and files) of ``docs/<page>``.

    Shown output (``text`` blocks) does not count: a name is documented when an
    example that the suite runs uses it.
    """
    path = DOCS / page
    blocks = parse_blocks(path.read_text(encoding="utf-8"), str(path))
    return {name for block in blocks if block.kind != "text"
            for name in IDENTIFIER.findall(block.body)}
