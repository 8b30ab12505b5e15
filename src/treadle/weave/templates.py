"""Output name templates and command formatting (docs/weaver.md, "Output names")."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from treadle.weave.diagnostics import error

_PLAIN = re.compile(r"[\w@%+=:,./-]+\Z")

OUTPUT_FIELDS = ("fullpath", "FULL", "basename", "BASE", "fullpath_woext", "FULL_WOEXT",
                 "FULLWE", "basename_woext", "BASE_WOEXT", "BASEWE", "i", "NUMBER", "stash")


def quote(word: str) -> str:
    """A path written bare when it is plain, shell-quoted when it holds anything else."""
    return word if _PLAIN.match(word) else shlex.quote(word)


def join_words(words: Iterable[Any]) -> str:
    """A list of paths or values as single-space-separated, quoted words."""
    return " ".join(quote(str(w)) for w in words)


class _OutputFields(Mapping[str, str]):
    """The fields of one output template; ``{stash}`` is allocated only when used."""

    __slots__ = ("p", "index", "new_stash")

    def __init__(self, p: str, index: int, new_stash: Callable[[], str]):
        self.p = p
        self.index = index
        self.new_stash = new_stash

    def __getitem__(self, key: str) -> str:
        p = self.p
        if key in ("fullpath", "FULL"):
            return p
        if key in ("basename", "BASE"):
            return os.path.basename(p)
        if key in ("fullpath_woext", "FULL_WOEXT", "FULLWE"):
            return _woext(p)
        if key in ("basename_woext", "BASE_WOEXT", "BASEWE"):
            return _woext(os.path.basename(p))
        if key in ("i", "NUMBER"):
            return f"{self.index:05X}"
        if key == "stash":
            return self.new_stash()
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(OUTPUT_FIELDS)

    def __len__(self) -> int:
        return len(OUTPUT_FIELDS)


def _woext(p: str) -> str:
    head, tail = os.path.split(p)
    stem, _ = os.path.splitext(tail)
    return os.path.join(head, stem) if head else stem


def is_template(outputs: Any) -> bool:
    """A string with a ``{`` is a template; other strings name one file."""
    return isinstance(outputs, str) and "{" in outputs


def format_output(template: str, p: str, index: int, new_stash: Callable[[], str]) -> str:
    """Apply an output template to the DAG path ``p`` of the index-th input."""
    try:
        return template.format_map(_OutputFields(p, index, new_stash))
    except KeyError as e:
        raise error(f"unknown field {{{e.args[0]}}} in output template {template!r}; "
                    f"known fields: {', '.join('{' + f + '}' for f in OUTPUT_FIELDS)}") from None
    except (ValueError, IndexError) as e:
        raise error(f"bad output template {template!r}: {e}") from None


_COMMAND_FIELDS = ("executable", "EXE", "inputs", "IN", "outputs", "OUT", "arguments", "ARG")


def format_command(cmd_format: str, executable: str, inputs: str, outputs: str,
                   arguments: str) -> str:
    """Fill a command template; braces meant literally are written doubled."""
    values = {"executable": executable, "EXE": executable, "inputs": inputs, "IN": inputs,
              "outputs": outputs, "OUT": outputs, "arguments": arguments, "ARG": arguments}
    try:
        command = cmd_format.format_map(values)
    except KeyError as e:
        raise error(f"unknown field {{{e.args[0]}}} in command {cmd_format!r}; known fields: "
                    f"{', '.join('{' + f + '}' for f in _COMMAND_FIELDS)} (double literal "
                    f"braces: {{{{ }}}})") from None
    except (ValueError, IndexError) as e:
        raise error(f"bad command template {cmd_format!r}: {e} (double literal braces)") from None
    return " ".join(command.split(" ")) if "  " not in command else _squeeze(command)


def _squeeze(command: str) -> str:
    """Empty fields leave double spaces; drop them outside of quotes for tidy commands."""
    out = []
    quote_char = ""
    prev = ""
    for c in command:
        if quote_char:
            if c == quote_char:
                quote_char = ""
        elif c in "'\"":
            quote_char = c
        elif c == " " and prev == " ":
            continue
        out.append(c)
        prev = c
    return "".join(out).strip()
