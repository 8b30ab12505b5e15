"""The compile context: the running script, its settings, and the four stacks.

A Weaver script talks to "the current nest", "the current options" and so on
(docs/weaver.md, "Running from a plain Python program"). Those are the tops of
module-level stacks kept here, so that every other module of the compiler reads
them from one place. The functions that read them with a default sit where the
default is defined: ``CurrentScript`` and ``CurrentNest`` in ``nest``,
``CurrentOptions`` in ``options``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from treadle.weave import diagnostics

if TYPE_CHECKING:
    from treadle.weave.abstractions import Abstraction
    from treadle.weave.nest import Nest
    from treadle.weave.options import Options

@dataclass
class Config:
    """Compiler settings from the ``treadle weave`` command line; defaults are the CLI's."""

    native: str | None = None  # --native: overrides every native= in the script
    strict: bool = False  # -W
    symbols: bool = False  # -g
    normalize: bool = True  # not -N
    fmt: str = "make"  # --format make|json
    db_aliases: dict[str, str] = field(default_factory=dict)  # --db ALIAS=URL
    nest_abstractions: bool = False  # -a
    inline: int = 1  # -t N
    wrapper: str | None = None  # -w, for Nest.execute
    engine_args: str = ""  # -e


class Script:
    """The script being compiled: ``CurrentScript()`` in a Weaver script."""

    def __init__(
        self,
        path: str | None = None,
        arguments: list[str] | tuple[str, ...] = (),
        output_directory: str | None = None,
        options: Options | None = None,
        config: Config | None = None,
    ):
        self.path = os.path.abspath(path) if path else os.path.abspath(sys.argv[0] or "weave")
        self.display = path or os.path.basename(self.path)
        self.arguments = list(arguments)
        stem = os.path.splitext(os.path.basename(self.path))[0] or "weave"
        self.output_directory = os.path.abspath(output_directory or f"{stem}.weave")
        self.options = options
        self.config = config or Config()
        self.start_time = time.time()
        # Per-compile caches: produced outputs (for duplicate detection), reflected tables,
        # generated datasets. They live here so that a new Script starts clean.
        self.produced: dict[str, int] = {}
        self.sites: list[str] = []
        self.site_index: dict[str, int] = {}
        self.sql_engines: dict[str, Any] = {}
        self.counters: dict[str, int] = {}
        self.abstractions: list[Abstraction] = []
        self.root: Nest | None = None
        self.cwd: str | None = os.getcwd()
        self.pending: list[tuple[str, str]] = []  # finished DAGs: (temporary file, final path)
        self.writers: list[Any] = []  # every DagWriter, so a failed compile can clean up

    @property
    def strict(self) -> bool:
        """``-W``: warnings about this script are errors (what ``diagnostics.warn`` asks)."""
        return self.config.strict

    @property
    def directory(self) -> str:
        """The script's own directory (searched for executables and embedded databases)."""
        return os.path.dirname(self.path)

    def next_id(self, kind: str) -> str:
        """``Map0``, ``Map1``…: ids per abstraction class, in creation order."""
        n = self.counters.get(kind, 0)
        self.counters[kind] = n + 1
        return f"{kind}{n}"

    def site(self, where: str) -> int:
        """Intern a call-site description; tasks refer to it by a small int."""
        i = self.site_index.get(where)
        if i is None:
            i = self.site_index[where] = len(self.sites)
            self.sites.append(where)
        return i


SCRIPTS: list[Script] = []
NESTS: list[Nest] = []
ABSTRACTIONS: list[Abstraction] = []
OPTIONS: list[Options] = []


def reset() -> None:
    """Forget every stack (a new compile starts from nothing)."""
    SCRIPTS.clear()
    NESTS.clear()
    ABSTRACTIONS.clear()
    OPTIONS.clear()
    diagnostics.attach(None)


def push_script(script: Script) -> None:
    """Make ``script`` the one being compiled, and the one diagnostics speak about."""
    SCRIPTS.append(script)
    diagnostics.attach(script)


def CurrentAbstraction() -> Abstraction | None:  # noqa: N802
    """The abstraction generating tasks right now, if any."""
    return ABSTRACTIONS[-1] if ABSTRACTIONS else None
