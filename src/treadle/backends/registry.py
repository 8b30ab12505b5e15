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
    "slurm": "treadle.backends.slurm:SlurmBackend",
    "condor": "treadle.backends.condor:CondorBackend",
    "dryrun": "treadle.backends.dryrun:DryRunBackend",
}


# The reference makeflow's batch types that treadle has no backend for: workers go there instead.
FOREIGN_TYPES = ("sge", "uge", "pbs", "torque", "lsf", "moab", "cluster", "mpi", "chirp", "amazon",
                 "amazon-batch", "lambda", "mesos", "k8s", "flux", "vine")


def check_batch_type(name: str) -> None:
    """Refuse a ``-T`` value the way the reference does, in one line that says what to do instead."""
    if name in FOREIGN_TYPES and name not in BACKENDS:
        raise UsageError(f"-T {name} is not a treadle batch type (it has {', '.join(BACKENDS)}): use -T wq and "
                         f"start `treadle worker HOST PORT` in a job script of that system (`treadle factory` "
                         f"does this for slurm and condor)")
    if name not in BACKENDS:
        raise UsageError(f"unknown batch queue type: {name}")


def backend_class(name: str) -> type[Backend]:
    """The class implementing ``-T name`` (imported now, not at start-up)."""
    check_batch_type(name)
    module_name, _, cls = BACKENDS[name].partition(":")
    found: type[Backend] = getattr(importlib.import_module(module_name), cls)
    return found
