"""Options: resources and placement of tasks, on a stack (docs/weaver.md, "Options")."""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from treadle.weave import context
from treadle.weave.diagnostics import error
from treadle.weave.nest import CurrentScript

_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?)\s*(?:([KMGT])B?)?\s*", re.IGNORECASE)



def megabytes(value: int | str | None, what: str) -> int | None:
    """MB from an int (already MB) or a string with K/M/G/T (binary), rounded up."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise error(f"{what} must be a size, not {value!r}")
    if isinstance(value, int | float):
        return math.ceil(value)
    m = _SIZE.fullmatch(str(value))
    if not m:
        raise error(f"{what}={value!r} is not a size (examples: 512, '2G', '500MB')")
    return math.ceil(float(m.group(1)) * _UNITS[(m.group(2) or "M").upper()])


class Options:
    """Resources and placement; ``None`` inherits, any other value (even 0/False) overrides."""

    def __init__(
        self,
        cpu: int | None = None,
        memory: int | str | None = None,
        disk: int | str | None = None,
        batch: str | None = None,
        local: bool | None = None,
        collect: bool | None = None,
        environment: dict[str, Any] | None = None,
        cores: int | None = None,
    ):
        if cpu is not None and cores is not None and cpu != cores:
            raise error("give cpu= or cores=, not both")
        self.cpu = cpu if cpu is not None else cores
        self.memory = memory
        self.disk = disk
        self.batch = batch
        self.local = local
        self.collect = collect
        self.environment = dict(environment or {})
        megabytes(memory, "memory")  # validate now, at the user's line
        megabytes(disk, "disk")

    @property
    def memory_mb(self) -> int | None:
        return megabytes(self.memory, "memory")

    @property
    def disk_mb(self) -> int | None:
        return megabytes(self.disk, "disk")

    def merged(self, inner: Options) -> Options:
        """These options with ``inner``'s non-None values over them."""
        out = Options()
        for name in ("cpu", "memory", "disk", "batch", "local", "collect"):
            value = getattr(inner, name)
            setattr(out, name, getattr(self, name) if value is None else value)
        out.environment = {**self.environment, **inner.environment}
        return out

    def __enter__(self) -> Options:
        CurrentScript()
        context.OPTIONS.append(self)
        logging.getLogger("treadle.weave.options").debug("enter %s", self)
        return self

    def __exit__(self, *exc: object) -> None:
        context.OPTIONS.remove(self)

    def __repr__(self) -> str:
        def show(v: object) -> str:
            return "None" if v is None else str(v)

        return (
            f"Options(cpu={show(self.cpu)}, memory={show(self.memory)}, disk={show(self.disk)}, "
            f"batch={show(self.batch)}, local={show(self.local)}, collect={show(self.collect)}, "
            f"environment={self.environment})"
        )

    __str__ = __repr__


def CurrentOptions() -> Options:  # noqa: N802 - the Weaver API's name
    """The innermost Options block merged with the script's -b options (which win)."""
    merged = Options()
    for block in context.OPTIONS:
        merged = merged.merged(block)
    script = CurrentScript()
    if script.options is not None:
        merged = merged.merged(script.options)
    return merged


def parse_b_options(values: list[str]) -> Options:
    """``-b cpu=2,memory=1G`` (repeatable): a comma starts a new pair only before ``key=``."""
    keys = ("cpu", "cores", "memory", "disk", "batch", "local", "collect")
    pairs: dict[str, str] = {}
    split = re.compile(r",(?=(?:{})=)".format("|".join(keys)))
    for value in values:
        for item in split.split(value):
            key, sep, val = item.partition("=")
            key = key.strip()
            if not sep or key not in keys:
                raise error(f"-b {item!r}: expected KEY=VALUE with KEY one of {', '.join(keys)}")
            pairs["cpu" if key == "cores" else key] = val
    kwargs: dict[str, Any] = {}
    for key, val in pairs.items():
        if key == "cpu":
            if not val.isdigit():
                raise error(f"-b cpu={val!r}: expected a whole number")
            kwargs[key] = int(val)
        elif key in ("local", "collect"):
            kwargs[key] = val.strip().lower() in ("1", "true", "yes", "on")
        else:
            kwargs[key] = val
    return Options(**kwargs)
