"""A `type: ignore` silences mypy (`make typecheck`, part of `make test`), so each one must
say which error it silences and why: a bare one would hide the next, unrelated error on
its line, and one without a reason cannot be judged when the code around it changes.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IGNORE = re.compile(r"#\s*type:\s*ignore\b")
# `# type: ignore[code, code]  # why`: codes in brackets, then a comment that says something
EXPLAINED = re.compile(r"#\s*type:\s*ignore\[[a-z0-9-]+(?:,\s*[a-z0-9-]+)*\]\s*#\s*\w")


def unexplained(text: str) -> list[int]:
    """Line numbers of `text` whose `type: ignore` lacks an error code or a reason."""
    return [n for n, line in enumerate(text.splitlines(), 1)
            if IGNORE.search(line) and not EXPLAINED.search(line)]


def test_the_check_tells_explained_from_bare() -> None:
    assert unexplained("x = 1  # type: ignore[assignment]  # the stub says int, it is float\n") == []
    assert unexplained("x = 1  # type: ignore\n") == [1]
    assert unexplained("x = 1  # type: ignore[assignment]\n") == [1]
    assert unexplained("ok = 1\nx = f()  #type:ignore  # no code\n") == [2]


def test_every_type_ignore_names_its_code_and_a_reason() -> None:
    # src/ only: it is what mypy checks (pyproject.toml's [tool.mypy] files)
    bad = [f"{path.relative_to(ROOT)}:{n}"
           for path in sorted((ROOT / "src").rglob("*.py"))
           for n in unexplained(path.read_text(encoding="utf-8"))]
    assert not bad, "type: ignore without [code] and '# why': " + ", ".join(bad)
