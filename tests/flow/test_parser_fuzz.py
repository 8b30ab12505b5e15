"""No input may crash or hang the parsers: every input gives a Workflow or a ParseError."""

from __future__ import annotations

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
