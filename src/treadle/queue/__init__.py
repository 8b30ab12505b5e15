"""Work Queue: manager, worker and the protocol-9 wire format between them.

``from treadle.queue import Manager, Task`` gives the primary API (every name
of ``__all__`` is described in docs/workqueue.md). The names are loaded on
first use so that importing the worker (which travels alone, standard library
only) never pulls in the manager; ``dir(treadle.queue)`` still lists them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from treadle.queue.bundle import write_bundle
    from treadle.queue.factory import Factory, FactoryConfig
    from treadle.queue.manager import Manager, Stats
    from treadle.queue.protocol import DEFAULT_PORT
    from treadle.queue.providers import get_provider
    from treadle.queue.task import FileKind, Result, Task, TaskFile, TaskState

# public name -> the module that defines it
_LAZY = {
    "DEFAULT_PORT": "treadle.queue.protocol",
    "Factory": "treadle.queue.factory",
    "FactoryConfig": "treadle.queue.factory",
    "FileKind": "treadle.queue.task",
    "Manager": "treadle.queue.manager",
    "Result": "treadle.queue.task",
    "Stats": "treadle.queue.manager",
    "Task": "treadle.queue.task",
    "TaskFile": "treadle.queue.task",
    "TaskState": "treadle.queue.task",
    "get_provider": "treadle.queue.providers",
    "write_bundle": "treadle.queue.bundle",
}

__all__ = ["DEFAULT_PORT", "Factory", "FactoryConfig", "FileKind", "Manager", "Result", "Stats",
           "Task", "TaskFile", "TaskState", "get_provider", "write_bundle"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'treadle.queue' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
