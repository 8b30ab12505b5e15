"""A task: one rule of a DAG as the compiler builds it, before it is written."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True, eq=False)
class Task:
    """One rule. Names are DAG names (relative to the sandbox root, or absolute)."""

    outputs: list[str]
    inputs: list[str]
    command: str
    category: str | None = None
    cores: int | None = None
    memory: int | None = None  # MB
    disk: int | None = None  # MB
    batch: str | None = None
    local: bool = False
    environment: dict[str, str] = field(default_factory=dict)
    workflow: str | None = None  # sub-DAG name for MAKEFLOW rules
    collect: tuple[str, ...] = ()  # inputs marked for garbage collection
    symbol: str | None = None  # `-g`: "script.py:LINE Map0"
    site: int = -1  # index into Script.sites, for duplicate-output messages
