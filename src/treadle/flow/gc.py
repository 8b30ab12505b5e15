"""Garbage collection of intermediate files during a run (``-g``; docs/makeflow.md, 'Garbage collection').

A file becomes collectable when its last consumer completes; the engine
reports it through ``Engine.on_file_complete``. Original inputs,
``MAKEFLOW_INPUTS`` and the final outputs are never collectable. A pass
deletes what is collectable when the method says so; the engine calls
:meth:`GarbageCollector.tick` once per main-loop iteration, with itself, so
the collector is made before the engine and handed to it as its hooks.
"""

from __future__ import annotations

import shutil
import time

from treadle.flow.engine import Engine
from treadle.flow.model import Workflow
from treadle.flow.options import DEFAULT_GC_COUNT


class GarbageCollector:
    """Holds the collectable files and decides when a pass runs."""

    def __init__(self, wf: Workflow, producer: dict[str, int], method: str, count: int | None, min_free: int):
        """``producer`` maps each generated file to its rule (``Graph.producer``)."""
        self.method = method
        self.count = DEFAULT_GC_COUNT if count is None else count
        self.min_free = min_free
        protected = set(wf.inputs or ())
        protected.update(wf.final_outputs())
        self._protected = protected
        self._generated = producer
        self._inputs_count = len(wf.inputs or ())
        self._collectable: dict[str, None] = {}
        self.deleted = 0
        self._barrier = 1
        self._period = max(int(0.05 * len(wf.rules)), 1)

    def file_complete(self, name: str) -> None:
        """Every consumer of ``name`` is complete: it may go at the next pass."""
        if name in self._generated and name not in self._protected:
            self._collectable[name] = None

    def tick(self, engine: Engine) -> None:
        """One main-loop iteration of ``engine`` passed (the GC barrier counts iterations)."""
        if self.method == "all":
            self.collect(engine)
            return
        self._barrier -= 1
        if self._barrier > 0:
            return
        self._barrier = self._period
        if self.method == "ref_cnt":
            self.collect(engine)
        elif self.method == "on_demand" and self._wanted(engine):
            self.collect(engine)

    def _wanted(self, engine: Engine) -> bool:
        present = engine.files_created + self._inputs_count - self.deleted
        if present > self.count:
            return True
        if self.min_free:
            try:
                return shutil.disk_usage(".").free < self.min_free
            except OSError:
                return False
        return False

    def collect(self, engine: Engine) -> int:
        """Delete every collectable file now, through ``engine``, which journals each; journal the pass."""
        start = time.monotonic()
        names = list(self._collectable)
        self._collectable.clear()
        for name in names:
            engine.delete_file(name)
        self.deleted += len(names)
        engine.journal.gc_record(len(names), int((time.monotonic() - start) * 1e6), self.deleted)
        engine.journal.flush()
        return len(names)
