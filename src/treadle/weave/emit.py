"""Writing tasks as Makeflow text or as a JSON workflow.

Escaping follows the Makeflow lexer (docs/makeflow.md) so that the engine
hands the shell exactly the command the compiler formatted. Everything is
escaped "outside quotes": a backslash before each character the lexer would
otherwise interpret. Makeflow's own single quotes are never used, because
engines disagree about backslashes inside them.
"""

from __future__ import annotations

import json
import re

from treadle.weave.diagnostics import error
from treadle.weave.task import Task

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


def escape_name(name: str) -> str:
    """A file name as a rule header token."""
    if not _NAME_SPECIAL.search(name):
        return name
    if "\n" in name or "\r" in name:
        raise error(f"a file name cannot hold a newline: {name!r}")
    out = _NAME_CHAR.sub(lambda m: "\\" + m.group(), name)
    if out.startswith(("-", "@")):
        out = "\\" + out
    return out.replace("->", "-\\>")


def escape_command(command: str) -> str:
    """A command as the text after the rule's TAB."""
    if not _CMD_SPECIAL.search(command):
        return command
    if "\n" in command or "\r" in command:
        raise error(f"a command cannot hold a newline: {command!r}")
    out = _CMD_CHAR.sub(lambda m: "\\" + m.group(), command)
    if out.startswith("@"):  # a line's leading @ means "directive" to some lexers
        out = "\\" + out
    return _CMD_BLANKS.sub(lambda m: "".join("\\" + c for c in m.group()), out)


def escape_value(value: str) -> str:
    """The right-hand side of ``NAME=value``."""
    if "\n" in value or "\r" in value:
        raise error(f"a variable value cannot hold a newline: {value!r}")
    out = _VALUE_CHAR.sub(lambda m: "\\" + m.group(), value)
    stripped = out.lstrip(" \t")
    return "".join("\\" + c for c in out[: len(out) - len(stripped)]) + stripped


def check_variable(name: str) -> str:
    """A variable name Makeflow accepts."""
    if not _VAR_NAME.match(name):
        raise error(f"{name!r} is not a valid variable name (letters, digits and _)")
    return name


def render_make(task: Task) -> str:
    """One rule in Makeflow syntax, ending with a newline."""
    parts = []
    if task.symbol:
        parts.append(f"# {task.symbol}\n")
    parts.append(" ".join(map(escape_name, task.outputs)))
    parts.append(": ")
    parts.append(" ".join(map(escape_name, task.inputs)))
    parts.append("\n")
    if task.category:
        parts.append(f"CATEGORY={task.category}\n")
    if task.cores is not None:
        parts.append(f"CORES={task.cores}\n")
    if task.memory is not None:
        parts.append(f"MEMORY={task.memory}\n")
    if task.disk is not None:
        parts.append(f"DISK={task.disk}\n")
    if task.batch is not None:
        parts.append(f"BATCH_OPTIONS={escape_value(task.batch)}\n")
    for name, value in task.environment.items():
        parts.append(f"{name}={escape_value(value)}\n")
    if task.workflow is not None:
        parts.append(f"\tMAKEFLOW {escape_name(task.workflow)}\n")
    else:
        parts.append("\tLOCAL " if task.local else "\t")
        parts.append(escape_command(task.command))
        parts.append("\n")
    return "".join(parts)


def render_json(task: Task) -> str:
    """One rule as a JSON object (no newline inside)."""
    rule: dict[str, object] = {}
    if task.workflow is not None:
        rule["workflow"] = task.workflow
    else:
        rule["command"] = task.command
    rule["inputs"] = task.inputs
    rule["outputs"] = task.outputs
    if task.category:
        rule["category"] = task.category
    resources = {k: v for k, v in (("cores", task.cores), ("memory", task.memory),
                                    ("disk", task.disk)) if v is not None}
    if resources:
        rule["resources"] = resources
    if task.environment:
        rule["environment"] = task.environment
    if task.local:
        rule["local_job"] = True
    return json.dumps(rule, ensure_ascii=False)


def header_make(comment: str, defines: dict[str, str], exports: list[str],
                outputs: list[str] | None) -> str:
    """The top of a DAG: comment, Define'd variables, export lines, MAKEFLOW_OUTPUTS."""
    lines = [f"# {comment}\n"]
    for name, value in defines.items():
        lines.append(f"{name}={escape_value(value)}\n")
    if exports:
        lines.append("export " + " ".join(exports) + "\n")
    if outputs is not None:
        lines.append("MAKEFLOW_OUTPUTS=" + " ".join(map(_escape_list_item, outputs)) + "\n")
    lines.append("\n")
    return "".join(lines)


def _escape_list_item(name: str) -> str:
    """A name inside a list-valued variable, which is split on blanks and quotes."""
    if not re.search(r"[\s'\"]", name):
        return escape_value(name)
    quote = "'" if "'" not in name else '"'
    return quote + escape_value(name) + quote


def header_json(defines: dict[str, str], exports: dict[str, str],
                outputs: list[str] | None) -> str:
    """The opening of a JSON workflow, up to the start of the rules array."""
    define: dict[str, object] = dict(defines)
    if outputs is not None:
        define["MAKEFLOW_OUTPUTS"] = outputs
    return (f'{{"define": {json.dumps(define, ensure_ascii=False)},\n'
            f' "environment": {json.dumps(exports, ensure_ascii=False)},\n "rules": [\n')
