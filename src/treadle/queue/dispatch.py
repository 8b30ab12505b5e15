"""Putting a task on a worker's link: its inputs into the worker's cache, then its description.

Also what ``submit`` refuses: a task whose names, command or environment could
not cross the wire, checked when the application submits it rather than found
when no worker can take it.
"""

from __future__ import annotations

import logging
import os

from treadle.errors import UsageError
from treadle.queue import protocol as wp
from treadle.queue import resources as res
from treadle.queue.attempt import Attempt
from treadle.queue.cache import NAME_MAX, CacheItem, Namer
from treadle.queue.link import Link
from treadle.queue.task import FileKind, Task, check_no_nul, check_sandbox_name

log = logging.getLogger("treadle.queue.manager")


def check_sendable(task: Task) -> None:
    """Refuse (UsageError) a task that no worker could receive or that could leave its sandbox."""
    if not task.category or any(c.isspace() for c in task.category):
        raise UsageError(f"category name {task.category!r} must be one word")
    for f in task.inputs:
        if f.kind in (FileKind.FILE, FileKind.PIECE, FileKind.DIR) and f.local is not None:
            if not os.path.exists(f.local):
                log.debug("task input %s does not exist yet; checked again at dispatch", f.local)
    check_no_nul("command", task.command)
    check_no_nul("category", task.category)
    for name, value in task.env.items():
        if not name or "=" in name or "\n" in name or "\0" in name:
            raise UsageError(f"bad environment variable name {wp.quoted(name)}")
        if value is not None:
            check_no_nul(f"environment variable {name}", value)
    for f in (*task.inputs, *task.outputs):
        check_sandbox_name(f.remote)
    _check_wire_limits(task)


def send_task(att: Attempt, items: list[CacheItem], namer: Namer) -> None:
    """Queue the task's inputs the worker lacks, then its description, on the worker's link.

    Records on ``att`` what the worker must unlink later; an input that changes
    while being read raises OSError (the link is then out of step).
    """
    task, w, box = att.task, att.worker, att.box
    link = w.link
    sent_before = link.bytes_queued
    inputs: list[wp.TaskFile | wp.EmptyDir] = []
    for item in items:
        spec = item.spec
        if spec.kind is FileKind.EMPTY_DIR:
            inputs.append(wp.EmptyDir(spec.remote))
            continue
        name = item.name
        if item.key is not None and item.key in w.cache:
            name = w.cache[item.key][0]
        else:
            send_item(link, item)
            if item.key is not None:
                w.cache[item.key] = (name, item.size)
            else:
                att.uncached.append(name)
        inputs.append(wp.TaskFile(name, spec.remote, spec.flags()))
    outputs = []
    for spec in task.outputs:
        oname = namer.output_name(spec)
        att.outputs.append((spec, oname))
        outputs.append(wp.TaskFile(oname, spec.remote, spec.flags()))
    link.send(wire_task(task, task.id, box, inputs, outputs))
    task.bytes_sent += link.bytes_queued - sent_before


def send_item(link: Link, item: CacheItem) -> None:
    """Put one input in the worker's cache, before the task that needs it (a reference worker drops the connection otherwise)."""
    spec = item.spec
    if spec.kind is FileKind.FILE:
        assert spec.local is not None
        mode = os.stat(spec.local).st_mode & 0o777
        link.send(wp.Put(item.name, item.size, mode))
        link.send_file(spec.local, 0, item.size)
    elif spec.kind is FileKind.BUFFER:
        link.send(wp.Put(item.name, item.size, 0o777))  # the reference's buffer mode
        link.send_payload(spec.data or b"")
    elif spec.kind is FileKind.PIECE:
        assert spec.local is not None
        link.send(wp.Put(item.name, item.size, 0o644))
        link.send_file(spec.local, spec.start, item.size)
    elif spec.kind is FileKind.DIR:
        assert spec.local is not None
        link.send(wp.Dir(item.name))
        send_tree(link, spec.local)
        link.send(wp.End())
    elif spec.kind is FileKind.COMMAND:
        link.send(wp.ThirdGet(1, item.name, spec.source or ""))
    elif spec.kind is FileKind.URL:
        link.send(wp.Url(item.name, spec.source or "", 0o644, spec.flags()))

def send_tree(link: Link, path: str) -> None:
    """A directory's entries, one component per name; symlinks kept, targets NUL-ended (the reference worker does not end them itself)."""
    with os.scandir(path) as it:
        entries = list(it)
    for e in entries:
        if e.is_symlink():
            link.send(wp.Symlink(e.name, os.fsencode(os.readlink(e.path)) + b"\0"))
        elif e.is_dir():
            link.send(wp.Dir(e.name))
            send_tree(link, e.path)
            link.send(wp.End())
        elif e.is_file():
            st = e.stat()
            link.send(wp.Put(e.name, st.st_size, st.st_mode & 0o777))
            link.send_file(e.path, 0, st.st_size)


def wire_task(
    task: Task, tid: int, box: dict[str, int], inputs: list[wp.TaskFile | wp.EmptyDir], outputs: list[wp.TaskFile]
) -> wp.Task:
    """The protocol's description of one dispatch of ``task`` in ``box``."""
    env = dict(task.env)
    if box["cores"] > 0:
        env.setdefault("CORES", str(box["cores"]))
        env.setdefault("OMP_NUM_THREADS", str(box["cores"]))
    wall = max(1, int(task.running_time_max + 0.999999)) if task.running_time_max else None
    return wp.Task(
        task_id=tid,
        command=task.command,
        category=task.category,
        cores=box["cores"],
        gpus=box["gpus"],
        memory=box["memory"],
        disk=box["disk"],
        end_time=int(task.end_time) if task.end_time else None,
        wall_time=wall,
        env=tuple(k if v is None else f"{k}={v}" for k, v in env.items()),
        inputs=tuple(inputs),
        outputs=tuple(outputs),
    )


def _check_wire_limits(task: Task) -> None:
    """Refuse at submit a task that no worker could receive, instead of one that never runs.

    The task is encoded as dispatch will encode it, with cache names of the longest
    length a name can have (a URL-encoded sandbox name can triple in length), so a
    line, command, environment entry or URL over the receiver's limits is caught here.
    """
    name = "x" * NAME_MAX
    probe = wp.ManagerConnection()
    inputs: list[wp.TaskFile | wp.EmptyDir] = []
    try:
        for spec in task.inputs:
            if spec.kind is FileKind.EMPTY_DIR:
                inputs.append(wp.EmptyDir(spec.remote))
                continue
            if spec.kind is FileKind.URL:
                probe.send(wp.Url(name, spec.source or "", 0o644, spec.flags()))
            elif spec.kind is FileKind.COMMAND:
                probe.send(wp.ThirdGet(1, name, spec.source or ""))
            inputs.append(wp.TaskFile(name, spec.remote, spec.flags()))
        outputs = [wp.TaskFile(name, spec.remote, spec.flags()) for spec in task.outputs]
        box = {r: wp.MAX_TASK_ID for r in res.NAMES}
        probe.send(wire_task(task, wp.MAX_TASK_ID, box, inputs, outputs))
    except wp.LocalProtocolError as e:
        why = str(e)
        for spec in (*task.inputs, *task.outputs):
            try:
                probe.send(wp.Task(0, "", outputs=(wp.TaskFile(name, spec.remote, spec.flags()),)))
            except wp.LocalProtocolError:
                size = len(wp.url_encode(spec.remote))
                why = f"the file name {wp.quoted(spec.remote, 60)} is {size} bytes URL-encoded, too long for one protocol line ({wp.MAX_LINE} bytes)"
                break
        raise UsageError(f"task {wp.quoted(task.command, 80)} cannot be sent to a worker: {why}") from None
