"""The worker factory: keep as many workers as a manager's tasks need.

Every ``interval`` seconds the factory asks the manager for its ``queue_status``
(the status query, the one ``work_queue_status`` sends, so the reference manager
and treadle's both answer it; through ``treadle.queue.status``, the client that
``treadle status`` uses too), sizes the pool and submits
workers through a ``Provider``. Workers leave by themselves when idle for their
``--idle-timeout``, which is how the pool shrinks without killing a busy worker;
the factory cancels jobs only above ``max_workers`` and when it stops.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from treadle.queue import protocol as wp
from treadle.queue.providers.base import JobState, Provider
from treadle.queue.status import query_status

log = logging.getLogger("treadle.factory")


@dataclass
class FactoryConfig:
    """What the factory keeps: the bounds, and the options each worker gets."""

    host: str
    port: int
    min_workers: int = 0
    max_workers: int = 10
    password_file: str | None = None
    cores: int | None = None
    memory: int | None = None
    disk: int | None = None
    gpus: int | None = None
    worker_timeout: float = 60.0  # idle (and connect) timeout passed to each worker
    workdir: str | None = None
    tls_ca: str | None = None  # the manager speaks TLS; trust certificates from this CA file
    interval: float = 5.0
    extra_args: list = field(default_factory=list)

    def worker_args(self) -> list[str]:
        args = ["-t", str(self.worker_timeout)]
        for name in ("cores", "memory", "disk", "gpus"):
            value = getattr(self, name)
            if value is not None:
                args += [f"--{name}", str(value)]
        if self.password_file:
            args += ["-P", self.password_file]
        if self.workdir:
            args += ["-s", self.workdir]
        if self.tls_ca:
            args += ["--tls-ca", self.tls_ca]
        return args + list(self.extra_args) + [self.host, str(self.port)]


class Factory:
    """Sizes a pool of worker jobs to a manager's queue."""

    def __init__(self, config: FactoryConfig, provider: Provider,
                 status: Callable[[], dict] | None = None) -> None:
        self.config = config
        self.provider = provider
        self.jobs: list[str] = []  # oldest first
        self.started = 0
        self._password: bytes | None = None
        if config.password_file:
            with open(config.password_file, "rb") as f:
                self._password = f.read()
        self._status = status or self._query
        self._unreachable = False  # the user has been warned; say when it answers again

    def _query(self) -> dict:
        reply = query_status(self.config.host, self.config.port, self._password,
                             tls_ca=self.config.tls_ca)
        return reply[0] if reply and isinstance(reply[0], dict) else {}

    def target(self, status: dict | None) -> int:
        """Workers wanted, within bounds: the number the manager publishes as
        ``workers_wanted`` when it does (an All-Pairs run knows its best pool size
        while only a few of its blocks are queued), else enough slots for the
        waiting plus dispatched tasks."""
        c = self.config
        if status is None:  # manager not reachable: keep the minimum only
            return c.min_workers
        if "workers_wanted" in status:
            wanted = _count(status, "workers_wanted")
        else:
            tasks = _count(status, "tasks_waiting") + _count(status, "tasks_on_workers")
            wanted = math.ceil(tasks / max(1, c.cores or 1))
        return max(c.min_workers, min(c.max_workers, wanted))

    def step(self) -> None:
        """One round: ask the manager, forget finished jobs, submit or cancel."""
        where = f"{self.config.host}:{self.config.port}"
        try:
            status: dict | None = self._status()
        except (OSError, wp.ProtocolError) as e:
            log.info("manager %s not reachable: %s", where, e)
            if not self._unreachable:  # once per outage: the factory asks every few seconds
                why = getattr(e, "strerror", None) or str(e)
                print(f"factory: warning: cannot reach manager {where} ({why}); keeping "
                      f"{self.config.min_workers} workers (--min-workers) until it answers",
                      file=sys.stderr, flush=True)
                self._unreachable = True
            status = None
        else:
            if self._unreachable:
                print(f"factory: manager {where} answers again", file=sys.stderr, flush=True)
                self._unreachable = False
        states = self.provider.status(self.jobs)
        self.jobs = [j for j in self.jobs if states.get(j) != JobState.DONE]
        want = self.target(status)
        if len(self.jobs) < want:
            for _ in range(want - len(self.jobs)):
                job = self.provider.submit(self.config.worker_args())
                self.jobs.append(job)
                self.started += 1
                print(f"factory: started worker {job} ({len(self.jobs)}/{want})", flush=True)
        elif len(self.jobs) > self.config.max_workers:
            extra = self.jobs[self.config.max_workers:]
            self.provider.cancel(extra)
            self.jobs = self.jobs[: self.config.max_workers]
            print(f"factory: cancelled {len(extra)} workers above the maximum", flush=True)

    def run(self, stop: threading.Event) -> None:
        """Step every ``interval`` seconds until ``stop`` is set; then cancel the pool."""
        try:
            while not stop.is_set():
                self.step()
                stop.wait(self.config.interval)
        finally:
            if self.jobs:
                self.provider.cancel(self.jobs)
                print(f"factory: stopping, cancelled {len(self.jobs)} workers", flush=True)


def _count(status: dict, key: str) -> int:
    try:
        return max(0, int(status.get(key, 0)))
    except (TypeError, ValueError):
        return 0
