"""The Makeflow language front end: text (Make form, JSON or JX) to a ``Workflow``.

The Make form is read line by line, expanding variables as it goes, so a rule
sees the bindings made before it and never a later one (docs/makeflow.md, 'Variables'). Plain
lines (no quotes, backslashes or ``$``) take a fast path: a 100,000-rule
workflow must parse faster, and in a third of the memory, than the reference.

Every mistake in the file is a ``treadle.errors.ParseError`` with file, line
and column; nothing else may escape for any input.
"""

from __future__ import annotations

import math
import os
import re
import sys
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence

from treadle.errors import ParseError
from treadle.flow.lexer import (
    ARROW,
    COLON,
    SPACE,
    Lexer,
    excerpt,
    join_names,
    lookahead,
    render_command,
)
from treadle.flow.model import (
    DEFAULT_CATEGORY,
    NO_RESOURCES,
    Resources,
    Rule,
    Workflow,
)

Notice = Callable[[str], None]

# Variables that set resources, and the Resources field each one fills.
RESOURCE_VARIABLES = {
    "CORES": "cores",
    "MEMORY": "memory",
    "DISK": "disk",
    "GPUS": "gpus",
    "WALL_TIME": "wall_time",
    "MPI_PROCESSES": "mpi_processes",
}
# Exported to every job whenever they have a value (docs/makeflow.md, 'Exported variables').
ALWAYS_EXPORTED = ("CATEGORY", "CORES", "MEMORY", "DISK", "GPUS", "MPI_PROCESSES", "WALL_TIME")
DEPRECATED_VARIABLES = ("GC_COLLECT_LIST", "GC_PRESERVE_LIST")
ALLOCATION_MODES = ("MAX_THROUGHPUT", "MIN_WASTE", "FIXED")

# Characters that keep a line off the fast path: quotes, escapes, substitutions,
# comments, "=", and anything that is not printable ASCII.
_HEADER_SLOW = re.compile(r"[^\x21-\x7e \t]|[\"'$\\#=]|->")
_COMMAND_SLOW = re.compile(r"[^\x21-\x7e ]|[\"'$\\#]|  |^(?:LOCAL|MAKEFLOW)")
_METRIC = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([KMGTP]?)B?\s*", re.IGNORECASE)
_METRIC_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}


def parse_metric(text: str) -> int | None:
    """A metric number (``12``, ``4G`` = 4 * 1024**3), or ``None`` if ``text`` is not one."""
    m = _METRIC.fullmatch(text)
    if m is None or len(m.group(1)) > 30:  # more digits than any machine has bytes
        return None
    return int(float(m.group(1)) * 1024 ** _METRIC_POWERS[m.group(2).upper()])


def is_true(value: str) -> bool:
    """The reference's truth test for ``BATCH_LOCAL``: ``true``, ``yes`` or an integer > 0."""
    v = value.strip().lower()
    if v in ("true", "yes"):
        return True
    try:
        return int(v) > 0
    except ValueError:
        return False


def _stderr_notice(message: str) -> None:
    print(message, file=sys.stderr)


def parse_file(
    path: str,
    *,
    fmt: str = "make",
    jx_args: str | Sequence[str] | None = None,
    jx_define: Mapping[str, str] | Iterable[str] | None = None,
    environ: Mapping[str, str] | None = None,
    notice: Notice | None = None,
) -> Workflow:
    """Read and parse the workflow file at ``path`` (``fmt``: ``make``, ``json`` or ``jx``).

    ``jx_args`` is one file or several (applied in order); ``jx_define`` maps
    names to JX expressions, or is a list of ``NAME=EXPR`` strings.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ParseError(f"cannot read workflow: {e.strerror}", path, 0, 0) from None
    return parse_text(
        data, path, fmt=fmt, jx_args=jx_args, jx_define=jx_define, environ=environ, notice=notice
    )


def parse_text(
    text: str | bytes,
    filename: str,
    *,
    fmt: str = "make",
    jx_args: str | Sequence[str] | None = None,
    jx_define: Mapping[str, str] | Iterable[str] | None = None,
    environ: Mapping[str, str] | None = None,
    notice: Notice | None = None,
) -> Workflow:
    """Parse workflow text; ``filename`` names it in messages and in ``Rule.file``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    if environ is None:
        environ = os.environ
    if notice is None:
        notice = _stderr_notice
    if fmt == "make":
        return MakeParser(text, filename, environ, notice).parse()
    if fmt in ("json", "jx"):
        return workflow_from_jx(
            text,
            filename,
            jx=fmt == "jx",
            jx_args=jx_args,
            jx_define=jx_define,
            environ=environ,
        )
    raise ParseError(f"unknown workflow format {fmt!r} (expected make, json or jx)", filename, 0, 0)


class _Var:
    """One variable in one table: its values in file order, each with the rule count when set.

    A rule with id k sees the last value whose ``ids`` entry is <= k, which
    is what makes scope positional without copying tables per rule.
    """

    __slots__ = ("ids", "values", "lines", "sets")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.values: list[str] = []
        self.lines: list[int] = []
        self.sets = 0  # assignments made, also those replaced before any rule saw them

    def set(self, rule_count: int, value: str, line: int) -> None:
        self.sets += 1
        if self.ids and self.ids[-1] == rule_count:
            self.values[-1] = value
            self.lines[-1] = line
        else:
            self.ids.append(rule_count)
            self.values.append(value)
            self.lines.append(line)

    def as_of(self, rule_id: int) -> str | None:
        i = bisect_right(self.ids, rule_id) - 1
        return self.values[i] if i >= 0 else None


class _Pending:
    """A rule whose header has been read and whose command has not."""

    __slots__ = ("targets", "sources", "renames", "line", "locals", "category")

    def __init__(self, targets, sources, renames, line, category):
        self.targets = targets
        self.sources = sources
        self.renames = renames
        self.line = line
        self.locals: dict[str, str] | None = None
        self.category = category


class MakeParser:
    """Parser for the Make form of the language (docs/makeflow.md)."""

    def __init__(self, text: str, filename: str, environ: Mapping[str, str], notice: Notice):
        if "\r\n" in text:
            text = text.replace("\r\n", "\n")
            notice(
                f"{filename}: warning: the file has CRLF line endings; the carriage returns are ignored."
            )
        self.text = text
        self.filename = filename
        self.environ = dict(environ)  # a plain copy: os.environ's lookups are slow per rule
        self.notice = notice
        self.wf = Workflow(path=filename)
        self.wf.category(DEFAULT_CATEGORY)
        # category name -> variable name -> _Var
        self.tables: dict[str, dict[str, _Var]] = {DEFAULT_CATEGORY: {}}
        self.category = DEFAULT_CATEGORY
        self.pending: _Pending | None = None
        self.exports: dict[str, None] = {}
        self.defined_at: dict[str, int] = {}  # target -> line of its rule
        self.rule_locals: dict[int, dict[str, str]] = {}
        self.assign_ids: list[int] = []  # rule counts at which a table changed, in order
        self.lexer = Lexer(text, filename, self)

    # ----------------------------------------------------------------- scope
    def get(self, name: str) -> str | None:
        """The value of ``name`` at the current position (lookup order: docs/makeflow.md, 'Variables')."""
        p = self.pending
        if p is not None and p.locals is not None:
            v = p.locals.get(name)
            if v is not None:
                return v
        return self._global(name)

    def _global(self, name: str) -> str | None:
        if self.category != DEFAULT_CATEGORY:
            var = self.tables[self.category].get(name)
            if var is not None:
                return var.values[-1]
        var = self.tables[DEFAULT_CATEGORY].get(name)
        if var is not None:
            return var.values[-1]
        return self.environ.get(name)

    def undefined(self, name: str) -> str:
        for cat, table in self.tables.items():
            var = table.get(name)
            if var is not None and cat not in (self.category, DEFAULT_CATEGORY):
                return (
                    f"Variable {excerpt(name)} has not yet been defined (it was set at line {var.lines[-1]} "
                    f"while category {excerpt(cat)} was active, so only rules of category {excerpt(cat)} can use it)"
                )
        return f"Variable {excerpt(name)} has not yet been defined"

    # ------------------------------------------------------------- main loop
    def parse(self) -> Workflow:
        text = self.text
        nul = text.find("\0")
        if nul >= 0:
            # No command, file name or value can hold one (the OS cuts strings there), so it is
            # refused wherever it stands, before anything is run (issue 9, defect 5).
            raise self.lexer.error("NUL character: a workflow file cannot hold one", nul)
        n = len(text)
        pos = 0
        lineno = 1
        lx = self.lexer
        header_slow = _HEADER_SLOW.search
        command_slow = _COMMAND_SLOW.search
        while pos < n:
            nl = text.find("\n", pos)
            if nl < 0:
                nl = n
            c = text[pos]
            if c == "#":
                pos = nl + 1
                lineno += 1
                continue
            if c == " " or c == "\t":
                body = text[pos:nl].lstrip(" \t")
                if not body or body[0] == "#":
                    pos = nl + 1
                    lineno += 1
                    continue
                if body[0] == "@" and self.pending is not None:
                    # An indented "@NAME=value" before the command is a rule-local
                    # assignment: the reference's own scope test is written that way.
                    lx.start(nl - len(body), lineno, pos)
                    self._statement(lineno)
                    lineno += text.count("\n", pos, lx.pos)
                    pos = lx.pos
                    continue
                if self.pending is None:
                    raise ParseError(
                        "Unexpected token. Expected a rule, an assignment, export or a directive, but got: COMMAND",
                        self.filename,
                        lineno,
                        1,
                    )
                if not command_slow(body):
                    self._finish_rule(body, False)
                    pos = nl + 1
                    lineno += 1
                    continue
                start = nl - len(body)
                pos = self._slow_command(start, lineno)
                lineno += text.count("\n", start, pos)
                continue
            if c == "\n":
                pos += 1
                lineno += 1
                continue
            line = text[pos:nl]
            if not line.strip(" \t"):
                pos = nl + 1
                lineno += 1
                continue
            if c != "@" and self.pending is None and line.count(":") == 1 and not header_slow(line):
                left, _, right = line.partition(":")
                targets = left.split()
                sources = right.split()
                if "-" not in line or not (_dash_start(targets) or _dash_start(sources)):
                    self._start_rule(tuple(targets), tuple(sources), None, lineno)
                    pos = nl + 1
                    lineno += 1
                    continue
            lx.start(pos, lineno, pos)
            self._statement(lineno)
            lineno += text.count("\n", pos, lx.pos)
            pos = lx.pos
        if self.pending is not None:
            raise ParseError("Rule does not have a command", self.filename, self.pending.line, 1)
        self._finish()
        return self.wf

    # ------------------------------------------------------------ statements
    def _statement(self, lineno: int) -> None:
        """A line in column 0 that is not a comment: header, assignment, export or directive."""
        lx = self.lexer
        text = self.text
        at_sign = text[lx.pos] == "@"
        if at_sign:
            lx.pos += 1
            lx.skip_blanks()
            colon, equal = -1, lookahead(text, lx.pos)[1]
        else:
            colon, equal = lookahead(text, lx.pos)
        if colon >= 0 and (equal < 0 or colon < equal):
            if self.pending is not None:
                raise lx.error("Expected COMMAND or VARIABLE, got: FILES")
            self._header(lineno)
            return
        start = lx.pos
        if lx.pos < len(text) and text[lx.pos] == ".":
            if equal >= 0:
                raise lx.error("Expecting a keyword or a variable name.")
            self._directive()
            return
        name = lx.syntax_name()
        if name == "export":
            if self.pending is not None:
                raise lx.error("Expected COMMAND or VARIABLE, got: SYNTAX", start)
            self._export()
            return
        if equal < 0:
            raise lx.error(f"Unrecognized keyword: {excerpt(name)}", start)
        self._assignment(name, lineno)

    def _assignment(self, name: str, lineno: int) -> None:
        lx = self.lexer
        text = self.text
        lx.skip_blanks()
        op_pos = lx.pos
        if op_pos < len(text) and text[op_pos] == "=":
            op = "="
            lx.pos += 1
        elif text.startswith("+=", op_pos):
            op = "+"
            lx.pos += 2
        elif op_pos + 1 < len(text) and text[op_pos + 1] == "=":
            raise lx.error("Unknown variable operator", op_pos)
        else:
            raise lx.error("Missing = in variable definition.", op_pos)
        value = lx.value()
        self._set(name, op, value, lineno, op_pos)

    def _set(self, name: str, op: str, value: str, lineno: int, at: int) -> None:
        """Bind ``name`` at the current position (rule-local inside a rule)."""
        if name in RESOURCE_VARIABLES and value.strip() and parse_metric(value) is None:
            raise self.lexer.error(f"Expected numeric value for {name}", at)
        if name in DEPRECATED_VARIABLES:
            self.notice(
                f"{self.filename}:{lineno}: warning: {name} is deprecated and has no effect."
            )
        p = self.pending
        if p is not None:
            if p.locals is None:
                p.locals = {}
            if op == "+":
                base = p.locals.get(name)
                if base is None:
                    base = self._global(name)
                value = value if base is None else f"{base} {value}"
            p.locals[name] = value
            if name in ("CATEGORY", "SYMBOL"):
                p.category = value
                self._table(value)
            return
        if op == "+":
            base = self._global(name)
            value = value if base is None else f"{base} {value}"
        table = self.tables[DEFAULT_CATEGORY] if name == "CATEGORY" else self.tables[self.category]
        var = table.get(name)
        if var is None:
            var = table[name] = _Var()
        count = len(self.wf.rules)
        var.set(count, value, lineno)
        if not self.assign_ids or self.assign_ids[-1] != count:
            self.assign_ids.append(count)
        if name in ("CATEGORY", "SYMBOL"):
            self.category = value
            self._table(value)

    def _table(self, category: str) -> dict[str, _Var]:
        table = self.tables.get(category)
        if table is None:
            table = self.tables[category] = {}
            self.wf.category(category)
        return table

    def _export(self) -> None:
        lx = self.lexer
        text = self.text
        lx.skip_blanks()
        lineno = lx.where()[0]
        if lookahead(text, lx.pos)[1] >= 0:
            name = lx.syntax_name()
            self._assignment(name, lineno)
            self.exports[name] = None
            return
        count = 0
        while True:
            lx.skip_blanks()
            if lx.at_end_of_line():
                lx.pos += 1
                break
            if text[lx.pos] == "#":
                lx.skip_comment()
                break
            self.exports[lx.syntax_name()] = None
            count += 1
        if count == 0:
            raise lx.error(
                "The export syntax needs the explicit name of the variables to be exported."
            )

    def _directive(self) -> None:
        lx = self.lexer
        start = lx.pos
        lineno = lx.where()[0]
        words = lx.words()
        kind, args = words[0], words[1:]
        if kind == ".MAKEFLOW":
            if len(args) != 2:
                raise lx.error(f"Expected two arguments to .MAKEFLOW, got: {excerpt(' '.join(args))}", start)
            what, arg = args
            if what == "CATEGORY":
                self._set("CATEGORY", "=", arg, lineno, start)
            elif what == "MODE":
                if arg not in ALLOCATION_MODES:
                    raise lx.error("Expected one of: MAX_THROUGHPUT, MIN_WASTE, FIXED.", start)
                self.wf.category(self.category).mode = arg
            elif what in RESOURCE_VARIABLES:
                if parse_metric(arg) is None:
                    raise lx.error(f"Expected numeric value for {what}", start)
                self._set(what, "=", arg, lineno, start)
            else:
                raise lx.error(
                    "Unsupported .MAKEFLOW directive, expected "
                    f"(CATEGORY|MODE|CORES|DISK|MEMORY|GPUS|WALL_TIME|MPI_PROCESSES), got: {excerpt(what)}",
                    start,
                )
        elif kind == ".SIZE":
            if len(args) != 2:
                raise lx.error("Expected a file name and a size after .SIZE", start)
            size = parse_metric(args[1])
            if size is None:
                raise lx.error(f"Expected numeric value for the size of {excerpt(args[0])}", start)
            self.wf.sizes[args[0]] = size
        elif kind in (".UMBRELLA", ".UMBRELA"):
            if len(args) != 2 or args[0] != "SPEC":
                raise lx.error(f"Unsupported {excerpt(kind)} directive, expected SPEC FILE", start)
            self._set("SPEC", "=", args[1], lineno, start)
            self.notice(
                f"{self.filename}:{lineno}: notice: .UMBRELLA is accepted but ignored (no umbrella support)."
            )
        else:
            raise lx.error(f"Unknown directive: {excerpt(kind)}", start)

    # ----------------------------------------------------------------- rules
    def _header(self, lineno: int) -> None:
        lx = self.lexer
        tokens: list = []
        lx.file_tokens(tokens)
        items = join_names(tokens)
        targets: list[str] = []
        sources: list[str] = []
        renames: dict[str, str] | None = None
        side = targets
        i = 0
        while i < len(items):
            t = items[i]
            if t is COLON:
                side = sources
                i += 1
                continue
            if t is ARROW:
                raise ParseError("Expecting a filename.", self.filename, lineno, 1)
            if i + 1 < len(items) and items[i + 1] is ARROW:
                if i + 2 >= len(items) or not isinstance(items[i + 2], str):
                    raise ParseError(
                        "Remote name specification is incomplete.", self.filename, lineno, 1
                    )
                if renames is None:
                    renames = {}
                renames[t] = items[i + 2]
                i += 3
            else:
                i += 1
            side.append(t)
        self._start_rule(tuple(targets), tuple(sources), renames, lineno)

    def _start_rule(self, targets: tuple, sources: tuple, renames, lineno: int) -> None:
        defined = self.defined_at
        for t in targets:
            first = defined.get(t)
            if first is not None:
                raise ParseError(
                    f"{excerpt(t)} is defined multiple times at {self.filename}:{first} and {self.filename}:{lineno}",
                    self.filename,
                    lineno,
                    1,
                )
            defined[t] = lineno
        self.pending = _Pending(targets, sources, renames, lineno, self.category)

    def _slow_command(self, start: int, lineno: int) -> int:
        lx = self.lexer
        lx.start(start, lineno, self.text.rfind("\n", 0, start) + 1)
        tokens: list = []
        lx.command_tokens(tokens)
        local = False
        nested = False
        i = 0
        while i < len(tokens):
            t = tokens[i]
            if t == "LOCAL":
                local = True
            elif t == "MAKEFLOW":
                nested = True
            elif t is not SPACE:
                break
            i += 1
        rest = tokens[i:]
        if not rest:
            if local or nested:
                raise ParseError("Command is empty.", self.filename, lineno, 1)
            # the command expanded to nothing: like a blank line, the rule still waits
            return lx.pos
        if nested:
            words = [t for t in rest if t is not SPACE]
            if len(words) != 1:
                raise ParseError(
                    "MAKEFLOW specification does not end with a newline", self.filename, lineno, 1
                )
            self._finish_rule(words[0], local, workflow=words[0])
        else:
            self._finish_rule(render_command(rest), local)
        return lx.pos

    def _finish_rule(self, command: str, local: bool, workflow: str | None = None) -> None:
        p = self.pending
        assert p is not None, "a rule's command line follows its dependency line"
        self.pending = None
        rid = len(self.wf.rules)
        locs = p.locals
        sources = p.sources
        if workflow is not None and workflow not in sources:
            sources = sources + (workflow,)
        resources = NO_RESOURCES
        batch_options = None
        if locs is not None:
            self.rule_locals[rid] = locs
            declared = {
                field: parse_metric(v)
                for var, field in RESOURCE_VARIABLES.items()
                if (v := locs.get(var)) is not None and v.strip()
            }
            if declared:
                resources = Resources(**declared)
            batch_options = locs.get("BATCH_OPTIONS")
        if batch_options is None:
            batch_options = self._table_value("BATCH_OPTIONS")
        if not local:
            flag = locs.get("BATCH_LOCAL") if locs is not None else None
            if flag is None:
                flag = self._global("BATCH_LOCAL")
            if flag is not None and is_true(flag):
                local = True
        self.wf.rules.append(
            Rule(
                rid,
                p.targets,
                sources,
                command,
                self.filename,
                p.line,
                1,
                p.category,
                resources,
                _EMPTY_ENV,
                local,
                workflow,
                None,
                batch_options,
                None,
                p.renames,
            )
        )

    def _table_value(self, name: str) -> str | None:
        """``name`` from the category tables only (no environment)."""
        if self.category != DEFAULT_CATEGORY:
            var = self.tables[self.category].get(name)
            if var is not None:
                return var.values[-1]
        var = self.tables[DEFAULT_CATEGORY].get(name)
        return var.values[-1] if var is not None else None

    # ------------------------------------------------------------ the ending
    def _finish(self) -> None:
        wf = self.wf
        default = self.tables[DEFAULT_CATEGORY]
        for cat, table in self.tables.items():
            declared = {}
            for var, field in RESOURCE_VARIABLES.items():
                v = table.get(var)
                if v is not None:
                    if v.sets > 1:
                        self.notice(
                            f"{var} defined multiple times for category {excerpt(cat)}. Using last defined value"
                        )
                    if v.values[-1].strip():
                        declared[field] = parse_metric(v.values[-1])
                elif cat == DEFAULT_CATEGORY:
                    env = self.environ.get(var)
                    if env is not None and parse_metric(env) is not None:
                        declared[field] = parse_metric(env)
            wf.category(cat).resources = Resources(**declared)
        for name, attr in (("MAKEFLOW_INPUTS", "inputs"), ("MAKEFLOW_OUTPUTS", "outputs")):
            entry = default.get(name)
            value = entry.values[-1] if entry is not None else self.environ.get(name)
            if value is not None:
                setattr(wf, attr, tuple(split_names(value)))
        self._environments()

    def _environments(self) -> None:
        """Give every rule its exported environment, sharing one mapping between equal ones."""
        names = list(self.exports)
        for special in ALWAYS_EXPORTED:
            if special not in self.exports and (
                any(special in t for t in self.tables.values())
                or any(special in locs for locs in self.rule_locals.values())
            ):
                names.append(special)
        rules = self.wf.rules
        if not names:
            shared: dict[str, str] = {}
            for r in rules:
                r.environment = shared
            return
        exported = self.exports
        tables = self.tables
        default = tables[DEFAULT_CATEGORY]
        environ = self.environ
        cache: dict[tuple, dict[str, str]] = {}
        assign_ids = self.assign_ids
        k = 0
        last_key = None
        last_env: dict[str, str] = {}
        for r in rules:
            while k < len(assign_ids) and assign_ids[k] <= r.id:
                k += 1
            locs = self.rule_locals.get(r.id)
            key = (r.category, k)
            if locs is None and key == last_key:
                r.environment = last_env
                continue
            env: dict[str, str] = {}
            table = tables.get(r.category) if r.category != DEFAULT_CATEGORY else None
            for name in names:
                v = locs.get(name) if locs is not None else None
                if v is None and table is not None and (var := table.get(name)) is not None:
                    v = var.as_of(r.id)
                if v is None and (var := default.get(name)) is not None:
                    v = var.as_of(r.id)
                if v is None and name in exported:
                    v = environ.get(name)
                if v is not None:
                    env[name] = v
            env = cache.setdefault(tuple(env.items()), env)
            r.environment = env
            if locs is None:
                last_key, last_env = key, env


_EMPTY_ENV: Mapping[str, str] = {}

_SPLIT = re.compile(r"\"([^\"]*)\"|'([^']*)'|([^\s\"']+)")


def split_names(value: str) -> list[str]:
    """Split a ``MAKEFLOW_INPUTS``-style list on blanks, honouring quotes."""
    return [a or b or c for a, b, c in _SPLIT.findall(value) if a or b or c]


def _dash_start(names: list[str]) -> bool:
    return any(n[0] == "-" for n in names)


# --------------------------------------------------------------------------- JSON / JX form

JX_RESOURCES = {
    "cores": "cores",
    "memory": "memory",
    "disk": "disk",
    "gpus": "gpus",
    "wall-time": "wall_time",
    "mpi-processes": "mpi_processes",
}
JX_DAG_NAME = ("dag_name", "path", "name")  # the documented key first, then older spellings
JX_TASK_NAME = ("task_name", "remote_path", "source")
JX_ALLOCATIONS = {"auto": "auto", "first": "auto", "max": "max", "error": "error"}


def workflow_from_jx(
    text: str,
    filename: str,
    *,
    jx: bool,
    jx_args: str | Sequence[str] | None = None,
    jx_define: Mapping[str, str] | Iterable[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Workflow:
    """Build a workflow from the JSON form, evaluating it as JX first when ``jx`` is true.

    ``define`` in the file gives the symbols; ``--jx-args`` (a file holding an
    object) and ``--jx-define`` (name = expression) override them. A
    sub-workflow's ``args`` object is written to ``<workflow>.<id>.args`` now,
    because the nested run reads it as its own ``--jx-args``.
    """
    from treadle.flow import jx as jxlang

    def fail(e: jxlang.JXError, where: str = filename) -> ParseError:
        return ParseError(e.message, where, e.line, e.column)

    try:
        tree = jxlang.parse(text)
    except jxlang.JXError as e:
        raise fail(e) from None
    except RecursionError:
        raise ParseError("expression nested too deeply", filename, 0, 0) from None
    bindings: dict = {}
    try:
        if jx:
            define_node = _define_node(tree, jxlang)
            if define_node is not None:
                if isinstance(define_node, jxlang.ObjectNode):
                    for knode, vnode in define_node.pairs:
                        key = jxlang.evaluate(knode)
                        if not isinstance(key, str):
                            raise knode.fail("define: names must be strings")
                        bindings[key] = jxlang.Lazy(vnode)
                else:
                    defined = jxlang.evaluate(define_node)
                    if not isinstance(defined, dict):
                        raise define_node.fail("define must be an object")
                    bindings.update(defined)
            for path in [jx_args] if isinstance(jx_args, str) else jx_args or []:
                bindings.update(_read_jx_args(path, jxlang, fail))
            for name, expr in _defines(jx_define, filename):
                try:
                    bindings[name] = jxlang.Lazy(jxlang.parse(expr))
                except jxlang.JXError as e:
                    raise ParseError(
                        f"--jx-define {name}: {e.message}", filename, e.line, e.column
                    ) from None
        top = jxlang.evaluate(tree, bindings)
    except jxlang.JXError as e:
        raise fail(e) from None
    except RecursionError:
        raise ParseError("expression nested too deeply", filename, 0, 0) from None
    return _JXBuilder(top, filename, environ if environ is not None else os.environ).build()


def _defines(jx_define, filename: str) -> list[tuple[str, str]]:
    """``--jx-define`` as (name, expression) pairs, from a mapping or from ``V=EXPR`` strings."""
    if jx_define is None:
        return []
    if isinstance(jx_define, Mapping):
        return list(jx_define.items())
    pairs = []
    for item in jx_define:
        name, sep, expr = item.partition("=")
        if not sep or not name:
            raise ParseError(f"--jx-define expects VAR=EXPR, got {excerpt(repr(item))}", filename, 0, 0)
        pairs.append((name, expr))
    return pairs


def _first_key(obj: dict, keys: tuple[str, ...]):
    for k in keys:
        if k in obj:
            return obj[k]
    return None


def _define_node(tree, jxlang):
    """The unevaluated ``define`` value of the top-level object literal, if any."""
    if not isinstance(tree, jxlang.ObjectNode):
        return None
    for knode, vnode in tree.pairs:
        if isinstance(knode, jxlang.Const) and knode.value == "define":
            return vnode
    return None


def _read_jx_args(path: str, jxlang, fail) -> dict:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as e:
        raise ParseError(f"cannot read --jx-args file: {e.strerror}", path, 0, 0) from None
    try:
        value = jxlang.evaluate(jxlang.parse(text))
    except jxlang.JXError as e:
        raise fail(e, path) from None
    if not isinstance(value, dict):
        raise ParseError("--jx-args must hold an object", path, 1, 1)
    return value


class _JXBuilder:
    """Turns the evaluated top-level JX object into a ``Workflow``."""

    def __init__(self, top, filename: str, environ: Mapping[str, str]):
        self.top = top
        self.filename = filename
        self.environ = environ
        self.wf = Workflow(path=filename)
        self.env_cache: dict[tuple, dict[str, str]] = {}
        self.args_files: list[tuple[str, dict, dict]] = []  # written once all rules are good

    def error(self, message: str, obj=None) -> ParseError:
        return ParseError(message, self.filename, getattr(obj, "line", 1) or 1, 1)

    def build(self) -> Workflow:
        top = self.top
        if not isinstance(top, dict):
            raise self.error('the workflow must be an object with a "rules" array')
        wf = self.wf
        default = top.get("default_category", DEFAULT_CATEGORY)
        if not isinstance(default, str):
            raise self.error("default_category must be a string", top)
        wf.default_category = default
        wf.category(default)
        cats = top.get("categories", {})
        if not isinstance(cats, dict):
            raise self.error("categories must be an object", top)
        for name, spec in cats.items():
            if not isinstance(spec, dict):
                raise self.error(f"category {excerpt(name)} must be an object", cats)
            cat = wf.category(name)
            cat.resources = self.resources(spec.get("resources", {}), spec)
            cat.environment = self.strings(spec.get("environment", {}), f"category {excerpt(name)}", spec)
        self.global_env = self.strings(top.get("environment", {}), "environment", top)
        rules = top.get("rules", [])
        if not isinstance(rules, list):
            raise self.error("rules must be an array", top)
        defined: dict[str, int] = {}
        for spec in rules:
            rule = self.rule(len(wf.rules), spec, getattr(rules, "line", 1))
            for t in rule.targets:
                first = defined.get(t)
                if first is not None:
                    raise self.error(
                        f"{excerpt(t)} is defined multiple times at {self.filename}:{first} "
                        f"and {self.filename}:{rule.line}",
                        spec,
                    )
                defined[t] = rule.line
            wf.rules.append(rule)
        self.write_args()
        return wf

    def rule(self, rid: int, spec, line: int) -> Rule:
        if not isinstance(spec, dict):
            raise ParseError(f"rule {rid} must be an object", self.filename, line, 1)
        line = getattr(spec, "line", line) or line
        command = spec.get("command")
        workflow = spec.get("workflow")
        if (command is None) == (workflow is None):
            raise self.error(f"rule {rid} must have either a command or a workflow", spec)
        if command is not None and not isinstance(command, str):
            raise self.error(f"rule {rid}: command must be a string", spec)
        if workflow is not None and not isinstance(workflow, str):
            raise self.error(f"rule {rid}: workflow must be a string", spec)
        sources, src_renames = self.files(spec.get("inputs", []), rid, "inputs", spec)
        targets, tgt_renames = self.files(spec.get("outputs", []), rid, "outputs", spec)
        renames = {**src_renames, **tgt_renames} or None
        args_path = None
        if workflow is not None:
            command = workflow
            if workflow not in sources:
                sources = sources + (workflow,)
            args = spec.get("args")
            if args is not None:
                if not isinstance(args, dict):
                    raise self.error(f"rule {rid}: args must be an object", spec)
                args_path = f"{workflow}.{rid}.args"
                self.args_files.append((args_path, args, spec))
        assert command is not None  # exactly one of command and workflow, checked above
        local = spec.get("local_job", False)
        if not isinstance(local, bool):
            raise self.error(f"rule {rid}: local_job must be true or false", spec)
        category = spec.get("category", self.wf.default_category)
        if not isinstance(category, str):
            raise self.error(f"rule {rid}: category must be a string", spec)
        cat = self.wf.category(category)
        resources = self.resources(spec.get("resources", {}), spec)
        allocation = spec.get("allocation")
        if allocation is not None:
            if allocation not in JX_ALLOCATIONS:
                raise self.error(
                    f"rule {rid}: allocation must be auto, max or error, got {excerpt(repr(allocation))}", spec
                )
            allocation = JX_ALLOCATIONS[allocation]
        own_env = self.strings(spec.get("environment", {}), f"rule {rid} environment", spec)
        env = {**self.global_env, **cat.environment, **own_env}
        env = self.env_cache.setdefault(tuple(env.items()), env)
        # A string literal with a NUL is refused where it stands (jx.py); this catches one an
        # expression made, e.g. format("%c", 0), which has no column of its own.
        if any("\0" in text for text in (command, category, *sources, *targets, *(renames or {}).values(),
                                          *env.keys(), *env.values())):
            raise self.error(f"rule {rid}: NUL character in its command, files or environment", spec)
        return Rule(
            rid,
            targets,
            sources,
            command,
            self.filename,
            line,
            1,
            category,
            resources if not resources.is_empty() else NO_RESOURCES,
            env,
            local,
            workflow,
            args_path,
            None,
            allocation,
            renames,
        )

    def files(self, items, rid: int, what: str, spec) -> tuple[tuple[str, ...], dict[str, str]]:
        """Names (and renames) of ``inputs``/``outputs``.

        The documented form is an array of strings or of ``{"dag_name", "task_name"}``;
        the reference's older test files also use ``{"path": …}`` (and ``name``/
        ``source``), and a single item instead of an array, so those are read too.
        """
        if isinstance(items, (str, dict)):
            items = [items]
        if not isinstance(items, list):
            raise self.error(f"rule {rid}: {what} must be an array", spec)
        names: list[str] = []
        renames: dict[str, str] = {}
        for item in items:
            if isinstance(item, str):
                names.append(item)
                continue
            dag = _first_key(item, JX_DAG_NAME) if isinstance(item, dict) else None
            if not isinstance(dag, str):
                raise self.error(
                    f"rule {rid}: each of {what} must be a string or an object with dag_name", spec
                )
            names.append(dag)
            task = _first_key(item, JX_TASK_NAME)
            if task is not None:
                if not isinstance(task, str):
                    raise self.error(f"rule {rid}: task_name must be a string", spec)
                renames[dag] = task
        return tuple(names), renames

    def resources(self, spec, where) -> Resources:
        if not isinstance(spec, dict):
            raise self.error("resources must be an object", where)
        declared = {}
        for key, value in spec.items():
            field = JX_RESOURCES.get(key)
            if field is None:
                raise self.error(
                    f"unknown resource {excerpt(repr(key))} (expected one of {', '.join(JX_RESOURCES)})", where
                )
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (isinstance(value, float) and not math.isfinite(value))
            ):
                raise self.error(f"resource {key} must be a number", where)
            declared[field] = int(value)
        return Resources(**declared)

    def strings(self, spec, what: str, where) -> dict[str, str]:
        if not isinstance(spec, dict):
            raise self.error(f"{what} must be an object", where)
        from treadle.flow.jx import is_atomic, to_text

        out = {}
        for k, v in spec.items():
            if not is_atomic(v) or v is None:
                raise self.error(f"{what}: the value of {excerpt(k)} must be a string", where)
            out[k] = to_text(v)
        return out

    def write_args(self) -> None:
        """Write each sub-workflow's ``args`` object where its nested run will read it."""
        from treadle.flow.jx import dumps

        for path, args, spec in self.args_files:
            try:
                with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
                    f.write(dumps(args) + "\n")
            except OSError as e:
                raise self.error(f"cannot write {excerpt(path)}: {e.strerror}", spec) from None
