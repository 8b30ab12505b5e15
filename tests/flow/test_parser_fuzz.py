"""No input may crash or hang the parsers: every input gives a Workflow or a ParseError."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from treadle.errors import ParseError
from treadle.flow.model import Workflow
from treadle.flow.parser import parse_text

# Pieces that exercise the interesting paths far more often than random text would.
ATOMS = [
    "a",
    "b.txt",
    "X",
    "$(X)",
    "${Y}",
    "$Z",
    "$$",
    "$(",
    "'q q'",
    '"d $(X)"',
    '"',
    "'",
    "\\",
    "\\\n",
    "\n",
    "\t",
    " ",
    ":",
    "=",
    "+=",
    "->",
    "-",
    "#",
    "@",
    ".MAKEFLOW",
    " CORES ",
    "CATEGORY=",
    "export ",
    "LOCAL ",
    "MAKEFLOW ",
    "<",
    ">",
    "\r\n",
    "\x1a",
    "\x00",
    "\xe9",
    ".SIZE ",
    "X=1\n",
    "a: b\n\techo\n",
    "\tcmd\n",
]
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(text: str | bytes, fmt: str = "make") -> None:
    try:
        wf = parse_text(text, "fuzz.mf", fmt=fmt, environ={"HOME": "/h"}, notice=lambda m: None)
    except ParseError as e:
        assert e.line >= 0 and e.column >= 0
        assert str(e).startswith("fuzz.mf:") or e.file
    else:
        assert isinstance(wf, Workflow)


@SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data):
    check(data)


@SETTINGS
@given(st.text(max_size=300))
def test_arbitrary_text(text):
    check(text)


@SETTINGS
@given(st.lists(st.sampled_from(ATOMS), max_size=40).map("".join))
def test_makeflow_like_text(text):
    check(text)


JX_ATOMS = [
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    ",",
    ":",
    '"rules"',
    '"command"',
    '"s"',
    "1",
    "2.5",
    "-",
    "+",
    "*",
    "/",
    "%",
    "==",
    "<",
    "and",
    "or",
    "not",
    "for",
    "x",
    "in",
    "if",
    "range",
    "format",
    "len",
    "null",
    "true",
    "#",
    "\n",
    ".",
    "join",
    '"define"',
    "N",
    "0",
]


@SETTINGS
@given(st.lists(st.sampled_from(JX_ATOMS), max_size=40).map(" ".join))
def test_jx_like_text(text):
    check(text, fmt="jx")


@SETTINGS
@given(st.text(max_size=200))
def test_jx_arbitrary_text(text):
    check(text, fmt="jx")


NAME = st.from_regex(r"[A-Za-z0-9_.][A-Za-z0-9_./+%,-]{0,12}", fullmatch=True).filter(
    lambda s: "->" not in s
)
WORD = st.from_regex(r"[A-Za-z0-9_./=+%,<>|;&-]{1,8}", fullmatch=True)


@SETTINGS
@given(
    st.lists(NAME, max_size=4, unique=True),
    st.lists(NAME, max_size=4),
    st.lists(WORD, min_size=1, max_size=5),
)
def test_fast_and_slow_paths_agree(targets, sources, words):
    """A plain rule read by the fast path equals the same rule forced onto the full lexer."""
    sources = [s for s in sources if s not in targets]
    command = " ".join(words)
    plain = f"{' '.join(targets)}: {' '.join(sources)}\n\t{command}\n"
    # a comment after the header and an escaped first character change nothing but the path
    slow = f"{' '.join(targets)}: {' '.join(sources)}#\n\t\\{command}\n"
    try:
        fast_wf = parse_text(plain, "p.mf", environ={}, notice=lambda m: None)
    except ParseError as e:
        with pytest.raises(ParseError) as info:
            parse_text(slow, "p.mf", environ={}, notice=lambda m: None)
        assert info.value.message == e.message
        return
    slow_wf = parse_text(slow, "p.mf", environ={}, notice=lambda m: None)
    a, b = fast_wf.rules[0], slow_wf.rules[0]
    assert (a.targets, a.sources, a.command, a.local) == (b.targets, b.sources, b.command, b.local)
