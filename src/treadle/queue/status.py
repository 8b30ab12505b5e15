"""Ask a running manager how it is doing, and show the answer.

A status client opens a connection to the manager's port, sends one line
(``queue_status``, ``worker_status``, ``task_status``, ...) and reads a JSON
array until the manager closes. This works against treadle's
manager and the reference's alike. A manager with a password answers only
after the password step: the reference ``work_queue_status``
cannot take it, ``treadle status --password FILE`` does.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Sequence
from typing import Any

from treadle.errors import TreadleError
from treadle.queue import protocol as wp

TIMEOUT = 10.0


def query(
    host: str, port: int, kind: str = "queue_status", timeout: float = TIMEOUT, password: bytes | None = None
) -> list[dict[str, Any]]:
    """One status request; raises TreadleError if the manager cannot be reached or answers nonsense."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            if password is not None:
                authenticate(s, password)
            s.sendall(wp.status_request(kind))
            chunks = []
            while True:
                data = s.recv(1 << 16)
                if not data:
                    break
                chunks.append(data)
    except wp.ProtocolError as e:
        raise TreadleError(f"password authentication with the manager at {host}:{port} failed: {e}") from None
    except OSError as e:
        raise TreadleError(f"cannot query the manager at {host}:{port}: {e.strerror or e}") from None
    body = b"".join(chunks)
    if not body:
        raise TreadleError(f"the manager at {host}:{port} closed without answering (does it require a password?)")
    try:
        return wp.parse_status_reply(body)
    except wp.ProtocolError as e:
        raise TreadleError(f"the manager at {host}:{port} sent a bad status reply: {e}") from None


def authenticate(sock: socket.socket, password: bytes) -> None:
    """The password step of a connection's set-up on a status client's blocking socket (plain or TLS).

    The client takes the worker's role: it answers only after the manager proved the
    password, so a fake manager cannot use it as an oracle. Raises ``wp.ProtocolError``
    when the manager refuses, misbehaves or closes; socket errors propagate.
    """
    conn = wp.WorkerConnection()  # the manager's lines parse as they do for a worker
    hs = wp.PasswordHandshake(password, wp.WORKER)
    sock.sendall(b"".join(conn.send(e) for e in hs.start()))
    while hs.succeeded is None:
        ev = conn.next_event()
        if ev is wp.NEED_DATA:
            conn.receive_data(sock.recv(4096))
        elif isinstance(ev, wp.ConnectionClosed):
            raise wp.ProtocolError("the manager closed the connection during the password step")
        else:
            sock.sendall(b"".join(conn.send(e) for e in hs.receive(ev)))
    if not hs.succeeded:
        raise wp.ProtocolError(hs.failure or "the password step failed")


def query_catalog(catalog: str, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """The managers a catalog server knows (``HOST:PORT``), as its JSON query interface lists them."""
    url = f"http://{catalog}/query.json"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - a catalog the user named
            records = json.loads(r.read().decode())
    except (OSError, ValueError) as e:
        raise TreadleError(f"cannot query the catalog at {catalog}: {e}") from None
    return [r for r in records if isinstance(r, dict) and r.get("type") == "wq_master"]


def snapshot(host: str, port: int, password: bytes | None = None) -> dict[str, Any]:
    """Queue summary, workers and tasks of one manager."""
    queue = query(host, port, "queue_status", password=password)
    return {
        "queue": queue[0] if queue else {},
        "workers": query(host, port, "worker_status", password=password),
        "tasks": query(host, port, "task_status", password=password),
    }


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Plain left-aligned columns (what a terminal and ``grep`` both read well)."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def render(snap: dict[str, Any], host: str, port: int) -> str:
    """A human summary of a snapshot: progress line, workers table, tasks table, and a
    line for each waiting task that the manager says no connected worker can ever fit."""
    q = snap["queue"]
    project = q.get("project") or "-"
    lines = [
        f"manager {host}:{port}  project {project}  "
        f"waiting {q.get('tasks_waiting', 0)}  running {q.get('tasks_running', 0)}  "
        f"complete {q.get('tasks_complete', q.get('tasks_done', 0))}  workers {q.get('workers', q.get('workers_connected', 0))}",
        "",
    ]
    workers = snap["workers"]
    lines.append(
        table(
            [
                (
                    w.get("hostname"),
                    w.get("address_port"),
                    w.get("cores_total"),
                    w.get("memory_total"),
                    w.get("disk_total"),
                    w.get("total_tasks_running"),
                    w.get("total_tasks_complete"),
                )
                for w in workers
            ],
            ("HOST", "ADDRESS", "CORES", "MEMORY", "DISK", "RUNNING", "COMPLETED"),
        )
        if workers
        else "no workers connected"
    )
    lines.append("")
    tasks = snap["tasks"]
    lines.append(
        table(
            [(t.get("taskid"), t.get("state"), t.get("category"), t.get("host") or "", _short(t.get("command", ""))) for t in tasks],
            ("ID", "STATE", "CATEGORY", "HOST", "COMMAND"),
        )
        if tasks
        else "no tasks in the queue"
    )
    stuck = [t for t in tasks if t.get("never_fits")]
    if stuck:
        lines.append("")
        lines += [f"task {t.get('taskid')} can never run on the connected workers: {t['never_fits']}" for t in stuck]
    return "\n".join(lines)


def _short(text: str, width: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."
