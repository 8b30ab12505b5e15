"""The allocation ("box") a task gets on a worker, and whether it fits there.

Pure functions over plain dicts keyed by ``cores``, ``memory`` (MB),
``disk`` (MB) and ``gpus``. The rule is the reference's FIXED mode, so a task
gets the same box from treadle's manager as from the reference's, and the
reference worker's packing agrees with ours.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

NAMES = ("cores", "memory", "disk", "gpus")

Amounts = dict[str, int]


def box(
    declared: Mapping[str, int | None],
    largest: Mapping[str, int],
    minimum: Mapping[str, int | None] | None = None,
) -> Amounts:
    """The box sent to a worker whose largest slot is ``largest``.

    Undeclared resources are sized in proportion to the most demanding
    declared one, so a task asking for half the memory also gets half the
    cores and disk; a task declaring nothing gets the whole worker.
    """
    given = {r: declared.get(r) for r in NAMES}
    if all(v is None for v in given.values()):
        out = {r: int(largest.get(r, 0)) for r in NAMES}
    else:
        p = 0.0
        for r, v in given.items():
            if v is None:
                continue
            big = largest.get(r, 0)
            if v >= big and v > 0:
                p = max(p, 1.0)
            elif big > 0:
                p = max(p, v / big)
        p = min(p, 1.0)  # a declared value at or above the worker's largest: unset take all
        out = {}
        for r in NAMES:
            v = given[r]
            if v is not None:
                out[r] = int(v)
            elif r == "gpus":
                out[r] = 0
            elif r == "cores" and given["gpus"] is not None:
                out[r] = 0
            else:
                out[r] = max(1, math.floor(largest.get(r, 0) * p))
    if minimum:
        for r in NAMES:
            m = minimum.get(r)
            if m is not None and out[r] < m:
                out[r] = int(m)
    return out


def fits(
    inuse: Mapping[str, int],
    request: Mapping[str, int],
    total: Mapping[str, int],
    overcommit: float = 1.0,
) -> bool:
    """Whether ``request`` fits next to ``inuse`` (cores, memory, gpus may be overcommitted; disk never)."""
    for r in NAMES:
        limit: float = total.get(r, 0)
        if r != "disk":
            limit = limit * overcommit
        if inuse.get(r, 0) + request.get(r, 0) > limit:
            return False
    return True


def never_fits(request: Mapping[str, int], largest: Mapping[str, int]) -> bool:
    """Whether the request exceeds the worker's largest slot (the worker would forsake it)."""
    return any(request.get(r, 0) > largest.get(r, 0) for r in NAMES)


def add(a: Amounts, b: Mapping[str, int], sign: int = 1) -> None:
    """``a += sign * b`` in place (running sums of in-use resources)."""
    for r in NAMES:
        a[r] = a.get(r, 0) + sign * b.get(r, 0)
