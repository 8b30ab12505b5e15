"""Docstrings, comments and the README cite the docs/ pages, never a document users do not have.

The design documents the code was first written against are not part of the
repository; a reader who meets "spec §2.6" or "gotcha 15" has nowhere to look.
So comments and string literals under src/, and the README, may not name them,
and every ``*.md`` file they name must exist in the repository.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A section sign, a specs/ path, the word "spec" used as a citation (not a name in code such
# as ``spec`` or an option such as --ignore-memory-spec), a numbered gotcha.
CITATION = re.compile(r"§|\bspecs?/|(?<![.`-])\b[Ss]pec(?:'s)?\b(?![`-])(?!\s*[=(\[.:,)])|\b[Gg]otchas?\s*\d+")
MARKDOWN_FILE = re.compile(r"(?<![\w./-])(?P<path>[\w./-]+\.md)\b")
# "docs/makeflow.md, 'Variables'": a page and one of its section headings.
SECTION = re.compile(r"""(?P<page>docs/[\w./-]+\.md),\s+(?P<q>['"])(?P<title>[^'"]+)(?P=q)""")
HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*\s*$", re.MULTILINE)


def _prose(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every comment and string literal of a Python file."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
    return [(tok.start[0], tok.string) for tok in tokens
            if tok.type in (tokenize.COMMENT, tokenize.STRING)]


def _sources() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        found += [(rel, line, text) for line, text in _prose(path)]
    for n, line in enumerate((ROOT / "README.md").read_text(encoding="utf-8").splitlines(), 1):
        found.append(("README.md", n, line))
    return found


def citations(text: str) -> list[str]:
    """What in ``text`` cites a document that is not in the repository."""
    bad = [m.group(0) for m in CITATION.finditer(text)]
    bad += [m.group("path") for m in MARKDOWN_FILE.finditer(text)
            if not (ROOT / m.group("path")).is_file()]
    bad += [f"{m.group('page')}, {m.group('title')!r} (no such heading)"
            for m in SECTION.finditer(text)
            if (ROOT / m.group("page")).is_file()
            and m.group("title") not in _headings(ROOT / m.group("page"))]
    return bad


def _headings(page: Path) -> set[str]:
    """The section titles of a docs page, without Markdown code marks."""
    return {m.group("title").replace("`", "")
            for m in HEADING.finditer(page.read_text(encoding="utf-8"))}


def test_no_citation_of_documents_outside_the_repository() -> None:
    bad = [f"{file}:{line}: {', '.join(found)}" for file, line, text in _sources()
           if (found := citations(text))]
    assert not bad, "cite docs/PAGE.md (or state the fact) instead of:\n" + "\n".join(bad)


@pytest.mark.parametrize("text", [
    "the spec says so", "(spec §2.4)", "see specs/makeflow.md", "gotcha 15",
    "spec weaver.md §2.3", "as the spec's list", "workqueue.md, section 3", "DESIGN.md",
    "see docs/makeflow.md, 'No such section'",
])
def test_citations_are_found(text: str) -> None:
    assert citations(text)


@pytest.mark.parametrize("text", [
    "see docs/makeflow.md, 'Variables'", "README.md", "spec = item.spec", "spec.kind",
    "workers of ``spec`` as one cluster", "--ignore-memory-spec", "submit(spec, count)",
    "the specification of the task", "respect the order", "find_spec(name)", "expected SPEC FILE",
])
def test_ordinary_text_passes(text: str) -> None:
    assert not citations(text)
