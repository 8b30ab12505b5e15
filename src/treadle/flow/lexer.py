"""Scanning of Makeflow text: file lists, command text, assignment values.

The parser (``treadle.flow.parser``) decides what a line is; this module reads
the pieces of a line the way the reference's lexer does: quotes, backslash
escapes, ``$`` substitutions whose values are read again, comments. A
``Lexer`` works on one string (the whole file, or the value of a variable
being substituted) and reports every error as a ``ParseError`` at a file
position.
"""

from __future__ import annotations

import re
from typing import Protocol

from treadle.errors import ParseError

# Markers in token lists; literal pieces are plain ``str``.
SPACE = object()
COLON = object()
ARROW = object()

MAX_DEPTH = 32  # nested substitutions before we call it a loop (the reference's limit)
MAX_VALUE = 1 << 26  # characters; a value doubling itself line after line must not eat the machine
# Characters of the user's text an error message quotes: enough to recognise the
# place, while a 10 MB line in a message would bury the terminal (issue 9, defect 10).
MAX_QUOTE = 200

_SPECIAL_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}

# A variable name ends at any of these (the reference's list, plus ":").
_SYNTAX_RUN = re.compile(r"[^ \t\n\\\"'$#\x1a,.\-(){}\[\]<>=+!?/:]*")
# A run of plain file-name characters (escapes, "-" and the rest handled one by one).
_NAME_RUN = re.compile(r"[^ \t\n\\\"'$#:\x1a\-]*")
# A run of plain command characters.
_COMMAND_RUN = re.compile(r"[^ \t\n\\\"'$#\x1a<>]*")
_VALUE_RUN = re.compile(r"[^ \t\n\\\"'$#]*")
_DQ_RUN = re.compile(r'[^"\\$]*')
_BLANKS = re.compile(r"[ \t]*")


def match_run(pattern: re.Pattern[str], text: str, pos: int) -> re.Match[str]:
    """The run of ``pattern`` at ``pos``: a pattern ending in ``*`` always matches (maybe empty)."""
    m = pattern.match(text, pos)
    assert m is not None, pattern.pattern
    return m


def excerpt(text: str) -> str:
    """``text`` as an error message may quote it: at most ``MAX_QUOTE`` characters, saying what was cut.

    Every message of the Makeflow and JX front ends that repeats a piece of the
    user's file goes through here, so no input makes a message longer than a
    few hundred characters.
    """
    if len(text) <= MAX_QUOTE:
        return text
    return f"{text[:MAX_QUOTE]}... ({len(text) - MAX_QUOTE} more characters)"


class Scope(Protocol):
    """What a lexer needs from the parser: variable values and the undefined-variable message."""

    def get(self, name: str) -> str | None: ...

    def undefined(self, name: str) -> str: ...


class Lexer:
    """Reads constructs from ``text`` starting at ``pos``.

    ``origin`` is set for the lexer of a substituted value: errors inside it
    point at the ``$`` in the file that caused the substitution.
    """

    __slots__ = (
        "text",
        "pos",
        "filename",
        "scope",
        "depth",
        "origin",
        "line_base",
        "offset_base",
        "spent",
    )

    def __init__(
        self,
        text: str,
        filename: str,
        scope: Scope,
        *,
        pos: int = 0,
        depth: int = 0,
        origin: tuple[int, int] | None = None,
        line_base: int = 1,
        offset_base: int = 0,
    ):
        self.text = text
        self.pos = pos
        self.filename = filename
        self.scope = scope
        self.depth = depth
        self.origin = origin
        # For the file lexer: the line number at offset ``offset_base`` (saves counting from 0).
        self.line_base = line_base
        self.offset_base = offset_base
        # characters substituted so far in this statement, shared with sub-lexers:
        # a value repeated in a line must not build a command of gigabytes
        self.spent = [0]

    def start(self, pos: int, line: int, line_start: int) -> None:
        """Start reading a statement at ``pos``, on file line ``line`` that begins at ``line_start``."""
        self.pos = pos
        self.line_base = line
        self.offset_base = line_start
        self.spent[0] = 0

    # ------------------------------------------------------------------ errors
    def where(self, pos: int | None = None) -> tuple[int, int]:
        """(line, column) of ``pos`` in the file."""
        if self.origin is not None:
            return self.origin
        if pos is None:
            pos = self.pos
        pos = min(max(pos, 0), len(self.text))
        base = self.offset_base if pos >= self.offset_base else 0
        line = (self.line_base if base else 1) + self.text.count("\n", base, pos)
        col = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return line, col

    def error(self, message: str, pos: int | None = None) -> ParseError:
        line, col = self.where(pos)
        return ParseError(message, self.filename, line, col)

    # ------------------------------------------------------------ small pieces
    def skip_blanks(self) -> int:
        m = match_run(_BLANKS, self.text, self.pos)
        n = m.end() - self.pos
        self.pos = m.end()
        return n

    def skip_comment(self) -> None:
        """Skip from ``#`` to the end of the line, newline included."""
        nl = self.text.find("\n", self.pos)
        self.pos = len(self.text) if nl < 0 else nl + 1

    def at_end_of_line(self) -> bool:
        return self.pos >= len(self.text) or self.text[self.pos] == "\n"

    def syntax_name(self) -> str:
        """A variable or keyword name; empty is an error."""
        m = match_run(_SYNTAX_RUN, self.text, self.pos)
        if m.end() == self.pos:
            raise self.error("Expecting a keyword or a variable name.")
        self.pos = m.end()
        return m.group()

    def substitution(self) -> tuple[str, int]:
        """Read ``$V``, ``$(V)`` or ``${V}`` at ``pos``; return the name and where the ``$`` was."""
        start = self.pos
        self.pos += 1
        closer = None
        if self.pos < len(self.text) and self.text[self.pos] in "({":
            closer = ")" if self.text[self.pos] == "(" else "}"
            self.pos += 1
        name = self.syntax_name()
        if closer is not None:
            if self.pos >= len(self.text) or self.text[self.pos] != closer:
                raise self.error(f"Expecting {closer} for closing variable substitution.")
            self.pos += 1
        return name, start

    def value_of(self, name: str, at: int) -> str:
        value = self.scope.get(name)
        if value is None:
            raise self.error(self.scope.undefined(name), at)
        self.spent[0] += len(value)
        if self.spent[0] > MAX_VALUE:
            raise self.error("Substitutions make this line too long.", at)
        return value

    def sublexer(self, value: str, at: int) -> Lexer:
        """A lexer that reads a substituted value again, with errors pointing at ``at``."""
        if self.depth >= MAX_DEPTH:
            raise self.error(f"More than {MAX_DEPTH} nested variable substitutions.", at)
        sub = Lexer(value, self.filename, self.scope, depth=self.depth + 1, origin=self.where(at))
        sub.spent = self.spent
        return sub

    def single_quoted(self) -> str:
        """The text between ``'`` at ``pos`` and the next ``'`` (quotes not included)."""
        end = self.text.find("'", self.pos + 1)
        if end < 0:
            raise self.error("Missing closing '")
        s = self.text[self.pos + 1 : end]
        self.pos = end + 1
        return s

    def double_quoted(self, *, keep_quotes: bool, control_escapes: bool) -> str:
        """``"…"`` at ``pos`` with ``$`` expanded and backslash escapes applied."""
        text = self.text
        n = len(text)
        start = self.pos
        self.pos += 1
        out = ['"'] if keep_quotes else []
        size = 0
        while True:
            if self.pos >= n:
                raise self.error('Missing closing "', start)
            c = text[self.pos]
            if c == '"':
                self.pos += 1
                break
            if c == "\\":
                if self.pos + 1 >= n:
                    raise self.error('Missing closing "', start)
                nxt = text[self.pos + 1]
                self.pos += 2
                if nxt == "\n":
                    out.append(" ")
                elif control_escapes and nxt in _SPECIAL_ESCAPES:
                    out.append(_SPECIAL_ESCAPES[nxt])
                else:
                    out.append(nxt)
            elif c == "$":
                name, at = self.substitution()
                v = self.value_of(name, at)
                size += len(v)
                if size > MAX_VALUE:
                    raise self.error("Value is too long.", at)
                out.append(v)
            else:
                m = match_run(_DQ_RUN, text, self.pos)
                out.append(m.group())
                self.pos = m.end()
        if keep_quotes:
            out.append('"')
        return "".join(out)

    # --------------------------------------------------------------- file lists
    def file_tokens(self, out: list) -> None:
        """Append the tokens of a file list up to the end of the line (consumed).

        Tokens are ``str`` pieces, ``SPACE``, ``COLON`` and ``ARROW``; pieces
        that touch are joined later by ``join_names``.
        """
        text = self.text
        n = len(text)
        nested = self.origin is not None
        while self.pos < n:
            c = text[self.pos]
            if c == " " or c == "\t":
                self.skip_blanks()
                out.append(SPACE)
            elif c == "\n":
                self.pos += 1
                if not nested:
                    return
                out.append(SPACE)
            elif c == "#":
                self.skip_comment()
                if not nested:
                    return
            elif c == ":":
                self.pos += 1
                out.append(COLON)
            elif c == "$":
                name, at = self.substitution()
                self.sublexer(self.value_of(name, at), at).file_tokens(out)
            elif c == "'":
                out.append(self.single_quoted())
            elif c == '"':
                out.append(self.double_quoted(keep_quotes=False, control_escapes=False))
            elif c == "\\":
                if self.pos + 1 >= n:
                    self.pos += 1
                elif text[self.pos + 1] == "\n":
                    self.pos += 2
                    out.append(SPACE)
                else:
                    out.append(text[self.pos + 1])
                    self.pos += 2
            elif c == "-":
                if text.startswith("->", self.pos):
                    self.pos += 2
                    out.append(ARROW)
                elif out and isinstance(out[-1], str):
                    self.pos += 1
                    out.append("-")
                else:
                    raise self.error("Expecting a filename.")
            else:
                m = match_run(_NAME_RUN, text, self.pos)
                if m.end() == self.pos:  # the 0x1A byte
                    raise self.error("Expecting a filename.")
                out.append(m.group())
                self.pos = m.end()

    # ----------------------------------------------------------------- commands
    def command_tokens(self, out: list) -> None:
        """Append the tokens of a command up to the end of the line (consumed).

        Tokens are ``str`` pieces (a quoted piece keeps its quotes, ``<`` and
        ``>`` are pieces of their own) and ``SPACE``.
        """
        text = self.text
        n = len(text)
        nested = self.origin is not None
        if nested and self.skip_blanks():
            out.append(SPACE)
        while self.pos < n:
            c = text[self.pos]
            if c == " " or c == "\t":
                self.skip_blanks()
                out.append(SPACE)
            elif c == "\n":
                self.pos += 1
                if not nested:
                    return
                out.append(SPACE)
            elif c == "#":
                self.skip_comment()
                if not nested:
                    return
            elif c == "$":
                name, at = self.substitution()
                self.sublexer(self.value_of(name, at), at).command_tokens(out)
            elif c == "'":
                out.append("'" + self.single_quoted() + "'")
            elif c == '"':
                out.append(self.double_quoted(keep_quotes=True, control_escapes=True))
            elif c == "<" or c == ">":
                self.pos += 1
                out.append(c)
            else:
                out.append(self._unquoted_command_literal())

    def _unquoted_command_literal(self) -> str:
        text = self.text
        n = len(text)
        parts = []
        while self.pos < n:
            m = match_run(_COMMAND_RUN, text, self.pos)
            if m.end() > self.pos:
                parts.append(m.group())
                self.pos = m.end()
                continue
            if text[self.pos] != "\\":
                break
            if self.pos + 1 < n:
                nxt = text[self.pos + 1]
                parts.append(" " if nxt == "\n" else nxt)
            self.pos += 2
        if not parts and self.pos < n and text[self.pos] == "\x1a":
            self.pos += 1  # the reference's end-of-file byte: ignored in commands
        return "".join(parts)

    # ------------------------------------------------------------------ values
    def value(self) -> str:
        """An assignment's value: from ``pos`` to the end of the line (consumed).

        Leading blanks are dropped, trailing blanks kept, quotes kept, ``$``
        expanded at once; a ``#`` comment ends the value and takes the blanks
        before it along.
        """
        text = self.text
        n = len(text)
        self.skip_blanks()
        out: list[str] = []
        size = 0
        while self.pos < n:
            c = text[self.pos]
            if c == "\n":
                self.pos += 1
                break
            if c == "#":
                self.skip_comment()
                if out:
                    out[-1] = out[-1].rstrip(" \t")
                break
            if c == "$":
                name, at = self.substitution()
                piece = self.value_of(name, at)
            elif c == "'":
                piece = "'" + self.single_quoted() + "'"
            elif c == '"':
                piece = self.double_quoted(keep_quotes=True, control_escapes=True)
            elif c == "\\":
                if self.pos + 1 >= n:
                    self.pos += 1
                    continue
                nxt = text[self.pos + 1]
                self.pos += 2
                piece = " " if nxt == "\n" else _SPECIAL_ESCAPES.get(nxt, nxt)
            elif c == " " or c == "\t":
                start = self.pos
                self.skip_blanks()
                piece = text[start : self.pos]
            else:
                m = match_run(_VALUE_RUN, text, self.pos)
                piece = m.group()
                self.pos = m.end()
            size += len(piece)
            if size > MAX_VALUE:
                raise self.error("Value is too long.")
            out.append(piece)
        return "".join(out)

    # -------------------------------------------------------------- directives
    def words(self) -> list[str]:
        """Literal words to the end of the line (consumed): unquoted or single-quoted."""
        text = self.text
        n = len(text)
        words: list[str] = []
        while True:
            self.skip_blanks()
            if self.pos >= n:
                return words
            c = text[self.pos]
            if c == "\n":
                self.pos += 1
                return words
            if c == "#":
                self.skip_comment()
                return words
            if c == "'":
                words.append(self.single_quoted())
                continue
            end = self.pos
            while end < n and text[end] not in " \t\n#'":
                end += 1
            words.append(text[self.pos : end])
            self.pos = end


def join_names(tokens: list) -> list:
    """Join touching ``str`` pieces into names and drop the separators."""
    out: list = []
    pending: list[str] = []
    for t in tokens:
        if isinstance(t, str):
            pending.append(t)
            continue
        if pending:
            out.append("".join(pending))
            pending = []
        if t is not SPACE:
            out.append(t)
    if pending:
        out.append("".join(pending))
    return out


def lookahead(text: str, pos: int) -> tuple[int, int]:
    """Offsets of the first unquoted ``:`` and ``=`` on the line at ``pos`` (-1: none).

    Quotes are skipped, a backslash skips the next character (so a line
    continued with ``\\`` is looked at as a whole), and the scan stops at
    the first newline that is not escaped.
    """
    colon = equal = -1
    n = len(text)
    i = pos
    quote = ""
    while i < n:
        c = text[i]
        if c == "\n":
            break
        if quote:
            if c == quote:
                quote = ""
        elif c == "\\":
            i += 1
        elif c == '"' or c == "'":
            quote = c
        elif c == ":":
            if colon < 0:
                colon = i
                if equal >= 0:
                    break
        elif c == "=":
            if equal < 0:
                equal = i
                if colon >= 0:
                    break
        i += 1
    return colon, equal


def render_command(tokens: list) -> str:
    """The command text of command tokens."""
    return "".join(" " if t is SPACE else t for t in tokens)
