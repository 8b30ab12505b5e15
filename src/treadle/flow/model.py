"""The workflow model: one object per rule, shared by the parser, the engine and Weaver.

A rule in a Makeflow file, a task emitted by Weaver and a job handed to a
backend are three views of one thing. The parser and Weaver build
``Rule``s; the engine turns each into a ``treadle.backends.base.Job`` once, at
submission.

The objects are small and slotted because a workflow may hold a million rules:
names are plain strings, renames are kept only for the rules that have them,
and rules that see the same exported environment share one mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from treadle.backends.base import NO_RESOURCES, RESOURCE_NAMES, Resources

DEFAULT_CATEGORY = "default"
DEFAULT_FILE_SIZE_ESTIMATE = 1073741824  # bytes; the reference's estimate without .SIZE

__all__ = [
    "DEFAULT_CATEGORY", "DEFAULT_FILE_SIZE_ESTIMATE", "NO_RESOURCES", "RESOURCE_NAMES",
    "Category", "Resources", "Rule", "Workflow",
]


@dataclass(slots=True)
class Category:
    """A named group of rules with shared resources (the last value assigned wins)."""

    name: str
    resources: Resources = field(default_factory=Resources)
    mode: str | None = None  # MAX_THROUGHPUT, MIN_WASTE or FIXED (used by wq)
    environment: dict[str, str] = field(default_factory=dict)  # JX categories only


@dataclass(slots=True, eq=False)
class Rule:
    """One rule: a command that reads ``sources`` and writes ``targets``.

    ``sources`` and ``targets`` hold workflow-side names (the names in the
    workflow's directory). ``remote_names`` maps a workflow-side name to the
    name the file has inside a task's sandbox, for the ``LOCAL->REMOTE`` form;
    it is ``None`` for the vast majority of rules that rename nothing.
    """

    id: int
    targets: tuple[str, ...]
    sources: tuple[str, ...]
    command: str
    file: str = ""
    line: int = 0
    column: int = 1
    category: str = DEFAULT_CATEGORY
    resources: Resources = NO_RESOURCES  # rule-local declarations only
    environment: Mapping[str, str] = field(default_factory=dict)  # exported vars, as of this rule
    local: bool = False
    workflow: str | None = None  # sub-workflow file for MAKEFLOW rules
    workflow_args: str | None = None  # JX args file written for a sub-workflow
    batch_options: str | None = None
    allocation: str | None = None  # JX: auto, max or error
    remote_names: dict[str, str] | None = None

    def remote_name(self, name: str) -> str:
        """The name of a file (source or target) inside the task's sandbox."""
        if self.remote_names is None:
            return name
        return self.remote_names.get(name, name)

    @property
    def where(self) -> str:
        """``FILE:LINE``, for messages and summaries."""
        return f"{self.file}:{self.line}"


@dataclass(slots=True, eq=False)
class Workflow:
    """A parsed workflow: rules in id order plus the file-level settings."""

    path: str
    rules: list[Rule] = field(default_factory=list)
    categories: dict[str, Category] = field(default_factory=dict)
    inputs: tuple[str, ...] | None = None  # MAKEFLOW_INPUTS: never deleted
    outputs: tuple[str, ...] | None = None  # MAKEFLOW_OUTPUTS: the final outputs
    sizes: dict[str, int] = field(default_factory=dict)  # .SIZE estimates, bytes
    default_category: str = DEFAULT_CATEGORY

    def category(self, name: str) -> Category:
        """The category called ``name``, created empty on first use."""
        cat = self.categories.get(name)
        if cat is None:
            cat = self.categories[name] = Category(name)
        return cat

    def resources_of(self, rule: Rule) -> Resources:
        """Effective resources: rule-local, then the rule's category, then the default category."""
        own = self.categories.get(rule.category)
        default = self.categories.get(self.default_category)
        fallbacks = [c.resources for c in (own, default) if c is not None]
        return rule.resources.overlaid(*fallbacks)

    def producers(self) -> dict[str, int]:
        """Map each generated file to the id of the rule that creates it."""
        return {t: r.id for r in self.rules for t in r.targets}

    def original_inputs(self) -> list[str]:
        """Files some rule reads and no rule creates, in first-use order."""
        made = self.producers()
        seen: dict[str, None] = {}
        for r in self.rules:
            for s in r.sources:
                if s not in made:
                    seen.setdefault(s)
        return list(seen)

    def final_outputs(self) -> list[str]:
        """``MAKEFLOW_OUTPUTS`` if set, else every generated file that no rule consumes."""
        if self.outputs is not None:
            return list(self.outputs)
        consumed = {s for r in self.rules for s in r.sources}
        return [t for r in self.rules for t in r.targets if t not in consumed]
