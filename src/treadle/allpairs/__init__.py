"""Native All-Pairs and Wavefront engines.

``allpairs(set_a, set_b, F)`` computes F over every pair of items in blocks,
on local cores or Work Queue workers; ``wavefront(F, boundary, x, y)`` computes
a 2-D recurrence cell by cell as neighbours finish. numpy is imported only
for ``.npy`` output and vectorised built-ins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from treadle.allpairs.runner import BITWISE, batched, takes_bytes

if TYPE_CHECKING:
    from treadle.allpairs.engine import AllPairsResult, allpairs
    from treadle.allpairs.plan import Plan
    from treadle.allpairs.wavefront import wavefront

__all__ = ["BITWISE", "AllPairsResult", "Plan", "allpairs", "batched", "takes_bytes",
           "wavefront"]

_LAZY = {
    "allpairs": "treadle.allpairs.engine",
    "AllPairsResult": "treadle.allpairs.engine",
    "Plan": "treadle.allpairs.plan",
    "wavefront": "treadle.allpairs.wavefront",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'treadle.allpairs' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    # Importing the submodule ``wavefront`` binds that name here to the module; the
    # function must win, or ``from treadle.allpairs import wavefront`` gives the module.
    globals()[name] = value
    return value
