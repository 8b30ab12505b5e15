"""Collecting the rules of one DAG, and grouping tasks into inline sub-DAGs.

A nest's DAG may hold a million rules, so rules are spooled to a temporary file
as they are scheduled and only names (not rule objects) stay in memory. The
header, which depends on every rule (exports, MAKEFLOW_OUTPUTS), is written
when the DAG is finished; the finished file is renamed into place only when the
whole compile succeeds, so a failed compile leaves no new DAG behind.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable, Iterable
from typing import Protocol

from treadle.errors import WorkflowError
from treadle.flow.writer import (
    JSON_END,
    SPECIAL_VARIABLES,
    header_json,
    header_make,
    rule_json,
    rule_make,
)
from treadle.weave.diagnostics import error
from treadle.weave.task import Task


def render_make(task: Task) -> str:
    """One task as a Makeflow rule: its resources, batch options and environment as rule variables."""
    variables: list[tuple[str, str]] = []
    if task.category:
        variables.append(("CATEGORY", task.category))
    for name, value in (("CORES", task.cores), ("MEMORY", task.memory), ("DISK", task.disk),
                        ("BATCH_OPTIONS", task.batch)):
        if value is not None:
            variables.append((name, str(value)))
    variables.extend(task.environment.items())
    return rule_make(task.outputs, task.inputs, task.command, variables, local=task.local,
                     workflow=task.workflow, comment=task.symbol)


def render_json(task: Task) -> str:
    """One task as a JSON workflow's rule."""
    resources = {k: v for k, v in (("cores", task.cores), ("memory", task.memory),
                                    ("disk", task.disk)) if v is not None}
    return rule_json(task.outputs, task.inputs, task.command, category=task.category,
                     resources=resources, environment=task.environment, local=task.local,
                     workflow=task.workflow)


class Sink(Protocol):
    """Anything that accepts tasks: a DAG, or a grouping stage in front of one."""

    def add(self, task: Task) -> None: ...

    def close(self) -> None: ...


class DagWriter:
    """The rules of one DAG file; ``finish()`` writes it under a temporary name."""

    def __init__(self, path: str, dag_name: str, fmt: str, comment: str,
                 small: bool = False, track_inputs: bool = False):
        self.path = path
        self.dag_name = dag_name
        self.fmt = fmt
        self.comment = comment
        self.count = 0
        self.track_inputs = track_inputs
        self.env_names: dict[str, None] = {}
        self.env_values: dict[str, str] = {}
        self.produced: list[str] = []
        self.consumed: dict[str, None] = {}
        self.collected: set[str] = set()
        self.defines: dict[str, str] = {}
        self.exports: dict[str, str | None] = {}
        self._render = render_json if fmt == "json" else render_make
        self._spool_path: str | None = None
        self.finished = False
        if small:
            self._spool: io.TextIOBase = io.StringIO()
        else:
            directory = os.path.dirname(path)
            os.makedirs(directory, exist_ok=True)
            fd, self._spool_path = tempfile.mkstemp(prefix=".spool-", dir=directory)
            self._spool = open(fd, "w", encoding="utf-8", errors="surrogateescape",  # noqa: SIM115
                               buffering=1 << 20)

    def add(self, task: Task) -> None:
        try:
            text = self._render(task)
        except WorkflowError as e:  # text no Makeflow file can hold, from the user's script
            raise error(str(e)) from None
        if self.fmt == "json" and self.count:
            self._spool.write(",\n")
        self._spool.write(text)
        self.count += 1
        self.produced.extend(task.outputs)
        if self.track_inputs:
            for name in task.inputs:
                self.consumed.setdefault(name)
        for name, value in task.environment.items():
            self.env_names.setdefault(name)
            self.env_values.setdefault(name, value)
        if task.collect:
            self.collected.update(task.collect)

    def close(self) -> None:
        """Nothing to do: a DAG ends when ``finish`` writes it."""

    def boundary(self, extra_inputs: Iterable[str] = ()) -> tuple[list[str], list[str]]:
        """The DAG's inputs (consumed, not produced here) and outputs, for its rule outside."""
        made = set(self.produced)
        inputs = [n for n in self.consumed if n not in made]
        for n in extra_inputs:
            if n not in made and n not in inputs:
                inputs.append(n)
        return inputs, list(dict.fromkeys(self.produced))

    def finish(self) -> str:
        """Write header and rules to a temporary file next to ``path``; return its name."""
        outputs = None
        if self.collected:
            outputs = [n for n in dict.fromkeys(self.produced) if n not in self.collected]
        exports = dict.fromkeys(self.exports)
        for name in self.env_names:
            if name not in SPECIAL_VARIABLES:
                exports.setdefault(name)
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".dag-", dir=directory)
        with open(fd, "w", encoding="utf-8", errors="surrogateescape") as out:
            try:
                if self.fmt == "json":
                    env = {k: v for k, v in self.exports.items() if v is not None}
                    out.write(header_json(self.defines, env, outputs))
                else:
                    out.write(header_make(self.comment, self.defines, list(exports), outputs))
            except WorkflowError as e:
                raise error(str(e)) from None
            if self._spool_path is None:
                out.write(self._spool.getvalue())  # type: ignore[attr-defined]  # a StringIO when small
            else:
                self._spool.close()
                with open(self._spool_path, encoding="utf-8", errors="surrogateescape") as spool:
                    while chunk := spool.read(1 << 20):
                        out.write(chunk)
                os.unlink(self._spool_path)
                self._spool_path = None
            if self.fmt == "json":
                out.write(JSON_END)
        os.chmod(tmp, 0o644)
        self.finished = True
        return tmp

    def discard(self) -> None:
        """Remove the spool of a compile that failed."""
        if self._spool_path is not None:
            self._spool.close()
            if os.path.exists(self._spool_path):
                os.unlink(self._spool_path)
            self._spool_path = None


class SubDag:
    """Tasks that go into their own DAG file, run from the parent by one MAKEFLOW rule.

    Used for inline groups (``group=`` / ``-t``) and for ``-a``. The sub-DAG lives at a
    stash path and shares the parent's directory and stash.
    """

    def __init__(self, parent: Sink, writer: DagWriter, category: str | None,
                 on_finish: list[tuple[str, str]]):
        self.parent = parent
        self.writer = writer
        self.category = category
        self.on_finish = on_finish

    def add(self, task: Task) -> None:
        self.writer.add(task)

    def close(self) -> None:
        inputs, outputs = self.writer.boundary()
        collect = tuple(n for n in inputs if n in self.writer.collected)
        tmp = self.writer.finish()
        self.on_finish.append((tmp, self.writer.path))
        self.parent.add(Task(outputs=outputs, inputs=inputs, command="",
                             category=self.category, workflow=self.writer.dag_name,
                             collect=collect))


class Grouper:
    """Puts consecutive tasks into inline sub-DAGs of ``size`` tasks, when there are more.

    The first ``size`` tasks wait; if a further task comes, they become a group. If
    not, they go to the parent as plain rules (grouping only pays off with many).
    """

    def __init__(self, parent: Sink, size: int, new_subdag: Callable[[], SubDag],
                 close_parent: bool = False):
        self.parent = parent
        self.close_parent = close_parent
        self.size = size
        self.new_subdag = new_subdag  # a SubDag writing into parent
        self.buffer: list[Task] = []
        self.grouping = False

    def add(self, task: Task) -> None:
        if len(self.buffer) >= self.size:
            self._flush()
            self.grouping = True
        self.buffer.append(task)

    def _flush(self) -> None:
        sub = self.new_subdag()
        for t in self.buffer:
            sub.add(t)
        sub.close()
        self.buffer = []

    def barrier(self) -> None:
        """End the current run of tasks: a task of another kind comes next."""
        if self.grouping:
            if self.buffer:
                self._flush()
        else:
            for t in self.buffer:
                self.parent.add(t)
        self.buffer = []
        self.grouping = False

    def close(self) -> None:
        self.barrier()
        if self.close_parent:
            self.parent.close()
