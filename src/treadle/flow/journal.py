"""The transaction log (``<dagfile>.makeflowlog``): writing, reading, rule identities.

The log is the truth: every state change of a rule or file is
appended here and reaches the kernel before the engine acts on it, so a killed
engine can resume from the log alone. The format is the reference Makeflow's
(docs/makeflow.md, 'The log'), so its ``makeflow`` and ``makeflow_monitor`` read our logs and we
read theirs; treadle's own records are ``#`` lines the reference skips.

Durability: each transition's records go to the kernel in one ``write`` (the
hot path of a run with many small rules), and ``fsync`` happens at the start
and end of a run and at least every 60 s. A crash of the engine therefore
loses nothing; a crash of the machine loses at most the last minute, which
recovery treats as "not done".
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import time
from collections.abc import Iterator, Sequence

from treadle.errors import WorkflowError
from treadle.flow.model import Rule

FSYNC_INTERVAL = 60.0  # seconds; the longest gap between two fsyncs

# rule states (the numbers are the log format)
WAITING, RUNNING, COMPLETE, FAILED, ABORTED = 0, 1, 2, 3, 4
# file states
F_UNKNOWN, F_EXPECT, F_EXISTS, F_COMPLETE, F_DELETE = 0, 1, 2, 3, 4

_PLAIN_NAME = re.compile(r"[!-$&-~]*\Z")  # printable ASCII without space and '%'


def escape_name(name: str) -> str:
    """A file name as one log field: blanks, ``%`` and non-printable bytes become ``%XX`` [F-i]."""
    if _PLAIN_NAME.match(name):
        return name
    out = []
    for ch in name:
        code = ord(ch)
        if 0x21 <= code <= 0x7E and ch != "%":
            out.append(ch)
        elif code > 0x7F and not 0xDC80 <= code <= 0xDCFF and ch.isprintable():
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogateescape"))
    return "".join(out)


_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")


def unescape_name(field: str) -> str:
    """Inverse of :func:`escape_name` (names written by the reference have no escapes)."""
    if "%" not in field:
        return field
    raw = field.encode("utf-8", "surrogateescape")
    raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
    return raw.decode("utf-8", "surrogateescape")


def rule_identities(rules: Sequence[Rule], container: str = "") -> list[str]:
    """Each rule's identity: a hash of its targets and final command (and container image, if any).

    The identity survives rules being added, removed or moved around it, which
    is what lets recovery match log records to rules after the file was edited
    [F-c]. ``k`` separates rules with the same targets and command (several
    target-less rules running the same program). ``container`` (``docker:IMAGE``)
    is hashed in when set, so a changed image reruns the rules; wrappers are not,
    so changing how a command is started never redoes finished work.
    """
    seen: dict[tuple[tuple[str, ...], str], int] = {}
    out = []
    sha = hashlib.sha256
    for rule in rules:
        targets = tuple(sorted(rule.targets))
        key = (targets, rule.command)
        k = seen.get(key, 0)
        seen[key] = k + 1
        data = b"".join(t.encode("utf-8", "surrogateescape") + b"\0" for t in targets)
        data += b"\x01" + rule.command.encode("utf-8", "surrogateescape") + b"\0" + str(k).encode()
        if container:
            data += b"\x02" + container.encode("utf-8", "surrogateescape")
        out.append(sha(data).hexdigest()[:16])
    return out


def now_us() -> int:
    return time.time_ns() // 1000


class Journal:
    """Appends records to a log, holding an exclusive ``flock`` on it for the whole run.

    Records are collected by the ``*_record`` methods and reach the file at
    :meth:`flush`; the engine flushes at the end of every transition, before
    any side effect that depends on it.
    """

    def __init__(self, path: str):
        self.path = path
        self._fd = -1
        self._buf: list[str] = []
        self._last_sync = 0.0
        self._bound: set[int] = set()  # rule ids with a `# RULE` record in this segment

    def open(self) -> None:
        """Open (creating) the log and take the lock; a second engine is refused [F-r]."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise WorkflowError(f"could not open log file {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WorkflowError(
                f"log file {self.path} is in use by another running workflow; "
                "wait for it to finish or use another log (-l)"
            ) from None
        self._fd = fd
        try:
            _drop_cut_record(fd)
        except OSError as e:
            raise WorkflowError(f"could not read log file {self.path}: {e.strerror}") from None
        self._last_sync = time.monotonic()

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    def start_segment(self, batch_log: str, version: str, ts: int | None = None,
                      batch: tuple[str, str] | None = None) -> None:
        """The records that open a run: batch log, ``# STARTED``, ``# TREADLE``, and ``# BATCH``.

        ``batch`` is ``(system, tag)`` when rules go to a batch system: the tag
        names the run's jobs there, so the next segment can find them
        (docs/makeflow.md, 'The log').
        """
        self._bound.clear()
        self.file_record(batch_log, F_EXPECT, 0)
        ts = now_us() if ts is None else ts
        self._buf.append(f"# STARTED {ts}\n# TREADLE {ts} {version}\n")
        if batch is not None:
            self._buf.append(f"# BATCH {ts} {batch[0]} {batch[1]}\n")
        self.flush(sync=True)

    def job_record(self, handle: int, native: str) -> None:
        """``# JOB``: the batch system's id of a job, as soon as it is known (flushed by the caller)."""
        self._buf.append(f"# JOB {now_us()} {handle} {native}\n")

    def file_record(self, name: str, state: int, size: int) -> None:
        self._buf.append(f"# FILE {now_us()} {escape_name(name)} {state} {size}\n")

    def source_record(self, name: str, size: int, mtime_ns: int, digest: str | None) -> None:
        self._buf.append(f"# SOURCE {now_us()} {escape_name(name)} {size} {mtime_ns} {digest or '-'}\n")

    def rule_record(self, rule_id: int, identity: str, state: int, job_id: int, counts: Sequence[int]) -> None:
        """A rule line; the first one of a rule in a segment is preceded by its ``# RULE`` binding."""
        ts = now_us()
        if rule_id not in self._bound:
            self._bound.add(rule_id)
            self._buf.append(f"# RULE {ts} {rule_id} {identity}\n")
        w, r, c, f, a = counts
        self._buf.append(f"{ts} {rule_id} {state} {job_id} {w} {r} {c} {f} {a} {w + r + c + f + a}\n")

    def gc_record(self, collected: int, elapsed_us: int, total: int) -> None:
        self._buf.append(f"# GC {now_us()} {collected} {elapsed_us} {total}\n")

    def line(self, text: str) -> None:
        """A raw record (``--log-verbose`` structure lines)."""
        self._buf.append(text if text.endswith("\n") else text + "\n")

    def marker(self, label: str) -> None:
        """``# COMPLETED``, ``# FAILED`` or ``# ABORTED``; always synced."""
        self._buf.append(f"# {label} {now_us()}\n")
        self.flush(sync=True)

    def flush(self, sync: bool = False) -> None:
        """Hand the collected records to the kernel in one write; fsync when due.

        A log that cannot be written (a full disk) stops the run with a
        ``WorkflowError``: nothing may happen that the log does not say. A
        record cut in the middle is harmless; the next run starts on a fresh line.
        """
        try:
            if self._buf and self._fd >= 0:
                data = "".join(self._buf).encode("utf-8", "surrogateescape")
                self._buf.clear()
                while data:
                    n = os.write(self._fd, data)
                    data = data[n:]
            else:
                self._buf.clear()
            if self._fd >= 0 and (sync or time.monotonic() - self._last_sync > FSYNC_INTERVAL):
                os.fsync(self._fd)
                self._last_sync = time.monotonic()
        except OSError as e:
            raise WorkflowError(f"could not write to log file {self.path}: {e.strerror}") from None

    def close(self) -> None:
        if self._fd >= 0:
            self.flush(sync=True)
            os.close(self._fd)
            self._fd = -1


def _drop_cut_record(fd: int) -> None:
    """Remove a record cut off at the end of the log (a crash or a full disk in the middle of a write).

    The cut record never took effect (recovery ignores it), and removing it
    keeps the log a sequence of whole lines, so the records this run appends
    after it read as they should.
    """
    size = os.fstat(fd).st_size
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            end = start + nl + 1
            break
        end = start
    if end < size:
        os.ftruncate(fd, end)


class NullJournal(Journal):
    """A journal that records nothing: the dry run never touches the real log [F-k]."""

    def __init__(self, path: str = ""):
        super().__init__(path)

    def open(self) -> None:
        return None

    def flush(self, sync: bool = False) -> None:
        self._buf.clear()


# --- reading -----------------------------------------------------------------------------

# Record kinds yielded by read_log
R_RULE, R_FILE, R_SOURCE, R_BIND, R_STARTED, R_TREADLE, R_END = "R", "F", "S", "B", "START", "T", "END"
R_BATCH, R_JOB = "BATCH", "JOB"


def read_log(path: str) -> Iterator[tuple]:
    """The records of a log, in order, as small tuples.

    ``("R", ts, id, state, jobid, total)``, ``("F", ts, name, state, size)``,
    ``("S", ts, name, size, mtime_ns, digest)``, ``("B", id, identity)``,
    ``("START", ts)``, ``("T",)`` (a segment written by treadle), ``("END", label)``,
    ``("BATCH", system, tag)``, ``("JOB", handle, native)``. Unknown ``#`` lines are skipped as
    the reference skips them. A non-``#`` line that does not start with four
    integers is corruption and stops the run, except for a cut-off last line
    (a machine crash in the middle of a write), which is ignored.
    """
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        data = f.read()
    lines = data.split(b"\n")
    last = len(lines) - 1
    for n, raw in enumerate(lines):
        if not raw:
            continue
        line = raw.decode("utf-8", "surrogateescape")
        if line[0] == "#":
            rec = _hash_record(line)
            if rec is not None:
                yield rec
            continue
        parts = line.split()
        try:
            ts, rid, state, jobid = (int(x) for x in parts[:4])
            total = int(parts[9]) if len(parts) >= 10 else -1
        except ValueError:
            if n == last:
                return
            raise WorkflowError(f"{path} appears to be corrupted on line {n + 1}") from None
        if len(parts) < 4:
            if n == last:
                return
            raise WorkflowError(f"{path} appears to be corrupted on line {n + 1}")
        yield (R_RULE, ts, rid, state, jobid, total)


_END_LABELS = ("COMPLETED", "FAILED", "ABORTED")


def _hash_record(line: str) -> tuple | None:
    parts = line.split()
    if len(parts) < 3:
        return None
    label = parts[1]
    try:
        if label == "FILE" and len(parts) >= 6:
            return (R_FILE, int(parts[2]), unescape_name(parts[3]), int(parts[4]), int(parts[5]))
        if label == "RULE" and len(parts) >= 5:
            return (R_BIND, int(parts[3]), parts[4])
        if label == "SOURCE" and len(parts) >= 7:
            digest = None if parts[6] == "-" else parts[6]
            return (R_SOURCE, int(parts[2]), unescape_name(parts[3]), int(parts[4]), int(parts[5]), digest)
        if label == "STARTED":
            return (R_STARTED, int(parts[2]))
        if label == "TREADLE":
            return (R_TREADLE,)
        if label in _END_LABELS:
            return (R_END, label)
        if label == "BATCH" and len(parts) >= 5:
            return (R_BATCH, parts[3], parts[4])
        if label == "JOB" and len(parts) >= 5:
            return (R_JOB, int(parts[3]), parts[4])
    except ValueError:
        return None
    return None
