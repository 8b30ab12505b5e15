"""Writing workflows as Makeflow text or as a JSON workflow: the inverse of the lexer.

Whatever a program builds (Weaver's tasks today) is written so that
``treadle.flow.parser`` gives back exactly the names, commands and values that
were written, and the engine hands the shell exactly the command the program
formatted (docs/makeflow.md). Everything is escaped "outside quotes": a
backslash before each character the lexer would otherwise interpret.
Makeflow's own single quotes are never used, because engines disagree about
backslashes inside them.

Rules are written one at a time (``rule_make``, ``rule_json``) so that a
writer may spool a million of them without holding rule objects; the header
(``header_make``, ``header_json``) is written last, since it depends on every
rule. Text that no Makeflow file can hold (a newline in a name) raises
``WorkflowError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence

from treadle.errors import WorkflowError

# Variables the engine reads for itself rather than handing to jobs (never exported).
SPECIAL_VARIABLES = frozenset(
    {"CATEGORY", "SYMBOL", "CORES", "MEMORY", "DISK", "GPUS", "WALL_TIME", "MPI_PROCESSES",
     "BATCH_OPTIONS", "BATCH_LOCAL", "MAKEFLOW_INPUTS", "MAKEFLOW_OUTPUTS"}
)
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

_NAME_SPECIAL = re.compile(r"[\s\"'$#:\\=\x1a<>]|^[-@]|->")
_NAME_CHAR = re.compile(r"[ \t\"'$#:\\=\x1a<>]")
_CMD_SPECIAL = re.compile(r"[\\$#'\"\t\n\r]|^[ @]| $|  ")
_CMD_CHAR = re.compile(r"[\\$#'\"]")
_CMD_BLANKS = re.compile(r"[ \t]{2,}|^[ \t]+|[ \t]+$|\t")
_VALUE_CHAR = re.compile(r"[\\$#'\"]")
_VALUE_SPECIAL = re.compile(r"[\\$#'\"\n\r]|^[ \t]")
_LIST_SPLIT = re.compile(r"[\s'\"]")
_DQ_CHAR = re.compile(r"[\\$]")


def escape_name(name: str) -> str:
    """A file name as a rule header token."""
    if not _NAME_SPECIAL.search(name):
        return name
    if "\n" in name or "\r" in name:
        raise WorkflowError(f"a file name cannot hold a newline: {name!r}")
    out = _NAME_CHAR.sub(lambda m: "\\" + m.group(), name)
    if out.startswith(("-", "@")):
        out = "\\" + out
    return out.replace("->", "-\\>")


def escape_command(command: str) -> str:
    """A command as the text after the rule's TAB."""
    if not _CMD_SPECIAL.search(command):
        return command
    if "\n" in command or "\r" in command:
        raise WorkflowError(f"a command cannot hold a newline: {command!r}")
    out = _CMD_CHAR.sub(lambda m: "\\" + m.group(), command)
    if out.startswith("@"):  # a line's leading @ means "directive" to some lexers
        out = "\\" + out
    return _CMD_BLANKS.sub(lambda m: "".join("\\" + c for c in m.group()), out)


def escape_value(value: str) -> str:
    """The right-hand side of ``NAME=value``."""
    if not _VALUE_SPECIAL.search(value):
        return value
    if "\n" in value or "\r" in value:
        raise WorkflowError(f"a variable value cannot hold a newline: {value!r}")
    out = _VALUE_CHAR.sub(lambda m: "\\" + m.group(), value)
    stripped = out.lstrip(" \t")
    return "".join("\\" + c for c in out[: len(out) - len(stripped)]) + stripped


def check_variable(name: str) -> str:
    """A variable name Makeflow accepts."""
    if not _VAR_NAME.match(name):
        raise WorkflowError(f"{name!r} is not a valid variable name (letters, digits and _)")
    return name


def rule_make(targets: Sequence[str], sources: Sequence[str], command: str,
              variables: Iterable[tuple[str, str]] = (), *, local: bool = False,
              workflow: str | None = None, comment: str | None = None) -> str:
    """One rule in Makeflow syntax, ending with a newline.

    ``variables`` are the rule's own assignments (``CATEGORY``, ``CORES``, an
    environment variable...), written between its header and its command;
    ``workflow`` makes it a ``MAKEFLOW`` rule that runs that sub-workflow.
    """
    parts = []
    if comment:
        parts.append(f"# {comment}\n")
    parts.append(" ".join(map(escape_name, targets)))
    parts.append(": ")
    parts.append(" ".join(map(escape_name, sources)))
    parts.append("\n")
    for name, value in variables:
        if name not in SPECIAL_VARIABLES:
            check_variable(name)
        parts.append(f"{name}={escape_value(value)}\n")
    if workflow is not None:
        parts.append(f"\tMAKEFLOW {escape_name(workflow)}\n")
    else:
        parts.append("\tLOCAL " if local else "\t")
        parts.append(escape_command(command))
        parts.append("\n")
    return "".join(parts)


def header_make(comment: str, defines: Mapping[str, str], exports: Iterable[str],
                outputs: Iterable[str] | None) -> str:
    """The top of a workflow: comment, variables, the export line, ``MAKEFLOW_OUTPUTS``."""
    lines = [f"# {comment}\n"]
    for name, value in defines.items():
        lines.append(f"{check_variable(name)}={escape_value(value)}\n")
    exports = [check_variable(name) for name in exports]
    if exports:
        lines.append("export " + " ".join(exports) + "\n")
    if outputs is not None:
        lines.append("MAKEFLOW_OUTPUTS=" + " ".join(map(_escape_list_item, outputs)) + "\n")
    lines.append("\n")
    return "".join(lines)


def _escape_list_item(name: str) -> str:
    """A name inside a list-valued variable, which is split on blanks and quotes.

    A name with blanks or quotes is quoted: the lexer keeps single-quoted text as it
    is, and reads backslash escapes and ``$`` inside double quotes.
    """
    if not _LIST_SPLIT.search(name):
        return escape_value(name)
    if "\n" in name or "\r" in name:
        raise WorkflowError(f"a file name cannot hold a newline: {name!r}")
    if "'" not in name:
        return f"'{name}'"
    if '"' not in name:
        return '"' + _DQ_CHAR.sub(lambda m: "\\" + m.group(), name) + '"'
    raise WorkflowError(f"a name with both kinds of quotes cannot be listed: {name!r}")


def rule_json(targets: Sequence[str], sources: Sequence[str], command: str, *,
              category: str | None = None, resources: Mapping[str, int] | None = None,
              environment: Mapping[str, str] | None = None, local: bool = False,
              workflow: str | None = None) -> str:
    """One rule as a JSON workflow's rule object (no newline inside)."""
    rule: dict[str, object] = {}
    if workflow is not None:
        rule["workflow"] = workflow
    else:
        rule["command"] = command
    rule["inputs"] = list(sources)
    rule["outputs"] = list(targets)
    if category:
        rule["category"] = category
    if resources:
        rule["resources"] = dict(resources)
    if environment:
        rule["environment"] = dict(environment)
    if local:
        rule["local_job"] = True
    return json.dumps(rule, ensure_ascii=False)


def header_json(defines: Mapping[str, str], exports: Mapping[str, str],
                outputs: Sequence[str] | None) -> str:
    """The opening of a JSON workflow, up to the start of its rules array.

    The rules follow, separated by ``",\\n"``, and ``JSON_END`` closes the document.
    """
    define: dict[str, object] = dict(defines)
    if outputs is not None:
        define["MAKEFLOW_OUTPUTS"] = list(outputs)
    return (f'{{"define": {json.dumps(define, ensure_ascii=False)},\n'
            f' "environment": {json.dumps(dict(exports), ensure_ascii=False)},\n "rules": [\n')


JSON_END = "\n]}\n"
