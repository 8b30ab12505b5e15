"""The Work Queue manager: an asyncio core with a blocking API on top.

::

    application thread                     manager thread (asyncio)
    ──────────────────                     ─────────────────────────────────────────
    submit(task) ──inbox──────────────────▶ ready heap ──dispatch──▶ worker links
    wait(timeout) ◀──done deque + Condition─ retrieval ◀──result/get── worker links
    cancel, stats, hungry (running sums)    keepalive, fast abort, limits (1 s tick)

The event loop runs on a background thread started by the constructor, so a
plain script can call ``wait`` in a loop as with the reference; ``*_async``
variants let asyncio programs await the same calls from their own loop.
All scheduling state belongs to the manager thread; the application thread
only touches the inbox, the done deque and a few counters, under one lock.

Costs are kept independent of queue depth: the next task comes off a heap,
``hungry`` reads running sums, dispatch scans the workers (not the tasks),
and writes to a worker are batched into one ``write`` per turn of the loop,
with file payloads sent by ``sendfile``.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import os
import socket
import ssl as ssl_module
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from typing import Any

from treadle.errors import UsageError
from treadle.queue import dispatch, manager_status
from treadle.queue import protocol as wp
from treadle.queue import resources as res
from treadle.queue.attempt import Attempt, Cleanup, transition
from treadle.queue.cache import Namer
from treadle.queue.link import Link
from treadle.queue.manager_status import CategoryConfig, Stats
from treadle.queue.scheduler import ReadyQueue, choose_worker
from treadle.queue.task import (
    MAX_OUTPUT_BYTES,
    Result,
    Task,
    TaskFile,
    TaskState,
)
from treadle.queue.worker_view import Budget, Get, WorkerView

log = logging.getLogger("treadle.queue.manager")

# A task may wait on a prefetching worker (WorkerView.queue_room) once its category
# has shown that its tasks are short: then the worker's wait for the next task, a round
# trip to the manager, is a large part of each task's time. Longer tasks are not queued
# behind others, where a worker that frees up sooner could not take them.
PREFETCH_MIN_DONE = 2  # tasks of the category done before its average is trusted
PREFETCH_MAX_SECONDS = 0.25  # their average running time on a worker
REJECT_LIMIT = 32  # ready tasks tried per dispatch pass when none fits: bounds the cost per event
TICK = 0.5  # seconds between checks of keepalive, fast abort and time limits
# Task output (stdout) buffered while it arrives, over all connections: each task keeps
# up to MAX_OUTPUT_BYTES; two such outputs may arrive at once, and beyond
# that a task's output is cut (STDOUT_MISSING) rather than the manager's memory grown.
MAX_OUTPUT_IN_FLIGHT = 2 * MAX_OUTPUT_BYTES
# Feature names kept for all connected workers together (each worker is also held to
# protocol.MAX_FEATURES): a worker that would pass this is dropped.
MAX_FEATURE_BYTES = 64 << 20


MODES = ("FIXED", "MAX", "MIN_WASTE", "MAX_THROUGHPUT")


def _read_password(password: bytes | str | None, password_file: str | None) -> bytes | None:
    if password_file is not None:
        try:
            with open(password_file, "rb") as f:
                return f.read()
        except OSError as e:
            raise UsageError(f"cannot read password file {password_file}: {e.strerror}") from None
    if isinstance(password, str):
        return password.encode()
    return password


class Manager:
    """A Work Queue manager listening for workers (see the module docstring).

    ``port=0`` picks a free port (read it back from ``m.port``). ``host`` is the
    address to listen on; the default, ``""``, is every interface, because
    workers are usually on other machines. ``ssl`` is an
    ``ssl.SSLContext`` for TLS between treadle peers (the reference worker
    cannot speak it). ``catalog`` is ``HOST:PORT`` of a catalog server; the
    manager reports to it only when it has a ``name``.
    """

    def __init__(
        self,
        port: int = wp.DEFAULT_PORT,
        *,
        name: str | None = None,
        host: str = "",
        password: bytes | str | None = None,
        password_file: str | None = None,
        catalog: str | None = None,
        transactions_log: str | None = None,
        stats_log: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        lifo: bool = False,
        overcommit: float = 1.0,
        port_file: str | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self._password = _read_password(password, password_file)
        # only a catalog named here or in $CATALOG_HOST: never the public default
        self.catalog = catalog or os.environ.get("CATALOG_HOST") or None
        self.keepalive_interval = 120.0
        self.keepalive_timeout = 30.0
        self.overcommit = overcommit
        # How many workers the application would like (All-Pairs sets its plan's h*).
        # Published in queue_status; a factory follows it instead of counting tasks.
        self.workers_wanted: int | None = None
        self._ssl = ssl
        self._namer = Namer()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._done_cond = threading.Condition(self._lock)
        self._done: collections.deque[Task] = collections.deque()
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._inbox: collections.deque[Task] = collections.deque()
        self._inbox_kick = False
        self._outstanding = 0  # submitted and not yet handed back by wait/cancel
        # manager-thread state
        self._tasks: dict[int, Task] = {}
        self._attempts: dict[int, Attempt] = {}  # task id -> its attempt on a worker
        self._grown: set[int] = set()  # ids of tasks retried with the category maximum after RESOURCE_EXHAUSTION
        self._orders: dict[int, int] = {}  # task id -> place in the ready heap
        self._ready: ReadyQueue[Task] = ReadyQueue(lifo=lifo)
        self._workers: dict[int, WorkerView] = {}
        self._worker_seq = itertools.count(1)
        self._categories: dict[str, CategoryConfig] = {}
        self._blocked: dict[str, float | None] = {}
        self._fast_abort_default: float | None = None
        self._schedule_kick = False
        self._flush_kick = False
        self._dirty: list[Link] = []
        self._waiting_sum = {r: 0 for r in res.NAMES}
        self._output_budget = Budget(MAX_OUTPUT_IN_FLIGHT)
        self._feature_bytes = 0  # of every connected worker's features
        # event counts and the byte and execute-time totals (floats); 0 until first counted
        self._counts: collections.defaultdict[str, float] = collections.defaultdict(float)
        self._started = time.time()
        self._closed = False
        # Buffered, and flushed once per turn of the loop (``_flush_all``) and every tick:
        # a write per line cost a system call per line, several per task.
        self._txn = open(transactions_log, "a") if transactions_log else None  # noqa: SIM115
        self._stats_log = open(stats_log, "a", buffering=1) if stats_log else None  # noqa: SIM115
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="treadle-manager", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        started: list[BaseException | int] = []
        ready = threading.Event()
        self._thread.start()

        async def _start() -> None:
            try:
                # host "" means every IPv4 interface: one socket, so port 0 gives one port
                self._server = await asyncio.start_server(
                    self._accept, host or "0.0.0.0", port, ssl=ssl, reuse_address=True, limit=1 << 16
                )
                self.port = self._server.sockets[0].getsockname()[1]
                started.append(self.port)
                self._loop.create_task(self._ticker())
                if self.name and self.catalog:
                    self._loop.create_task(manager_status.report_to_catalog(self.catalog, self._catalog_record))
            except BaseException as e:  # noqa: BLE001 - handed to the constructor's thread
                started.append(e)
            finally:
                ready.set()

        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(_start()))
        ready.wait()
        if isinstance(started[0], BaseException):
            self._closed = True
            self._stop_loop()
            err = started[0]
            if isinstance(err, OSError):
                where = f"{host} port {port}" if host else f"port {port}"
                raise UsageError(f"cannot listen on {where}: {err.strerror or err}") from None
            raise err
        self.port = started[0]
        if port_file:
            with open(port_file, "w") as f:
                f.write(f"{self.port}\n")
        self._log_txn(f"MANAGER START {self.port}")
        self._flush_txn()

    @property
    def listening(self) -> str:
        """Where workers reach this manager, as commands print it at start (the
        reference makeflow's words): the real port matters with ``port=0``, and a
        bound address explains why workers elsewhere cannot connect."""
        only = f" ({self.host} only)" if self.host else ""
        return f"listening for workers on port {self.port}{only}"

    # ================================================================ lifecycle
    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
        self._loop.close()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    def __enter__(self) -> Manager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Manager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Release every worker (they may serve another manager) and stop listening."""
        if self._closed:
            return
        self._closed = True
        with self._done_cond:
            self._done_cond.notify_all()  # a wait() in another thread returns None
        fut = asyncio.run_coroutine_threadsafe(self._close_async(), self._loop)
        try:
            fut.result(timeout=30)
        finally:
            self._stop_loop()
            for f in (self._txn, self._stats_log):
                if f is not None:
                    f.close()

    async def _close_async(self) -> None:
        self._write_stats_line()  # the final counters, however short the run
        self._log_txn("MANAGER END")
        if self._server is not None:
            self._server.close()
        for w in list(self._workers.values()):
            w.link.send(wp.Release())
            self._counts["workers_released"] += 1
        for w in list(self._workers.values()):
            await w.link.close(flush=True)
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=5) if pending else None

    # ============================================================== public API
    def submit(self, task: Task) -> int:
        """Queue ``task``; returns its id (ids start at 1)."""
        self._check_submit(task)
        tid = next(self._ids)
        if tid > wp.MAX_TASK_ID:
            raise UsageError("more than 2**31-1 tasks submitted to one manager")
        task.id = tid
        transition(task, TaskState.READY)
        task.time_submitted = time.time()
        task.attempts = 0
        task.result = None
        task.exit_code = None
        task.signal = None
        task.reason = ""
        for f in task.inputs:
            self._namer.prehash(f)
        with self._lock:
            self._outstanding += 1
            self._inbox.append(task)
            kick = not self._inbox_kick
            self._inbox_kick = True
        if kick:
            self._loop.call_soon_threadsafe(self._drain_inbox)
        return tid

    async def submit_async(self, task: Task) -> int:
        """``submit`` for asyncio programs (it never blocks, so this only mirrors the name)."""
        return self.submit(task)

    def _check_submit(self, task: Task) -> None:
        if self._closed:
            raise UsageError("the manager is closed")
        if not isinstance(task, Task):
            raise UsageError(f"submit() takes a Task, not {type(task).__name__}")
        if task.state not in (TaskState.UNKNOWN, TaskState.DONE, TaskState.CANCELED, TaskState.RETRIEVED):
            raise UsageError(f"task {task.id} is already in the queue")
        dispatch.check_sendable(task)

    def wait(self, timeout: float | None = None) -> Task | None:
        """The next finished task, or None after ``timeout`` seconds (None or -1: forever)."""
        if timeout is not None and timeout < 0:
            timeout = None
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._done_cond:
            while not self._done:
                if (self._outstanding == 0 and timeout is None) or self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._done_cond.wait(remaining)
            task = self._done.popleft()
            self._outstanding -= 1
        transition(task, TaskState.DONE)
        return task

    async def wait_async(self, timeout: float | None = None) -> Task | None:
        """``wait`` for asyncio programs, awaitable from any event loop."""
        if timeout is not None and timeout < 0:
            timeout = None
        deadline = None if timeout is None else time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._done:
                    task = self._done.popleft()
                    self._outstanding -= 1
                    transition(task, TaskState.DONE)
                    return task
                if self._outstanding == 0 and timeout is None:
                    return None
                fut: asyncio.Future[None] = loop.create_future()
                self._async_waiters.append((loop, fut))
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            try:
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                return None

    def empty(self) -> bool:
        """True when no submitted task is left to hand back."""
        with self._lock:
            return self._outstanding == 0

    def hungry(self) -> bool:
        """Whether the application should submit more (running sums; no scan of the queue)."""
        waiting = len(self._ready) + len(self._inbox)
        if waiting < 10:
            return True
        free = {r: 0 for r in res.NAMES}
        for w in list(self._workers.values()):
            if w.ready:
                for r in res.NAMES:
                    free[r] += max(0, w.total[r] - w.inuse[r])
        want = self._waiting_sum
        return all(want[r] <= free[r] for r in res.NAMES)

    def cancel(self, task_or_id: Task | int) -> Task | None:
        """Remove a task from the queue (killing it on its worker); returns it, CANCELED."""
        tid = task_or_id.id if isinstance(task_or_id, Task) else int(task_or_id)
        return self._call(self._cancel, tid)

    async def cancel_async(self, task_or_id: Task | int) -> Task | None:
        tid = task_or_id.id if isinstance(task_or_id, Task) else int(task_or_id)
        return await self._call_async(self._cancel, tid)

    def cancel_by_tag(self, tag: str) -> list[Task]:
        """Cancel every task with this tag; returns them."""
        return self._call(self._cancel_by_tag, tag)

    def task_state(self, task_id: int) -> TaskState:
        """The state of a task by id (UNKNOWN once it has been handed back)."""
        return self._call(self._task_state, task_id)

    def log_stats(self, path: str) -> None:
        """Append a JSON line of the counters to ``path`` every second from now on."""
        self._call(self._swap_log, "_stats_log", path)

    def log_transactions(self, path: str) -> None:
        """Append a line per task and worker event to ``path`` from now on."""
        self._call(self._swap_log, "_txn", path)

    def _swap_log(self, attr: str, path: str) -> None:
        new = open(path, "a", buffering=1)  # noqa: SIM115 - closed by close() or the next swap
        old = getattr(self, attr)
        setattr(self, attr, new)
        if old is not None:
            old.close()

    @property
    def stats(self) -> Stats:
        """A snapshot of the queue's counters (reference field names)."""
        return self._call(self._make_stats)

    def category_stats(self, name: str) -> dict[str, Any]:
        """Counters of one category."""
        return self._call(self._category_status, name)

    def workers(self) -> list[dict[str, Any]]:
        """One summary per connected worker (what `work_queue_status -W` shows)."""
        return self._call(lambda: manager_status.worker_status(self._workers.values()))

    def tasks(self) -> list[dict[str, Any]]:
        """One summary per task in the queue (what `work_queue_status -T` shows)."""
        return self._call(self._task_status)

    def set_category(
        self,
        name: str,
        *,
        max: Mapping[str, int] | None = None,  # noqa: A002 - the reference API's keyword
        min: Mapping[str, int] | None = None,  # noqa: A002
        first: Mapping[str, int] | None = None,
        mode: str | None = None,
    ) -> None:
        """Resource limits of a category: max (requests for undeclared resources), min (floor of the box)."""
        if mode is not None and mode.upper() not in MODES:
            raise UsageError(f"category mode must be one of {', '.join(MODES)} (got {mode!r})")

        def apply() -> None:
            c = self._category(name)
            if max is not None:
                c.max = _resource_dict(max)
            if min is not None:
                c.min = _resource_dict(min)
            if first is not None:
                c.first = _resource_dict(first)
            if mode is not None:
                c.mode = mode.upper()
            self._kick_schedule()

        self._call(apply)

    def fast_abort(self, multiplier: float | None, category: str | None = None) -> None:
        """Kill and resubmit tasks that run longer than ``multiplier`` times their category's average."""
        value = multiplier if multiplier and multiplier > 0 else None

        def apply() -> None:
            if category is None:
                self._fast_abort_default = value
            else:
                self._category(category).fast_abort = value

        self._call(apply)

    def block_host(self, host: str, timeout: float | None = None) -> None:
        """Send no more tasks to workers on ``host`` (for ``timeout`` seconds, or until unblocked)."""
        until = None if timeout is None else time.monotonic() + timeout
        self._call(self._blocked.__setitem__, host, until)

    def unblock_host(self, host: str | None = None) -> None:
        """Allow ``host`` again (all hosts when None)."""

        def apply() -> None:
            if host is None:
                self._blocked.clear()
            else:
                self._blocked.pop(host, None)
            self._kick_schedule()

        self._call(apply)

    def shutdown_workers(self, n: int = 0) -> int:
        """Tell ``n`` idle workers (0: all workers) to exit; returns how many were told."""
        return self._call(self._shutdown_workers, n)

    # ================================================ calls into the manager thread
    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if threading.current_thread() is self._thread:
            return fn(*args)
        if self._closed:
            return fn(*args)

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    async def _call_async(self, fn: Callable[..., Any], *args: Any) -> Any:
        async def run() -> Any:
            return fn(*args)

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), self._loop))

    # ================================================================= queueing
    def _category(self, name: str) -> CategoryConfig:
        c = self._categories.get(name)
        if c is None:
            c = self._categories[name] = CategoryConfig(name)
        return c

    def _drain_inbox(self) -> None:
        with self._lock:
            batch = list(self._inbox)
            self._inbox.clear()
            self._inbox_kick = False
        for task in batch:
            self._tasks[task.id] = task
            self._counts["tasks_submitted"] += 1
            if self._txn is not None:
                self._log_txn(f"TASK {task.id} WAITING {task.category} FIRST_RESOURCES {json.dumps(task.declared)}")
            self._enqueue(task)
        self._kick_schedule()

    def _request(self, task: Task) -> dict[str, int]:
        """What a waiting task counts against free resources in ``hungry``."""
        d = task.declared
        return {
            "cores": max(1, d["cores"] or 0),
            "memory": d["memory"] or 0,
            "disk": d["disk"] or 0,
            "gpus": d["gpus"] or 0,
        }

    def _enqueue(self, task: Task, order: int | None = None) -> None:
        transition(task, TaskState.READY)
        self._orders[task.id] = self._ready.push(task.priority, task, order)
        res.add(self._waiting_sum, self._request(task))
        self._category(task.category).waiting += 1

    def _unqueue(self, task: Task) -> None:
        res.add(self._waiting_sum, self._request(task), -1)
        self._category(task.category).waiting -= 1

    def _kick_schedule(self) -> None:
        if not self._schedule_kick:
            self._schedule_kick = True
            self._kick_flush()

    def _link_dirty(self, link: Link) -> None:
        self._dirty.append(link)
        self._kick_flush()

    def _kick_flush(self) -> None:
        if not self._flush_kick:
            self._flush_kick = True
            self._loop.call_soon(self._flush_all)

    def _flush_all(self) -> None:
        """Once per turn of the loop: dispatch first, then one write per worker (kill + next task together)."""
        self._flush_kick = False
        try:
            if self._schedule_kick:
                self._schedule()
        finally:  # a failed dispatch must not leave other writes unsent
            dirty, self._dirty = self._dirty, []
            for link in dirty:
                link._flush()
            self._flush_txn()

    def _schedule(self) -> None:
        """Dispatch ready tasks while some worker has room (bounded work per call)."""
        self._schedule_kick = False
        if not self._ready:
            return
        workers = [w for w in self._workers.values() if w.ready and not w.draining and w.slots >= 1]
        workers = [w for w in workers if not self._host_blocked(w.host) and not w.link.hold_until]
        if not workers:
            return
        rejected: list[tuple[int, Task]] = []
        while self._ready and len(rejected) < REJECT_LIMIT:
            room = any(w.has_room() for w in workers)
            if not room and not any(w.queue_room() for w in workers):
                break
            popped = self._ready.pop()
            if popped is None:
                break
            order, task = popped
            if not room and not self._short(task.category):
                rejected.append((order, task))
                break  # only short tasks wait on a worker, and in queue order
            placed = self._place(task, workers)
            if placed is None:
                rejected.append((order, task))
            elif placed is False:
                pass  # handed back (missing input) or queued again (send failed)
        for order, task in rejected:
            self._ready.push(task.priority, task, order)

    def _effective_request(self, task: Task) -> tuple[dict[str, int | None], dict[str, int] | None]:
        cat = self._categories.get(task.category)
        declared = task.declared
        if cat is None:
            return declared, None
        fill = cat.max
        grown = task.id in self._grown
        if grown and not cat.max:
            return {r: None for r in declared}, cat.min or None  # no maximum: the whole worker
        if cat.mode != "FIXED" and cat.first and not grown:
            fill = cat.first
        if fill:
            declared = {r: (v if v is not None else fill.get(r)) for r, v in declared.items()}
        return declared, cat.min or None

    def _place(self, task: Task, workers: list[WorkerView]) -> bool | None:
        """Send ``task`` to the best fitting worker: True if sent, None if none fits, False if it ended."""
        declared, minimum = self._effective_request(task)
        now = time.time()
        try:
            items = [self._namer.resolve(f) for f in task.inputs]
        except OSError as e:
            self._unqueue(task)
            self._orders.pop(task.id, None)
            task.output = f"input {e.filename} is missing: {e.strerror}".encode()
            self._finish(task, Result.INPUT_MISSING, None)
            return False
        boxes: dict[int, dict[str, int]] = {}
        avoid = task.avoid_workers
        if avoid and all(x.addrport in avoid for x in self._workers.values() if x.ready):
            avoid = set()  # nowhere else to go: a worker it failed on beats none

        def fits(w: WorkerView) -> bool:
            b = None if w.addrport in avoid else w.box_for(task, declared, minimum, now, self.overcommit)
            if b is None:
                return False
            boxes[w.seq] = b
            return True

        def cached(w: WorkerView) -> int:
            return sum(i.size for i in items if i.key is not None and i.key in w.cache)

        worker = choose_worker(workers, fits, cached) if items else _first(workers, fits)
        queue = worker is None and self._short(task.category)
        if queue:

            def waits(w: WorkerView) -> bool:
                b = None if w.addrport in avoid else w.box_for(task, declared, minimum, now, self.overcommit, queue=True)
                if b is None:
                    return False
                boxes[w.seq] = b
                return True

            worker = _first(workers, waits)
        if worker is None:
            return None
        self._unqueue(task)
        self._orders.pop(task.id, None)
        att = self._begin_attempt(task, worker, boxes[worker.seq], queued=queue)
        try:
            dispatch.send_task(att, items, self._namer)
        except OSError as e:
            # an input changed or vanished while being sent: the stream to this
            # worker is now out of step, so drop the worker; the task waits again,
            # its try given back (the worker failed, not the task)
            log.warning("sending task %d to %s failed (%s); worker dropped", task.id, worker.addrport, e)
            worker.link.abort()
            self._end_attempt(att, Cleanup.NOTHING, counted=False)
            self._enqueue(task)
            return False
        except wp.LocalProtocolError as e:
            # submit() refuses what cannot be encoded; should one slip through (a file
            # in an input directory, say), the task fails rather than staying RUNNING with
            # nothing sent, and the worker goes, as its stream may stop mid-message
            log.error("task %d cannot be sent to a worker: %s", task.id, e)
            worker.link.abort()
            self._end_attempt(att, Cleanup.NOTHING)
            task.reason = f"cannot be sent to a worker: {e}"
            self._finish(task, Result.UNKNOWN, None)
            return False
        self._sent(att)
        return True

    def _short(self, category: str) -> bool:
        """Whether tasks of ``category`` are short enough to wait on a worker for room (``PREFETCH_*``)."""
        cat = self._category(category)
        return cat.done >= PREFETCH_MIN_DONE and cat.exec_time_total <= PREFETCH_MAX_SECONDS * cat.done

    def _begin_attempt(self, task: Task, w: WorkerView, box: dict[str, int], queued: bool = False) -> Attempt:
        """The task starts an attempt on ``w``: it holds ``box`` there until ``_stop`` (``queued``: from when
        the worker has room for it, ``WorkerView.promote``)."""
        att = Attempt(task, w, box)
        self._attempts[task.id] = w.attempts[task.id] = att
        task.attempts += 1
        transition(task, TaskState.RUNNING)
        task.time_started = att.started
        task.host = w.addrport
        task.hostname = w.hostname
        task.resources_allocated = dict(box)
        if queued:
            att.queued = True
            w.queued.append(att)
        else:
            res.add(w.inuse, box)
        self._category(task.category).running += 1
        return att

    def _sent(self, att: Attempt) -> None:
        """The attempt's task is on its worker's link: counted and logged as dispatched."""
        self._category(att.task.category).dispatched += 1
        self._counts["tasks_dispatched"] += 1
        if self._txn is not None:
            self._log_txn(f"TASK {att.task.id} RUNNING {att.worker.addrport} {json.dumps(att.box)}")

    # ================================================================ results
    def _on_result(self, w: WorkerView, status: int, exit_code: int, output: bytes, truncated: bool, usec: int, tid: int) -> None:
        att = w.attempts.get(tid)
        if att is None or not att.running:
            log.debug("result for unknown task %d from %s ignored", tid, w.addrport)
            return
        task = att.task
        self._stop(att)
        cat = self._category(task.category)
        grow = status == Result.RESOURCE_EXHAUSTION and cat.mode != "FIXED" and tid not in self._grown
        if status == Result.FORSAKEN or grow:
            if grow:
                self._grown.add(tid)  # retried once with the category maximum
            # back to the queue, not handed back: the try counts toward max_retries
            self._end_attempt(att, Cleanup.INPUTS)
            self._retry_or_fail(task)
            return
        transition(task, TaskState.WAITING_RETRIEVAL)
        task.execute_usec = usec
        self._counts["time_workers_execute"] += usec / 1e6
        task.output = output
        if status == Result.SIGNAL:
            result, task.exit_code, task.signal = Result.SIGNAL, None, exit_code
        elif status == Result.TASK_MAX_RUN_TIME:
            result, task.exit_code, task.signal = Result.TASK_MAX_RUN_TIME, 9, None
        else:
            try:
                result = Result(status)
            except ValueError:
                result = Result.UNKNOWN
            task.exit_code, task.signal = exit_code, None
        if truncated and result is Result.SUCCESS:
            result = Result.STDOUT_MISSING
        task.result = result
        if result is Result.SUCCESS and exit_code == 0:
            cat.done += 1
            cat.exec_time_total += usec / 1e6
        ok = status == 0 and exit_code == 0
        for spec, oname in att.outputs:
            if spec.when == "success" and not ok or spec.when == "failure" and ok:
                continue
            att.gets_left += 1
            w.request_get(Get(oname, spec.local or spec.remote, self._make_get_done(att, spec, oname)))
        w.kill(tid, list(att.uncached) + [o for s, o in att.outputs if not s.cache], running=False)
        if att.gets_left == 0:
            self._retrieved(att)
        self._kick_schedule()

    def _make_get_done(self, att: Attempt, spec: TaskFile, oname: str) -> Callable[[Get], None]:
        def done(get: Get) -> None:
            task = att.task
            task.bytes_received += get.nbytes
            if self._attempts.get(task.id) is not att:
                return  # ended meanwhile (cancelled)
            if get.error is not None:
                att.error = att.error or get.error
            elif get.missing:
                if task.result is None or task.result < Result.OUTPUT_MISSING:
                    task.result = Result.OUTPUT_MISSING
            elif spec.cache and spec.local:
                key = self._namer.content_key_of_local(spec.local)
                if key is not None:
                    att.worker.cache[key] = (oname, get.nbytes)
            att.gets_left -= 1
            if att.gets_left == 0:
                self._retrieved(att)

        return done

    def _retrieved(self, att: Attempt) -> None:
        """Every output of a finished attempt is here: the task goes back to the application."""
        task = self._end_attempt(att, Cleanup.NOTHING)  # the worker was told at the result
        att.worker.tasks_complete += 1
        if att.error is not None:
            task.result, task.reason = Result.OUTPUT_TRANSFER_ERROR, att.error
        self._finish(task, task.result if task.result is not None else Result.UNKNOWN, task.exit_code, keep=True)

    # ============================================================ attempts
    def _stop(self, att: Attempt) -> None:
        """The attempt's task no longer runs: its box and its category's running count are freed, once,
        and the tasks queued on its worker that fit now start there (as the worker starts them)."""
        if att.running:
            att.running = False
            self._category(att.task.category).running -= 1
            w = att.worker
            if att.queued:
                w.queued.remove(att)
                return
            res.add(w.inuse, att.box, -1)
            for started in w.promote(time.time()):
                started.task.time_started = started.started

    def _end_attempt(self, att: Attempt, cleanup: Cleanup, *, counted: bool = True) -> Task:
        """The one way an attempt ends (result, retrieval, lost worker, failed send, cancel, abort).

        Frees what it holds, detaches it from its worker and tells the worker
        ``cleanup`` (a task still running gets a ``kill`` of its own); ``counted=False``
        gives the task its try back. Returns the task: the caller's next step (queue it
        again, hand it back) is explicit at the call.
        """
        task, w = att.task, att.worker
        was_running = att.running
        self._stop(att)
        del self._attempts[task.id]
        w.attempts.pop(task.id, None)
        if cleanup is not Cleanup.NOTHING:
            w.kill(task.id, att.leftovers(cleanup), running=was_running)
        if not counted:
            task.attempts -= 1
        if not self._closed:
            self._kick_schedule()
        return task

    def _finish(self, task: Task, result: Result, exit_code: int | None, keep: bool = False) -> None:
        """Hand a task back to the application."""
        if not keep:
            task.result = result
            task.exit_code = exit_code
        task.time_finished = time.time()
        transition(task, TaskState.RETRIEVED)
        self._tasks.pop(task.id, None)
        self._grown.discard(task.id)
        if result is Result.SUCCESS:
            self._counts["tasks_done"] += 1
        else:
            self._counts["tasks_failed"] += 1
            self._category(task.category).failed += 1
        if self._txn is not None:
            self._log_txn(f"TASK {task.id} DONE {result.name} {task.exit_code}")
        with self._lock:
            self._done.append(task)
            self._done_cond.notify()
            waiters, self._async_waiters = self._async_waiters, []
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_resolve, fut)

    def _retry_or_fail(self, task: Task) -> None:
        """A lost, forsaken or aborted attempt: queue again unless the retries are used up."""
        if task.max_retries > 0 and task.attempts >= task.max_retries + 1:
            self._counts["tasks_exhausted_attempts"] += 1
            self._finish(task, Result.MAX_RETRIES, None)
            return
        self._enqueue(task)

    # ================================================================ workers
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve_connection(reader, writer)
        except asyncio.CancelledError:
            pass  # the manager is closing; the handler ends quietly

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        addrport = f"{peer[0]}:{peer[1]}"
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        link = Link(reader, writer, self._loop)
        link.on_dirty = self._link_dirty
        link.on_hold_end = self._kick_schedule
        try:
            greet = link.greet(addrport, password=self._password, project=self.name or "", answer=self._answer)
            greeting = await asyncio.wait_for(greet, self.keepalive_timeout)
        except (TimeoutError, OSError, ConnectionError, wp.ProtocolError) as e:
            log.info("connection from %s dropped before its greeting: %s", addrport, e or type(e).__name__)
            greeting = None
        if greeting is None:
            await link.close(flush=True)
            return
        w = WorkerView(next(self._worker_seq), link, addrport, self._output_budget, self._counts)
        w.hostname, w.os, w.arch, w.version = greeting.hostname, greeting.os, greeting.arch, greeting.version
        w.on_result = self._on_result
        self._workers[w.seq] = w
        self._counts["workers_joined"] += 1
        self._log_txn(f"WORKER {w.worker_id or w.addrport} {w.addrport} CONNECTION")
        reason = "lost"
        link.on_sent = w.sent
        try:
            await link.serve(lambda ev: self._on_event(w, ev), w.received)
            reason = link.close_reason or "lost"
        except wp.ProtocolError as e:
            log.warning("worker %s misbehaved (%s); dropped", w.addrport, e)
            reason = "protocol error"
        except (OSError, ConnectionError) as e:
            log.info("worker %s disconnected: %s", w.addrport, e)
            reason = link.close_reason or "lost"
        finally:
            w.closing()
            self._remove_worker(w, reason)
            await link.close()

    def _on_event(self, w: WorkerView, ev: wp.Event) -> None:
        """One event from a worker; async lines may come anywhere, also between the items of a reply."""
        t = type(ev)  # every event class derives from Event alone, so isinstance is exact here
        if isinstance(ev, wp.Data):
            w.payload(ev.data)
        elif t is wp.EndOfData:
            w.payload_end()
        elif t is wp.AvailableResults:
            w.results_available()
        elif isinstance(ev, wp.Result):
            w.begin_result(ev, w.output_wanted(ev.task_id, "result"))
        elif isinstance(ev, wp.FileReply):
            w.begin_file(ev)
        elif isinstance(ev, wp.DirReply):
            w.get_dir(ev.path)
        elif isinstance(ev, wp.Missing):
            w.get_missing(ev.path)
        elif t is wp.End:
            w.reply_end()
        elif isinstance(ev, wp.Info):
            w.info(ev.name, ev.value)
            if ev.name == "idle-disconnecting":
                self._counts["workers_idled_out"] += 1
            elif ev.name == "worker-end-time":
                self._kick_schedule()
        elif isinstance(ev, wp.Resource):
            w.resource(ev)
            self._kick_schedule()
        elif t is wp.ResourceTag:
            w.seen_tag = True
            self._kick_schedule()
        elif isinstance(ev, wp.Feature):
            self._add_feature(w, ev.name)
        elif isinstance(ev, wp.Update):
            w.begin_update(ev)
        elif t in (wp.Alive, wp.ThirdPutComplete, wp.NameQuery):
            if t is wp.NameQuery:
                w.link.send(wp.ProjectName(self.name or ""))
        else:
            raise wp.ProtocolError(f"unexpected {t.__name__} from a worker")

    def _add_feature(self, w: WorkerView, name: str) -> None:
        """Remember a feature the worker offers, within what one peer and all together may hold."""
        if name in w.features:
            return
        if len(w.features) >= wp.MAX_FEATURES:
            raise wp.ProtocolError(f"more than {wp.MAX_FEATURES} features")
        if self._feature_bytes + len(name) > MAX_FEATURE_BYTES:
            raise wp.ProtocolError(f"the features of all workers would pass {MAX_FEATURE_BYTES} bytes")
        w.features.add(name)
        self._feature_bytes += len(name)

    def _remove_worker(self, w: WorkerView, reason: str) -> None:
        """Every task of a lost worker goes back to the queue; its cache map is forgotten (a worker wipes its workspace on every disconnect)."""
        if self._workers.pop(w.seq, None) is None:
            return
        self._feature_bytes -= sum(len(f) for f in w.features)
        self._counts["workers_removed"] += 1
        if reason == "lost" or reason == "protocol error" or reason == "keepalive":
            self._counts["workers_lost"] += 1
        self._log_txn(f"WORKER {w.addrport} DISCONNECTION {reason.upper().replace(' ', '_')}")
        for att in list(w.attempts.values()):
            task = self._end_attempt(att, Cleanup.NOTHING)
            task.result = None
            if not self._closed:
                self._retry_or_fail(task)
        w.cache.clear()
        if not self._closed:
            self._kick_schedule()

    def _shutdown_workers(self, n: int) -> int:
        told = 0
        for w in list(self._workers.values()):
            if n and told >= n:
                break
            if n and w.attempts:
                continue
            w.link.send(wp.Exit())
            w.link.close_reason = "shutdown"
            w.draining = True
            told += 1
        return told

    def _host_blocked(self, host: str) -> bool:
        if host not in self._blocked:
            return False
        until = self._blocked[host]
        if until is not None and until <= time.monotonic():
            del self._blocked[host]
            return False
        return True

    # ================================================================ cancel
    def _cancel(self, tid: int) -> Task | None:
        task = self._tasks.get(tid)
        if task is None:
            with self._lock:
                for t in self._inbox:
                    if t.id == tid:
                        self._inbox.remove(t)
                        self._outstanding -= 1
                        transition(t, TaskState.CANCELED)
                        t.result = Result.UNKNOWN
                        self._counts["tasks_cancelled"] += 1
                        return t
            return None
        del self._tasks[tid]
        order = self._orders.pop(tid, None)
        if order is not None:
            self._ready.discard(order)
            self._unqueue(task)
        att = self._attempts.get(tid)
        if att is not None:
            self._end_attempt(att, Cleanup.FILES)
        self._grown.discard(tid)
        transition(task, TaskState.CANCELED)
        task.result = Result.UNKNOWN
        self._counts["tasks_cancelled"] += 1
        self._category(task.category).cancelled += 1
        with self._lock:
            self._outstanding -= 1
        self._log_txn(f"TASK {tid} CANCELED")
        return task

    def _cancel_by_tag(self, tag: str) -> list[Task]:
        out: list[Task] = []
        if tag is None:
            return out
        with self._lock:
            inbox_ids = [t.id for t in self._inbox if t.tag == tag]
        for tid in inbox_ids + [t.id for t in list(self._tasks.values()) if t.tag == tag]:
            t = self._cancel(tid)
            if t is not None:
                out.append(t)
        return out

    def _task_state(self, tid: int) -> TaskState:
        task = self._tasks.get(tid)
        if task is not None:
            return task.state
        with self._lock:
            for t in itertools.chain(self._inbox, self._done):
                if t.id == tid:
                    return t.state
        return TaskState.UNKNOWN

    # ================================================================ timers
    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - a bug here must not stop the manager
                log.exception("manager tick failed")

    def _tick(self) -> None:
        now = time.monotonic()
        wall = time.time()
        for w in list(self._workers.values()):
            if not w.keepalive(now, self.keepalive_interval, self.keepalive_timeout):
                continue
            self._fast_abort_check(w, wall)
            for att in list(w.attempts.values()):
                if att.task.end_time and wall > att.task.end_time and att.running:
                    task = self._end_attempt(att, Cleanup.FILES)
                    self._finish(task, Result.TASK_TIMEOUT, None)
        self._write_stats_line()
        self._flush_txn()

    def _write_stats_line(self) -> None:
        if self._stats_log is not None:
            s = self._make_stats()
            line = {"time": time.time(), **{f.name: getattr(s, f.name) for f in fields(s)}}
            self._stats_log.write(json.dumps(line) + "\n")

    def _fast_abort_check(self, w: WorkerView, wall: float) -> None:
        for att in list(w.attempts.values()):
            task = att.task
            if not att.running or att.queued:
                continue
            cat = self._category(task.category)
            mult = cat.fast_abort if cat.fast_abort is not None else self._fast_abort_default
            if not mult or cat.done < 10:
                continue
            average = cat.exec_time_total / cat.done
            if wall - att.started > mult * average:
                log.info("task %d ran %.1fs (> %s x %.2fs average): fast abort", task.id, wall - att.started, mult, average)
                self._end_attempt(att, Cleanup.FILES)
                self._counts["workers_fast_aborted"] += 1
                self._retry_or_fail(task)

    # ================================================================ status
    def _answer(self, request: wp.StatusRequest | wp.HttpRequest) -> wp.Event:
        """The reply to a status client (``work_queue_status``, ``treadle status``, a browser)."""
        if isinstance(request, wp.StatusRequest):
            return wp.StatusReply(manager_status.as_json(self._status_for(request.kind)))
        title = f"treadle manager {self.name or ''} on port {self.port}"
        return manager_status.http_reply(request.path, title, self._status_for)

    def _catalog_record(self) -> dict[str, Any]:
        return manager_status.catalog_record(self._queue_status())

    def _status_for(self, what: str) -> list[dict[str, Any]] | None:
        what = what.strip("/")
        if what in ("queue_status", "resources_status"):
            return [self._queue_status()]
        if what == "worker_status":
            return manager_status.worker_status(self._workers.values())
        if what == "task_status":
            return self._task_status()
        if what == "wable_status":
            return [self._category_status(c) for c in sorted(self._categories)] + [self._category_status(None)]
        return None

    def _make_stats(self) -> Stats:
        with self._lock:
            done_waiting = len(self._done)
            inbox = len(self._inbox)
        return manager_status.make_stats(
            list(self._workers.values()), self._attempts.values(), self._counts, waiting=len(self._ready),
            inbox=inbox, done_waiting=done_waiting, blocked=len(self._blocked), started=self._started,
        )

    def _queue_status(self) -> dict[str, Any]:
        return manager_status.queue_status(
            self._make_stats(), self._workers.values(), self._categories, self._tasks.values(),
            project=self.name or "", port=self.port, blocked=self._blocked, workers_wanted=self.workers_wanted,
        )

    def _task_status(self) -> list[dict[str, Any]]:
        return manager_status.task_status(self._tasks.values(), self._attempts, self._workers.values(), self._effective_request)

    def _category_status(self, name: str | None) -> dict[str, Any]:
        if name is not None:
            self._category(name)  # asked for by name: it exists from now on, as set_category would make it
        return manager_status.category_status(self._categories, name, sum(1 for w in self._workers.values() if w.ready))

    # ================================================================ logging
    def _log_txn(self, text: str) -> None:
        if self._txn is not None:
            self._txn.write(f"{int(time.time() * 1e6)} {os.getpid()} {text}\n")

    def _flush_txn(self) -> None:
        if self._txn is not None:
            self._txn.flush()


def _first(workers: Iterable[WorkerView], fits: Callable[[WorkerView], bool]) -> WorkerView | None:
    for w in workers:
        if fits(w):
            return w
    return None


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _resource_dict(d: Mapping[str, int]) -> dict[str, int]:
    out = {}
    for k, v in d.items():
        if k not in res.NAMES:
            raise UsageError(f"unknown resource {k!r} (use {', '.join(res.NAMES)})")
        if v is not None:
            out[k] = int(v)
    return out
