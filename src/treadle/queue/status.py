"""Ask a running manager how it is doing, and show the answer.

A status client opens a connection to the manager's port, sends one line
(``queue_status``, ``worker_status``, ``task_status``, ...) and reads a JSON
array until the manager closes. This works against treadle's manager and the
reference's alike. A manager with a password answers only after the password
step: the reference ``work_queue_status`` cannot take it, ``treadle status
--password FILE`` does.

One client serves ``treadle status`` (``query``: every failure one error for a
person) and the worker factory (``query_status``: socket and protocol errors for a
program): TLS, the password step and the reply's size cap apply to both.
"""

from __future__ import annotations

import json
import socket
import ssl
import urllib.request
from collections.abc import Sequence
from typing import Any

from treadle.errors import TreadleError
from treadle.queue import protocol as wp

TIMEOUT = 10.0


def query_status(host: str, port: int, password: bytes | None = None, kind: str = "queue_status",
                 timeout: float = TIMEOUT, tls_ca: str | None = None) -> list[dict[str, Any]]:
    """One status question over one connection, for a program (the worker factory).

    With ``tls_ca`` the manager speaks TLS and its certificate must be signed by that CA;
    with ``password`` the password step comes first. A reply larger than
    ``MAX_STATUS_REPLY`` is refused as it arrives, so a peer that never stops sending
    cannot fill this process's memory. Raises ``OSError`` when the manager cannot be
    reached and ``ProtocolError`` (saying what went wrong) when it does not answer well.
    """
    with socket.create_connection((host, port), timeout=timeout) as plain:
        sock = plain
        if tls_ca:
            sock = ssl.create_default_context(cafile=tls_ca).wrap_socket(plain, server_hostname=host)
        if password is not None:
            try:
                authenticate(sock, password)
            except wp.ProtocolError as e:
                raise wp.ProtocolError(f"password authentication failed: {e}") from None
        sock.sendall(wp.status_request(kind))
        body = _read_reply(sock)
    if not body:
        raise wp.ProtocolError("closed without answering (does it require a password?)")
    try:
        return wp.parse_status_reply(body)
    except wp.ProtocolError as e:
        raise wp.ProtocolError(f"bad status reply: {e}") from None


def _read_reply(sock: socket.socket) -> bytes:
    """Everything the manager sends until it closes, at most ``MAX_STATUS_REPLY`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            data = sock.recv(1 << 16)
        except ssl.SSLError:  # a TLS peer may close without close_notify once it has answered
            if not chunks:
                raise
            break
        if not data:
            break
        chunks.append(data)
        size += len(data)
        if size > wp.MAX_STATUS_REPLY:
            raise wp.ProtocolError(f"status reply larger than {wp.MAX_STATUS_REPLY} bytes")
    return b"".join(chunks)


def query(host: str, port: int, kind: str = "queue_status", timeout: float = TIMEOUT,
          password: bytes | None = None, tls_ca: str | None = None) -> list[dict[str, Any]]:
    """One status request for a person (``treadle status``): every failure is one TreadleError."""
    try:
        return query_status(host, port, password, kind, timeout, tls_ca)
    except wp.ProtocolError as e:
        raise TreadleError(f"the manager at {host}:{port}: {e}") from None
    except OSError as e:
        raise TreadleError(f"cannot query the manager at {host}:{port}: {e.strerror or e}") from None


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
        if not isinstance(ev, wp.Event):  # NEED_DATA
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
            body = r.read(wp.MAX_STATUS_REPLY + 1)
        if len(body) > wp.MAX_STATUS_REPLY:
            raise ValueError(f"reply larger than {wp.MAX_STATUS_REPLY} bytes")
        records = json.loads(body.decode())
    except (OSError, ValueError) as e:
        raise TreadleError(f"cannot query the catalog at {catalog}: {e}") from None
    return [r for r in records if isinstance(r, dict) and r.get("type") == "wq_master"]


def snapshot(host: str, port: int, password: bytes | None = None,
             tls_ca: str | None = None) -> dict[str, Any]:
    """Queue summary, workers and tasks of one manager."""
    queue = query(host, port, "queue_status", password=password, tls_ca=tls_ca)
    return {
        "queue": queue[0] if queue else {},
        "workers": query(host, port, "worker_status", password=password, tls_ca=tls_ca),
        "tasks": query(host, port, "task_status", password=password, tls_ca=tls_ca),
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
