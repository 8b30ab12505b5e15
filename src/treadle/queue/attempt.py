"""One attempt: a task's dispatch to one worker, from the send to the end of its retrieval.

The manager keeps attempts in a dict keyed by task id (the user's ``Task`` carries
none of this) and ends every one through ``Manager._end_attempt``; what differs
between a result, a retrieval, a lost worker, a cancel and an abort is the
``Cleanup`` the worker is told to do and what the manager does next.

Lifecycle of a task inside the manager (``TaskState``; each change through
``transition``)::

    submit ──▶ READY ──dispatch──▶ RUNNING ──result──▶ WAITING_RETRIEVAL ──outputs fetched──▶ RETRIEVED ──wait()──▶ DONE
                 ▲                    │  │                  │                                     ▲
                 └──── attempt ended, queued again ◀────────┘                                     │
                                      └──── timeout, retries used up, input missing ──────────────┘
    READY / RUNNING / WAITING_RETRIEVAL ──cancel──▶ CANCELED
"""

from __future__ import annotations

import enum
import time
from typing import TYPE_CHECKING

from treadle.queue.task import Task, TaskFile, TaskState

if TYPE_CHECKING:
    from treadle.queue.worker_view import WorkerView

_NEXT: dict[TaskState, frozenset[TaskState]] = {
    TaskState.UNKNOWN: frozenset({TaskState.READY}),
    TaskState.READY: frozenset({TaskState.READY, TaskState.RUNNING, TaskState.RETRIEVED, TaskState.CANCELED}),
    TaskState.RUNNING: frozenset(
        {TaskState.WAITING_RETRIEVAL, TaskState.READY, TaskState.RETRIEVED, TaskState.CANCELED}
    ),
    TaskState.WAITING_RETRIEVAL: frozenset({TaskState.READY, TaskState.RETRIEVED, TaskState.CANCELED}),
    TaskState.RETRIEVED: frozenset({TaskState.READY, TaskState.DONE}),
    TaskState.DONE: frozenset({TaskState.READY}),
    TaskState.CANCELED: frozenset({TaskState.READY}),
}


def transition(task: Task, state: TaskState) -> None:
    """The one place a task's state changes; a change its life does not have is our bug, raised."""
    if state not in _NEXT[task.state]:
        raise RuntimeError(f"task {task.id}: {task.state.name} -> {state.name} is not a transition")
    task.state = state


class Cleanup(enum.Enum):
    """What the worker is told when an attempt ends."""

    NOTHING = "nothing"  # the worker is gone, its stream is out of step, or it was told at the result
    INPUTS = "inputs"  # kill the task, unlink the inputs sent for it alone
    FILES = "files"  # kill the task, unlink its own inputs and every output it made


class Attempt:
    """What one dispatch of a task put on one worker."""

    __slots__ = ("task", "worker", "box", "uncached", "outputs", "gets_left", "running", "queued", "started", "error")

    def __init__(self, task: Task, worker: WorkerView, box: dict[str, int]) -> None:
        self.task = task
        self.worker = worker
        self.box = box  # resources held on the worker while running
        self.uncached: list[str] = []  # cache names to unlink when the task is done
        self.outputs: list[tuple[TaskFile, str]] = []
        self.gets_left = 0
        self.running = True  # until its result arrives or it is stopped: holds its box
        self.queued = False  # sent to wait for room on a prefetching worker: holds no box until promoted
        self.started = time.time()
        # an output this manager could not write (disk full, permissions): fails the task
        self.error: str | None = None

    def leftovers(self, cleanup: Cleanup) -> list[str]:
        """The cache names the worker unlinks for ``cleanup``."""
        if cleanup is Cleanup.FILES:
            return [*self.uncached, *(name for _, name in self.outputs)]
        if cleanup is Cleanup.INPUTS:
            return list(self.uncached)
        return []
