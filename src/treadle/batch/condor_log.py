"""HTCondor user logs, read incrementally: bytes in, events out.

The schedd appends one event per job change to the run's user log::

    005 (1234.000.000) 2026-11-24 10:00:00 Job terminated.
        (1) Normal termination (return value 3)
        ...
    ...

An event is a header line (event number, ``cluster.proc.subproc``, time, the
first words), body lines, and a line of three dots that ends it. Watching that
file costs no scheduler query, which is why ``-T condor`` tracks jobs through it
(docs/batch.md, "HTCondor"). :class:`UserLogParser` is sans-I/O (it is fed bytes
and keeps a cut-off last event until the rest arrives, so a log read while the
schedd writes it is never misread); :class:`UserLogTail` reads a file from
the offset it stopped at.

The fields read are those a job's fate depends on: the host (001), the return
value or signal and usage (005), hold codes and reasons (012), the reason of an
eviction, abort or failed reconnect. Every other event, known or not, is kept
with its header and raw body, so nothing is silently dropped.
"""

from __future__ import annotations

import calendar
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

SUBMIT = 0
EXECUTE = 1
EVICTED = 4
TERMINATED = 5
IMAGE_SIZE = 6
SHADOW_EXCEPTION = 7
ABORTED = 9
HELD = 12
RELEASED = 13
DISCONNECTED = 22
RECONNECTED = 23
RECONNECT_FAILED = 24

# An event that never ends (a log that is not a user log, a writer that died
# mid-line) must not grow the buffer without bound: past this size without a
# closing "..." line the pending bytes are dropped and counted as skipped.
MAX_PENDING = 1 << 20

_SYNC = b"\n...\n"
_HEADER = re.compile(r"(\d{3}) \((-?\d+)\.(-?\d+)\.(-?\d+)\) (\S+) (\S+) ?(.*)")
_ISO_TIME = re.compile(r"(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z?)$")
_RUSAGE = re.compile(r"Usr (\d+) (\d+):(\d+):(\d+), Sys (\d+) (\d+):(\d+):(\d+)\s+-\s+(.*)")
_CODES = re.compile(r"Code (-?\d+) Subcode (-?\d+)")


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a user log.

    ``code`` is the event number (5: terminated, 12: held...). ``time`` is Unix
    seconds. ``head`` is the text after the header's time and ``body`` the
    following lines with their indentation removed, so an event treadle does
    not interpret is still kept whole. ``host`` is the submit host's address
    (000) or the execute host's (001); ``exit`` and ``signal`` how a job
    ended (005); ``hold_code``, ``hold_subcode`` and ``reason`` why it was held,
    evicted, aborted or lost its shadow; ``usage`` the remote CPU seconds
    (``cpu``) and the memory (``memory``, MB) the job used.
    """

    code: int
    cluster: int
    proc: int
    subproc: int
    time: float
    head: str
    body: tuple[str, ...] = ()
    host: str = ""
    exit: int | None = None
    signal: int | None = None
    hold_code: int | None = None
    hold_subcode: int | None = None
    reason: str = ""
    usage: Mapping[str, float] = field(default_factory=dict)

    @property
    def job(self) -> str:
        """The job id as ``condor_q`` and ``condor_rm`` write it: ``cluster.proc``."""
        return f"{self.cluster}.{self.proc}"


def parse_time(date: str, clock: str, now: float | None = None) -> float | None:
    """Unix seconds of a header's date and time, or ``None`` if they are not a time.

    Both forms HTCondor writes are read: the old ``MM/DD HH:MM:SS`` (no year:
    HTCondor takes the current one, and so do we) and the ISO ``YYYY-MM-DD
    HH:MM:SS[.mmm][Z]``. Times are local unless they end in ``Z``.
    """
    m = _ISO_TIME.match(clock)
    if m is None:
        return None
    hour, minute, second = int(m[1]), int(m[2]), int(m[3])
    fraction = float("0." + m[4]) if m[4] else 0.0
    try:
        if len(date) == 5 and date[2] == "/":
            year = time.localtime(now).tm_year
            month, day = int(date[:2]), int(date[3:])
        elif len(date) == 10 and date[4] == "-" and date[7] == "-":
            year, month, day = int(date[:4]), int(date[5:7]), int(date[8:])
        else:
            return None
    except ValueError:
        return None
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 24):
        return None
    fields = (year, month, day, hour, minute, second, 0, 0, -1)
    stamp = calendar.timegm(fields) if m[5] else time.mktime(fields)
    return stamp + fraction


def _seconds(days: str, hours: str, minutes: str, seconds: str) -> int:
    return ((int(days) * 24 + int(hours)) * 60 + int(minutes)) * 60 + int(seconds)


def _termination(line: str) -> tuple[int | None, int | None]:
    """(exit, signal) from ``(1) Normal termination (return value N)`` or ``(0) Abnormal ... (signal N)``."""
    if "Normal termination (return value " in line:
        return int(line.rsplit(" ", 1)[1].rstrip(")")), None
    if "Abnormal termination (signal " in line:
        return None, int(line.rsplit(" ", 1)[1].rstrip(")"))
    return None, None


def _usage_column(header: str) -> int:
    """Where the Usage column of a resource table ends, counted from just after its colon.

    The table is fixed-width and a blank cell is spaces (a job with no measured
    CPU usage), so values are read by position, as HTCondor reads them.
    """
    after = header[header.find(":") + 1:]
    return after.find("Usage") + len("Usage")


def _terminated_fields(body: tuple[str, ...]) -> dict:
    exit_code = signal = None
    usage: dict[str, float] = {}
    usage_end = -1
    for line in body:
        if exit_code is None and signal is None and "termination (" in line:
            exit_code, signal = _termination(line)
        elif line.startswith("Usr "):
            m = _RUSAGE.match(line)
            if m and m[9] == "Run Remote Usage":
                usage["cpu"] = float(_seconds(*m.group(1, 2, 3, 4)) + _seconds(*m.group(5, 6, 7, 8)))
        elif line.startswith("Partitionable Resources"):
            usage_end = _usage_column(line)
        elif usage_end > 0 and line.startswith("Memory"):
            cell = line[line.find(":") + 1:][:usage_end].strip()
            try:
                usage["memory"] = float(cell)
            except ValueError:
                pass
    return {"exit": exit_code, "signal": signal, "usage": usage}


def _first(body: tuple[str, ...]) -> str:
    return body[0] if body else ""


def _held_fields(body: tuple[str, ...]) -> dict:
    reason = _first(body)
    fields: dict = {"reason": "" if reason == "Reason unspecified" else reason}
    if len(body) > 1:
        m = _CODES.match(body[1])
        if m:
            fields["hold_code"], fields["hold_subcode"] = int(m[1]), int(m[2])
    return fields


def _evicted_fields(head: str, body: tuple[str, ...]) -> dict:
    fields: dict = {}
    m = _CODES.search(head)
    if m:
        fields["hold_code"], fields["hold_subcode"] = int(m[1]), int(m[2])
    for line in body:
        if line.startswith("Reason: "):
            fields["reason"] = line[len("Reason: "):]
    return fields


def _fields(code: int, head: str, body: tuple[str, ...]) -> dict:
    """The interpreted fields of one event, by its number (the rest is kept raw)."""
    if code == SUBMIT and head.startswith("Job submitted from host: "):
        return {"host": head[len("Job submitted from host: "):]}
    if code == EXECUTE and head.startswith("Job executing on host: "):
        return {"host": head[len("Job executing on host: "):]}
    if code == TERMINATED:
        return _terminated_fields(body)
    if code == HELD:
        return _held_fields(body)
    if code == EVICTED:
        return _evicted_fields(head, body)
    if code in (SHADOW_EXCEPTION, ABORTED, RELEASED, DISCONNECTED, RECONNECT_FAILED):
        return {"reason": _first(body)}
    return {}


def parse_event(text: str, now: float | None = None) -> Event | None:
    """One event's text (without its ``...`` line), or ``None`` if its header is not an event header."""
    lines = text.split("\n")
    m = _HEADER.match(lines[0])
    if m is None:
        return None
    stamp = parse_time(m[5], m[6], now)
    if stamp is None:
        return None
    code = int(m[1])
    head = m[7].strip()
    body = tuple(s for s in (line.strip() for line in lines[1:]) if s)
    return Event(code, int(m[2]), int(m[3]), int(m[4]), stamp, head, body, **_fields(code, head, body))


class UserLogParser:
    """Turns the bytes of a user log, fed in any pieces, into complete :class:`Event` objects.

    An event is complete at its ``...`` line; until then its bytes wait in the
    buffer, so a read that cuts an event in two never yields half of it.
    ``skipped`` counts stretches that were not events (a bad header, an event
    longer than :data:`MAX_PENDING`).
    """

    def __init__(self) -> None:
        self._pending = b""
        self.skipped = 0

    @property
    def pending(self) -> int:
        """Bytes held back: the start of an event whose ``...`` line has not arrived."""
        return len(self._pending)

    def feed(self, data: bytes, now: float | None = None) -> list[Event]:
        """Add ``data`` and return the events it completed, in log order."""
        buf = self._pending + data if self._pending else data
        if b"\r" in buf:  # a log written on Windows: its "...\r\n" lines end events too
            buf = buf.replace(b"\r\n", b"\n")
        # a leading "\n" lets the first event's end and every later one be found the same way
        buf = b"\n" + buf
        events: list[Event] = []
        start = 0
        while True:
            end = buf.find(_SYNC, start)
            if end < 0:
                break
            if end > start:
                chunk = buf[start + 1:end + 1].decode("utf-8", "replace")
                event = parse_event(chunk, now)
                if event is None:
                    self.skipped += 1
                else:
                    events.append(event)
            start = end + len(_SYNC) - 1
        rest = buf[start + 1:]
        if len(rest) > MAX_PENDING:
            self.skipped += 1
            rest = b""
        self._pending = rest
        return events


class UserLogTail:
    """Reads the events appended to a user log file since the last :meth:`read`.

    The file may not exist yet (no job submitted) or be cut mid-event; both
    simply yield fewer events now and the rest later. ``offset`` is how far
    the file has been read, so a caller can resume after a restart.
    """

    def __init__(self, path: str | os.PathLike[str], offset: int = 0) -> None:
        self.path = os.fspath(path)
        self.offset = offset
        self.parser = UserLogParser()

    def read(self, now: float | None = None) -> list[Event]:
        """The events completed since the last read (empty when the file is absent)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        if not data:
            return []
        self.offset += len(data)
        return self.parser.feed(data, now)
