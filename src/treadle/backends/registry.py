"""Which backend class a ``-T`` name means, imported only when used.

Adding a backend is one line here and one module; the engine never names a
backend class itself.
"""

from __future__ import annotations

import importlib

from treadle.backends.base import Backend
from treadle.errors import UsageError

# -T name -> "module:Class"
BACKENDS: dict[str, str] = {
    "local": "treadle.backends.local:LocalBackend",
    "wq": "treadle.backends.workqueue:WorkQueueBackend",
    "dryrun": "treadle.backends.dryrun:DryRunBackend",
}
# Names treadle will support but does not yet (issues to come).
NOT_YET = ("slurm", "condor")
# Everything -T accepts.
KNOWN = (*BACKENDS, *NOT_YET)


def check_batch_type(name: str) -> None:
    """Refuse a ``-T`` value the way the reference does, or as not available yet."""
    if name in BACKENDS:
        return
    if name in NOT_YET:
        raise UsageError(f"batch queue type {name} is not available yet in treadle")
    if name not in KNOWN:
        raise UsageError(f"unknown batch queue type: {name}")


def backend_class(name: str) -> type[Backend]:
    """The class implementing ``-T name`` (imported now, not at start-up)."""
    check_batch_type(name)
    target = BACKENDS.get(name)
    if target is None:
        raise UsageError(f"batch queue type {name} has no backend")
    module_name, _, cls = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            raise UsageError(f"batch queue type {name} is not available yet in treadle") from None
        raise
    found: type[Backend] = getattr(module, cls)
    return found
