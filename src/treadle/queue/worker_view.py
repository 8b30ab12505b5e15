"""The manager's view of one connected worker: what it offers, what runs there, and the replies it owes.

A worker's replies come back in the order they were asked (``replies`` mirrors the
protocol's queue of pending replies); their payloads are written here as they
stream: a get reply to its local file, a result's output to memory within a budget
shared by every connection, a watched output at its offset.
"""

from __future__ import annotations

import collections
import io
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from treadle.queue import protocol as wp
from treadle.queue import resources as res
from treadle.queue.link import Link
from treadle.queue.task import MAX_OUTPUT_BYTES

if TYPE_CHECKING:
    from treadle.queue.attempt import Attempt
    from treadle.queue.task import Task

log = logging.getLogger("treadle.queue.manager")

REFERENCE_KILL_STALL = 3.5  # seconds a reference worker may spend in `kill` of a running task


class Get:
    """A pending ``get``: where its reply goes and what it found."""

    __slots__ = ("name", "local", "done", "missing", "nbytes", "error")

    def __init__(self, name: str, local: str, done: Callable[[Get], None]) -> None:
        self.name = name
        self.local = local
        self.done = done
        self.missing = False
        self.nbytes = 0
        self.error: str | None = None  # a local write failed: the reason, with the path


class Budget:
    """Bytes the manager may still buffer for all connections together."""

    __slots__ = ("left",)

    def __init__(self, total: int) -> None:
        self.left = total


class WorkerView:
    """The manager's view of one connected worker."""

    def __init__(self, seq: int, link: Link, addrport: str, budget: Budget, totals: MutableMapping[str, float]) -> None:
        self.seq = seq
        self.link = link
        self.addrport = addrport
        self.host = addrport.rsplit(":", 1)[0]
        self.hostname = "unknown"
        self.os = "unknown"
        self.arch = "unknown"
        self.version = "unknown"
        self.worker_id = ""
        self.treadle = False
        # Announced ``info treadle-prefetch``: this worker queues a task that does not fit
        # yet and starts it the moment room frees, so it may be sent one more task per
        # core (``queued``) and never waits a round trip to the manager between two.
        self.prefetch = False
        self.queued: collections.deque[Attempt] = collections.deque()  # sent beyond its room, oldest first
        self.features: set[str] = set()
        self.total: dict[str, int] = {r: 0 for r in res.NAMES}
        self.largest: dict[str, int] = {r: 0 for r in res.NAMES}
        self.smallest: dict[str, int] = {r: 0 for r in res.NAMES}
        self.slots = 0  # the `workers` resource
        self.inuse: dict[str, int] = {r: 0 for r in res.NAMES}
        self.seen_tag = False
        self.seen_end_time = False
        self.end_time = 0.0
        self.draining = False
        self.attempts: dict[int, Attempt] = {}  # by task id: the attempts running or being retrieved here
        # ids of tasks killed while running: their result may still be on its way
        self.killed: set[int] = set()
        self.cache: dict[str, tuple[str, int]] = {}  # content key -> (cache name, bytes)
        self.results_pending = False  # available_results seen, send_results not yet sent
        self.results_requested = False
        self.last_recv = time.monotonic()
        self.check_sent = 0.0
        self.recv_since_check = True
        self.joined = time.time()
        self.tasks_complete = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.replies: collections.deque[Get | str] = collections.deque()  # mirrors the protocol's pending replies
        self._payload: Any = None  # what the Data events after a header go to
        self._payload_kind = ""
        self._payload_head: Any = None
        self._payload_size = 0
        self._truncated = False
        self.budget = budget  # task output in flight, shared by every connection
        self.totals = totals  # the manager's counters: bytes_sent, bytes_received
        self.on_result: Callable[..., None] = lambda *a: None

    # ------------------------------------------------ replies and their payloads
    def request_get(self, get: Get) -> None:
        self.replies.append(get)
        self.link.send(wp.Get(get.name, 1))

    def request_results(self) -> None:
        self.replies.append("results")
        self.link.send(wp.SendResults(-1))

    def reply_end(self) -> None:
        head = self.replies.popleft()
        if isinstance(head, Get):
            head.done(head)
        elif self.results_pending:
            self.results_pending = False
            self.request_results()
        else:
            self.results_requested = False

    def _local_for(self, path: str) -> tuple[Get, str]:
        get = self.replies[0]
        assert isinstance(get, Get)  # the protocol checked that a get is pending
        return get, get.local + path[len(get.name):]

    def begin_result(self, ev: wp.Result, keep: bool) -> None:
        """A result's output follows: kept for a task running here, else dropped as it streams."""
        self._payload_kind, self._payload_head = "result", ev
        self._payload = io.BytesIO() if keep else None
        self._truncated = False

    def output_wanted(self, tid: int, what: str) -> bool:
        """Whether the payload of a result or update for ``tid`` is for a task running here.

        A task killed here may still report (its payload is then dropped as it
        streams); an id this worker was never given is a lie, and the worker is
        dropped before any of its payload is read.
        """
        att = self.attempts.get(tid)
        if att is not None:
            return att.running
        if tid in self.killed:
            if what == "result":
                self.killed.discard(tid)  # nothing more comes after a result
            return False
        raise wp.ProtocolError(f"{what} for task {tid}, which this worker was not given")

    def begin_update(self, ev: wp.Update) -> None:
        """New bytes of a watched output follow: they go straight to its local file at their offset."""
        att = self.attempts.get(ev.task_id) if self.output_wanted(ev.task_id, "update") else None
        spec = None
        if att is not None:
            spec = next((s for s in att.task.outputs if s.remote == ev.path and s.watch and s.local), None)
        sink = None
        if att is not None and spec is not None and spec.local is not None:
            try:
                sink = open(spec.local, "r+b" if os.path.exists(spec.local) else "wb")  # noqa: SIM115 - closed at EndOfData
                sink.seek(ev.offset)
            except OSError as e:
                if sink is not None:
                    sink.close()
                sink = None
                att.error = write_error(spec.local, e)
        self._payload_kind, self._payload_head, self._payload = "update", att, sink

    def begin_file(self, ev: wp.FileReply) -> None:
        get, local = self._local_for(ev.path)
        self._payload_kind, self._payload_head = "file", get
        self._payload_size = ev.size
        self._payload = None
        try:
            parent = os.path.dirname(local)
            if parent:
                os.makedirs(parent, exist_ok=True)
            if os.path.isdir(local) and not os.path.islink(local):
                shutil.rmtree(local)
            self._payload = open(local, "wb")  # noqa: SIM115 - closed at EndOfData
        except OSError as e:
            get.error = write_error(local, e)

    def get_dir(self, path: str) -> None:
        get, local = self._local_for(path)
        try:
            if os.path.lexists(local) and not os.path.isdir(local):
                os.unlink(local)
            os.makedirs(local, exist_ok=True)
        except OSError as e:
            get.error = write_error(local, e)

    def get_missing(self, path: str) -> None:
        get, _ = self._local_for(path)
        get.missing = True

    def payload(self, data: bytes) -> None:
        sink = self._payload
        if sink is None:
            return  # dropped as it streams: output for no task of ours is never held
        if self._payload_kind == "result":
            room = min(len(data), MAX_OUTPUT_BYTES - sink.tell(), self.budget.left)
            if room < len(data):
                self._truncated = True
                data = data[: max(0, room)]
            sink.write(data)
            self.budget.left -= len(data)
            return
        try:
            sink.write(data)
        except OSError as e:
            self._write_failed(e)

    def _write_failed(self, e: OSError) -> None:
        """A local write failed (a full disk...): the task fails, not the worker.

        The rest of the payload is read and dropped, so the stream stays in step; a
        half-written file of a get reply is removed, as the reference does.
        """
        sink, self._payload = self._payload, None
        try:
            sink.close()
        except OSError:
            pass
        if self._payload_kind == "file":
            try:
                os.unlink(sink.name)
            except OSError:
                pass
        if self._payload_head is not None:
            self._payload_head.error = write_error(sink.name, e)

    def payload_end(self) -> None:
        kind, head, sink = self._payload_kind, self._payload_head, self._payload
        if kind == "result":
            self._payload_kind, self._payload_head, self._payload = "", None, None
            if sink is not None:
                output = sink.getvalue()  # BytesIO hands over its buffer: no second copy
                self.budget.left += len(output)
                self.on_result(self, head.status, head.exit_code, output, self._truncated, head.usec, head.task_id)
            return
        if sink is not None:
            try:
                sink.close()  # a full disk may show only here, when the last bytes are flushed
            except OSError as e:
                self._write_failed(e)
        self._payload_kind, self._payload_head, self._payload = "", None, None
        if kind == "file":
            head.nbytes += self._payload_size

    def closing(self) -> None:
        """Release what a half-received payload holds when the connection ends."""
        sink = self._payload
        if self._payload_kind == "result" and sink is not None:
            self.budget.left += sink.tell()
        elif sink is not None:
            try:
                sink.close()
            except OSError:
                pass  # the task goes back to the queue with its worker anyway
        self._payload_kind, self._payload_head, self._payload = "", None, None

    # ------------------------------------------------------------ what it tells
    def sent(self, n: int) -> None:
        """``n`` bytes went to this worker."""
        self.bytes_sent += n
        self.totals["bytes_sent"] += n

    def received(self, n: int) -> None:
        """``n`` bytes came from this worker: it is alive."""
        self.bytes_received += n
        self.totals["bytes_received"] += n
        self.last_recv = time.monotonic()
        self.recv_since_check = True

    def results_available(self) -> None:
        """``available_results``: ask for them now, or once the reply being read ends."""
        if self.results_requested:
            self.results_pending = True
        else:
            self.results_requested = True
            self.request_results()

    def info(self, key: str, value: str) -> None:
        """An ``info`` line: what it says about this worker."""
        if key == "worker-end-time":
            try:
                self.end_time = float(value)
            except ValueError:
                raise wp.ProtocolError(f"bad worker-end-time {wp.quoted(value)}") from None
            self.seen_end_time = True
        elif key == "worker-id":
            self.worker_id = value
        elif key == "treadle-version":
            self.treadle = True
            self.link.quickack = False  # it writes each reply whole, with TCP_NODELAY
        elif key == wp.PREFETCH_INFO:
            self.prefetch = self.treadle
        elif key == "idle-disconnecting":
            self.link.close_reason = "idle"
        elif key in ("vacating", "disk_exhausted", "memory_exhausted", "wall_time_exhausted", "disk_error"):
            self.draining = True
            self.link.close_reason = key

    def resource(self, r: wp.Resource) -> None:
        """A ``resource`` line: what this worker offers."""
        if r.name == "workers":
            self.slots = r.total
        elif r.name in res.NAMES:
            self.total[r.name], self.smallest[r.name], self.largest[r.name] = r.total, r.smallest, r.largest

    # ------------------------------------------------------------ what it is told
    def keepalive(self, now: float, interval: float, timeout: float) -> bool:
        """Send a ``check`` after ``interval`` quiet seconds; False (the link dropped) when one went unanswered for ``timeout``."""
        if self.check_sent and not self.recv_since_check and now - self.check_sent > timeout:
            log.warning("worker %s did not answer a keepalive within %ss; dropped", self.addrport, timeout)
            self.link.close_reason = "keepalive"
            self.link.abort()
            return False
        if self.recv_since_check and now - max(self.check_sent, self.last_recv) >= interval:
            self.link.send(wp.Check())
            self.check_sent = now
            self.recv_since_check = False
        return True

    def kill(self, tid: int, names: Iterable[str], *, running: bool) -> None:
        """Kill task ``tid`` here and unlink ``names`` from the cache.

        A reference worker stalls up to 3 s on the ``kill`` of a task still
        running and then waits on its socket without looking at what it had
        already read, so anything sent in the same segment would sit unread. Such
        a ``kill`` therefore goes alone, and the worker gets nothing more until
        the stall is over.
        """
        self.link.send(wp.Kill(tid), *(wp.Unlink(n) for n in names))
        if not running:
            return
        self.killed.add(tid)
        if not self.treadle:
            self.link._flush()  # now, before anything else is queued this turn
            self.link.hold(REFERENCE_KILL_STALL)

    @property
    def ready(self) -> bool:
        """As the reference manager does: no task before `resource tag` and `info worker-end-time`."""
        return self.seen_tag and self.seen_end_time

    def has_room(self) -> bool:
        return self.inuse["cores"] < self.total["cores"] or self.inuse["gpus"] < self.total["gpus"] or (
            self.total["cores"] == 0 and self.total["gpus"] == 0
        )

    def queue_room(self) -> bool:
        """Whether one more task may wait here for room (a prefetching worker, one per core)."""
        return self.prefetch and len(self.queued) < max(1, self.total["cores"])

    def promote(self, now: float) -> list[Attempt]:
        """The queued attempts that fit now, oldest first, as the worker starts them: they hold their boxes from now."""
        started = []
        while self.queued and res.fits(self.inuse, self.queued[0].box, self.total):
            att = self.queued.popleft()
            att.queued = False
            att.started = now
            res.add(self.inuse, att.box)
            started.append(att)
        return started

    def box_for(
        self,
        task: Task,
        declared: Mapping[str, int | None],
        minimum: Mapping[str, int] | None,
        now: float,
        overcommit: float,
        queue: bool = False,
    ) -> dict[str, int] | None:
        """The resources ``task`` would hold here if it started now, or None if this worker cannot take it.

        Beyond room, a worker must have the task's features, speak treadle's extensions
        when the task needs them, and stay long enough for the task's minimum running time.
        With ``queue``, the task is to wait here for room instead: it must fit the
        worker alone, and the worker's queue must have room.
        """
        if self.link._closed:
            return None
        if task.features and not set(task.features) <= self.features:
            return None
        if not self.treadle and not task.reference_safe:
            return None
        if task.running_time_min and self.end_time and self.end_time - now < task.running_time_min:
            return None
        b = res.box(declared, self.largest, minimum)
        if res.never_fits(b, self.largest):
            return None
        if queue:
            return b if self.queue_room() and res.fits(_NOTHING_IN_USE, b, self.total) else None
        return b if res.fits(self.inuse, b, self.total, overcommit) else None


_NOTHING_IN_USE: Mapping[str, int] = {}


def write_error(path: str, e: OSError) -> str:
    """The reason a task fails when its output cannot be written here; logged once."""
    where = f" ({e.filename})" if e.filename and e.filename != path else ""
    reason = f"cannot write output {path}: {e.strerror or e}{where}"
    log.warning("%s", reason)
    return reason
