"""What the manager tells about itself: the ``Stats`` snapshot and the status records.

``treadle status``, ``work_queue_status``, a browser and the catalog server all read
these records; their field names are the reference's. Each function takes the
manager's state it reports on as arguments and computes from it, so a status query
is a read of the manager thread's state, never a change of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from treadle.queue import protocol as wp
from treadle.queue import resources as res
from treadle.queue.task import Task, TaskState

if TYPE_CHECKING:
    from treadle.queue.attempt import Attempt
    from treadle.queue.worker_view import WorkerView

log = logging.getLogger("treadle.queue.manager")
CATALOG_INTERVAL = 60.0  # seconds between two updates to the catalog server, as the reference


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of the queue, with the reference's field names."""

    workers_connected: int = 0
    workers_init: int = 0
    workers_idle: int = 0
    workers_busy: int = 0
    workers_able: int = 0
    workers_joined: int = 0
    workers_removed: int = 0
    workers_released: int = 0
    workers_idled_out: int = 0
    workers_fast_aborted: int = 0
    workers_blocked: int = 0
    workers_lost: int = 0
    tasks_waiting: int = 0
    tasks_on_workers: int = 0
    tasks_running: int = 0
    tasks_with_results: int = 0
    tasks_submitted: int = 0
    tasks_dispatched: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    tasks_cancelled: int = 0
    tasks_exhausted_attempts: int = 0
    time_when_started: float = 0.0
    time_send: float = 0.0
    time_receive: float = 0.0
    time_workers_execute: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    capacity_tasks: int = 0
    capacity_cores: int = 0
    capacity_memory: int = 0
    capacity_disk: int = 0
    capacity_gpus: int = 0
    total_cores: int = 0
    total_memory: int = 0
    total_disk: int = 0
    total_gpus: int = 0
    committed_cores: int = 0
    committed_memory: int = 0
    committed_disk: int = 0
    committed_gpus: int = 0


@dataclass(slots=True)
class CategoryConfig:
    """Per-category resource settings (``set_category``) and running figures."""

    name: str
    max: dict[str, int] = field(default_factory=dict)
    min: dict[str, int] = field(default_factory=dict)
    first: dict[str, int] = field(default_factory=dict)
    mode: str = "FIXED"
    fast_abort: float | None = None
    # running figures
    done: int = 0
    exec_time_total: float = 0.0
    waiting: int = 0
    running: int = 0
    failed: int = 0
    cancelled: int = 0
    dispatched: int = 0


def make_stats(
    workers: list[WorkerView],
    attempts: Iterable[Attempt],
    counts: Mapping[str, float],
    *,
    waiting: int,
    inbox: int,
    done_waiting: int,
    blocked: int,
    started: float,
) -> Stats:
    """The counters now: ``waiting`` tasks are in the ready queue, ``inbox`` submitted
    and not yet seen by the manager thread, ``done_waiting`` finished and not yet waited for."""
    ready = [w for w in workers if w.ready]
    attempts = list(attempts)
    on_workers = len(attempts)
    running = sum(1 for a in attempts if a.running and not a.queued)
    queued = sum(1 for a in attempts if a.queued)  # sent ahead to a worker, waiting there for room
    total = {r: sum(w.total[r] for w in ready) for r in res.NAMES}
    inuse = {r: sum(w.inuse[r] for w in ready) for r in res.NAMES}
    c = counts
    return Stats(
        workers_connected=len(workers),
        workers_init=len(workers) - len(ready),
        workers_idle=sum(1 for w in ready if not w.attempts),
        workers_busy=sum(1 for w in ready if w.attempts),
        workers_able=len(ready),
        workers_joined=int(c["workers_joined"]),
        workers_removed=int(c["workers_removed"]),
        workers_released=int(c["workers_released"]),
        workers_idled_out=int(c["workers_idled_out"]),
        workers_fast_aborted=int(c["workers_fast_aborted"]),
        workers_blocked=blocked,
        workers_lost=int(c["workers_lost"]),
        tasks_waiting=waiting + inbox,
        tasks_on_workers=on_workers,
        tasks_running=running,
        tasks_with_results=on_workers - running - queued + done_waiting,
        tasks_submitted=int(c["tasks_submitted"]) + inbox,
        tasks_dispatched=int(c["tasks_dispatched"]),
        tasks_done=int(c["tasks_done"]),
        tasks_failed=int(c["tasks_failed"]),
        tasks_cancelled=int(c["tasks_cancelled"]),
        tasks_exhausted_attempts=int(c["tasks_exhausted_attempts"]),
        time_when_started=started,
        time_workers_execute=float(c["time_workers_execute"]),
        bytes_sent=int(c["bytes_sent"]),
        bytes_received=int(c["bytes_received"]),
        capacity_tasks=max(len(ready), sum(w.total["cores"] for w in ready)),
        capacity_cores=total["cores"],
        capacity_memory=total["memory"],
        capacity_disk=total["disk"],
        capacity_gpus=total["gpus"],
        total_cores=total["cores"],
        total_memory=total["memory"],
        total_disk=total["disk"],
        total_gpus=total["gpus"],
        committed_cores=inuse["cores"],
        committed_memory=inuse["memory"],
        committed_disk=inuse["disk"],
        committed_gpus=inuse["gpus"],
    )


def queue_status(
    s: Stats,
    workers: Iterable[WorkerView],
    categories: Mapping[str, CategoryConfig],
    tasks: Iterable[Task],
    *,
    project: str,
    port: int,
    blocked: Iterable[str],
    workers_wanted: int | None,
) -> dict[str, Any]:
    """The ``queue_status`` record (reference field names) a status client or catalog reads."""
    out: dict[str, Any] = {f.name: getattr(s, f.name) for f in fields(s)}
    workers = [w for w in workers if w.ready]
    able = len(workers)
    out.update(
        {
            "type": "wq_master",
            "project": project,
            "name": socket.gethostname(),
            "starttime": int(s.time_when_started),
            "working_dir": os.getcwd(),
            "owner": owner(),
            "version": "8.0.0",
            "treadle": True,
            "port": port,
            "priority": 0,
            "manager_preferred_connection": "by_ip",
            "network_interfaces": [],
            "workers": s.workers_connected,
            "workers_blocked": sorted(blocked),
            "tasks_complete": s.tasks_done,
            "tasks_left": s.tasks_waiting + s.tasks_on_workers,
            "capacity_instantaneous": s.capacity_tasks,
            "capacity_weighted": s.capacity_tasks,
            "manager_load": 0,
            "categories": [category_status(categories, c, able) for c in sorted(categories)],
        }
    )
    if workers_wanted is not None:
        out["workers_wanted"] = workers_wanted
    for r in ("workers",) + res.NAMES:
        if r == "workers":
            vals = [w.slots for w in workers]
            inuse = sum(1 for w in workers if w.attempts)
        else:
            vals = [w.total[r] for w in workers]
            inuse = sum(w.inuse[r] for w in workers)
        out[f"{r}_inuse"] = inuse
        out[f"{r}_total"] = sum(vals)
        out[f"{r}_smallest"] = min(vals) if vals else 0
        out[f"{r}_largest"] = max(vals) if vals else 0
    tasks = list(tasks)
    for r in res.NAMES:
        out[f"tasks_total_{r}"] = sum(getattr(t, r) or 0 for t in tasks)
    return out


def catalog_record(q: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a ``queue_status`` record sent to a catalog server."""
    keep = (
        "type project starttime working_dir owner version port priority manager_preferred_connection "
        "network_interfaces workers workers_connected tasks_waiting tasks_running tasks_on_workers "
        "tasks_complete tasks_left capacity_tasks capacity_cores capacity_memory capacity_disk "
        "cores_total memory_total disk_total gpus_total"
    ).split()
    return {k: q[k] for k in keep if k in q}


def worker_status(workers: Iterable[WorkerView]) -> list[dict[str, Any]]:
    """One record per connected worker (what `work_queue_status -W` shows)."""
    out = []
    now = time.time()
    for w in workers:
        if not w.ready:
            continue
        running = [a.task for a in w.attempts.values() if a.running]
        d: dict[str, Any] = {
            "hostname": w.hostname,
            "os": w.os,
            "arch": w.arch,
            "version": w.version,
            "address_port": w.addrport,
            "worker_id": w.worker_id,
            "ncpus": w.total["cores"],
            "total_tasks_complete": w.tasks_complete,
            "total_tasks_running": len(running),
            "total_bytes_transferred": w.bytes_sent + w.bytes_received,
            "total_transfer_time": 0,
            "start_time": int(w.joined * 1e6),
            "current_time": int(now * 1e6),
            "workers_total": w.slots,
            "workers_inuse": 1 if w.attempts else 0,
        }
        for r in res.NAMES:
            d[f"{r}_total"] = w.total[r]
            d[f"{r}_inuse"] = w.inuse[r]
            d[f"{r}_smallest"] = w.smallest[r]
            d[f"{r}_largest"] = w.largest[r]
        for i, t in enumerate(running, 1):
            d[f"current_task_{i:03d}_id"] = t.id
            d[f"current_task_{i:03d}_command"] = t.command
        out.append(d)
    return out


def task_status(
    tasks: Iterable[Task],
    attempts: Mapping[int, Attempt],
    workers: Iterable[WorkerView],
    request: Callable[[Task], tuple[dict[str, int | None], dict[str, int] | None]],
) -> list[dict[str, Any]]:
    """One record per task in the queue (what `work_queue_status -T` shows); a waiting task
    no connected worker can ever run says why (``request``: what the task asks, after its
    category's settings)."""
    out = []
    now = time.time()
    ready = [w for w in workers if w.ready]
    all_treadle = all(w.treadle for w in ready)
    # tasks alike get one answer: a status query must not stall a queue of 10^5 tasks
    verdicts: dict[tuple[Any, ...], str | None] = {}
    for t in tasks:
        att = attempts.get(t.id)
        d: dict[str, Any] = {
            "taskid": t.id,
            "state": "running" if att is not None else t.state.name,
            "tag": t.tag or "",
            "category": t.category,
            "command": t.command,
            "host": att.worker.hostname if att is not None else "",
            "priority": str(t.priority),
            "total_submissions": t.attempts,
        }
        for r in res.NAMES:
            v = getattr(t, r)
            d[r] = -1 if v is None else v
        if att is None and t.state is TaskState.READY:
            declared, minimum = request(t)
            key = (*declared.items(), *(minimum or {}).items(), tuple(t.features), all_treadle or t.reference_safe)
            if key not in verdicts:
                verdicts[key] = never_fits(t, declared, minimum, ready)
            if verdicts[key]:
                d["never_fits"] = verdicts[key]
        if att is not None:
            d.update(
                {
                    "address_port": att.worker.addrport,
                    "time_when_submitted": int(t.time_submitted * 1e6),
                    "time_when_commit_start": int(att.started * 1e6),
                    "time_when_commit_end": int(att.started * 1e6),
                    "current_time": int(now * 1e6),
                }
            )
        out.append(d)
    return out


def never_fits(
    task: Task, declared: dict[str, int | None], minimum: dict[str, int] | None, workers: list[WorkerView]
) -> str | None:
    """Why none of ``workers`` can ever run ``task``, or None if one can (or none is
    connected: a bigger worker may yet come). A waiting task that asks more than any
    worker has waits silently forever otherwise; ``treadle status`` shows this."""
    if not workers:
        return None
    short: dict[str, tuple[int, int]] = {}  # resource -> (asked, largest offered)
    features = names = False
    for w in workers:
        box = res.box(declared, w.largest, minimum)
        over = [r for r in res.NAMES if box[r] > w.largest[r]]
        lacks = bool(task.features) and not set(task.features) <= w.features
        wrong_kind = not w.treadle and not task.reference_safe
        if not (over or lacks or wrong_kind):
            return None
        for r in over:
            asked, offered = short.get(r, (0, 0))
            short[r] = (max(asked, box[r]), max(offered, w.largest[r]))
        features = features or lacks
        names = names or wrong_kind
    units = {"memory": " MB memory", "disk": " MB disk", "cores": " cores", "gpus": " gpus"}
    parts = [f"asks {asked}{units[r]}, the largest connected worker has {offered}"
             for r, (asked, offered) in short.items()]
    if features:
        parts.append("needs features " + ", ".join(sorted(task.features)))
    if names:
        parts.append("has file names only treadle workers can take")
    return "; ".join(parts)


def category_status(categories: Mapping[str, CategoryConfig], name: str | None, able: int) -> dict[str, Any]:
    """The counters of category ``name`` (which exists), or of the whole queue (None)."""
    if name is None:
        cats = list(categories.values())
        label = "whole queue"
    else:
        cats = [categories[name]]
        label = name
    d: dict[str, Any] = {
        "category": label,
        "tasks_waiting": sum(c.waiting for c in cats),
        "tasks_running": sum(c.running for c in cats),
        "tasks_on_workers": sum(c.running for c in cats),
        "tasks_dispatched": sum(c.dispatched for c in cats),
        "tasks_done": sum(c.done for c in cats),
        "tasks_failed": sum(c.failed for c in cats),
        "tasks_cancelled": sum(c.cancelled for c in cats),
        "workers_able": able,
        "first_allocation_count": 0,
        "max_allocation_count": 0,
    }
    if name is not None:
        c = cats[0]
        for r in ("cores", "memory", "disk"):
            if r in c.max:
                d[f"max_{r}"] = f"~{c.max[r]}"
        d["mode"] = c.mode
    return d


def owner() -> str:
    """The user running the manager, as the catalog shows it."""
    try:
        import pwd  # POSIX only

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return "unknown"


def as_json(records: list[dict[str, Any]] | None) -> bytes:
    """The compact JSON array a status client gets (an empty one for a kind we do not know)."""
    return json.dumps(records or [], separators=(",", ":")).encode()


def http_reply(path: str, title: str, records_for: Callable[[str], list[dict[str, Any]] | None]) -> wp.HttpReply:
    """A browser's view: an index of the status kinds at ``/``, each kind's JSON at ``/KIND``."""
    if path.strip("/") == "":
        links = "".join(
            f'<li><a href="/{k}">{k}</a></li>' for k in ("queue_status", "worker_status", "task_status", "wable_status")
        )
        return wp.HttpReply(f"<html><head><title>{title}</title></head><body><h1>{title}</h1><ul>{links}</ul></body></html>".encode(), "text/html")
    return wp.HttpReply(as_json(records_for(path.strip("/"))))


async def report_to_catalog(catalog: str, record: Callable[[], dict[str, Any]]) -> None:
    """Send ``record()`` to the catalog server at ``catalog`` (HOST:PORT) now and every minute."""
    host, _, port = catalog.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        while True:
            data = json.dumps(record()).encode()
            try:
                sock.sendto(data, (host or catalog, int(port or 9097)))
            except OSError as e:
                log.info("catalog update to %s failed: %s", catalog, e)
            await asyncio.sleep(CATALOG_INTERVAL)
    finally:
        sock.close()
