"""The ranges of the numbers the subcommands take, defined once.

Every numeric option has a lower and an upper bound, so that a negative or an
absurd value (``-p 99999``, ``--cores -1``, ``-t 1e300``) is refused by click
while parsing, in one line, instead of failing later with a traceback or a
message that points nowhere. The upper bounds are far beyond any real use;
they exist to keep out typos and overflows, not to limit anyone. (Whole
numbers as bounds keep the ranges that ``--help`` shows short.)
"""

from __future__ import annotations

import click

PORT = click.IntRange(0, 65535)
"""A TCP port; 0 asks the system for a free one."""

MANAGER_PORT = click.IntRange(1, 65535)
"""The port of a manager that already listens (0 cannot be connected to)."""

COUNT = click.IntRange(1, 1_000_000)
"""Cores, processes, workers, jobs, block sides, attempts: at least one."""

AMOUNT = click.IntRange(0, 10**9)
"""Amounts (cores, MB of memory or disk, GPUs, files, workers) where 0 means none."""

SECONDS = click.FloatRange(0, 10**9)
"""A duration; a billion seconds is thirty years."""

TIMEOUT = click.FloatRange(0, 10**9, min_open=True)
"""A time to wait for something that must be given a chance: more than zero."""

DAYS = click.FloatRange(0, 10**6, min_open=True)
"""A lifetime in days (a token's), more than zero."""

PRIORITY = click.IntRange(-(1 << 31), (1 << 31) - 1)
"""A priority: a task's (larger runs first, as in Work Queue) or a store's (lower is read first)."""

RATE = click.FloatRange(0, 10**9)
"""A non-negative rate or multiplier (MB/s, fast-abort multiples)."""

WHOLE_SECONDS = click.IntRange(0, 10**9)
"""A duration counted in whole seconds, where the reference takes an integer."""

BYTES = click.IntRange(0, 10**18)
"""A size in bytes: up to an exabyte."""
