"""Which task goes next, and to which worker.

Ready tasks wait in a heap ordered by priority, then submission order (FIFO,
or LIFO on request), so taking the next task costs O(log n) whatever the queue
depth; cancelled tasks are dropped lazily when they reach the top. The worker
chosen for a task is the one that fits it and already holds the most of its
input bytes, ties going to the worker that connected first: inputs shared by
many tasks then stay where they already are.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")
W = TypeVar("W")


class ReadyQueue(Generic[T]):
    """Priority-then-arrival queue with lazy removal."""

    def __init__(self, lifo: bool = False) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._seq = itertools.count()
        self._lifo = lifo
        self._removed: set[int] = set()
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def push(self, priority: float, item: T, order: int | None = None) -> int:
        """Queue ``item``; returns its order number (pass it back to keep its place on re-queue)."""
        if order is None:
            n = next(self._seq)
            order = -n if self._lifo else n
        heapq.heappush(self._heap, (-priority, order, item))
        self._live += 1
        return order

    def discard(self, order: int) -> None:
        """Forget the entry with this order number (it is skipped when it reaches the top)."""
        self._removed.add(order)
        self._live -= 1

    def pop(self) -> tuple[int, T] | None:
        """The next item and its order number, or None when empty."""
        heap = self._heap
        while heap:
            _, order, item = heapq.heappop(heap)
            if order in self._removed:
                self._removed.discard(order)
                continue
            self._live -= 1
            return order, item
        return None


def choose_worker(
    workers: Iterable[W],
    fits: Callable[[W], bool],
    cached_bytes: Callable[[W], int],
) -> W | None:
    """The fitting worker holding the most input bytes; ``workers`` in connection order."""
    best: W | None = None
    best_bytes = -1
    for w in workers:
        if not fits(w):
            continue
        b = cached_bytes(w)
        if b > best_bytes:
            best, best_bytes = w, b
    return best
