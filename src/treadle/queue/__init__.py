"""Work Queue: manager, worker and the protocol-9 wire format between them.

``from treadle.queue import Manager, Task`` gives the primary API; the names
are loaded on first use so that importing the worker (which travels alone,
standard library only) never pulls in the manager.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from treadle.queue.manager import Manager
    from treadle.queue.task import Result, Task, TaskState

__all__ = ["Manager", "Result", "Task", "TaskState"]


def __getattr__(name: str) -> Any:
    if name == "Manager":
        from treadle.queue.manager import Manager

        return Manager
    if name in ("Task", "Result", "TaskState"):
        from treadle.queue import task

        return getattr(task, name)
    raise AttributeError(f"module 'treadle.queue' has no attribute {name!r}")
