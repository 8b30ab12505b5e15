"""Work Queue wire protocol 9 as a sans-I/O state machine (see docs/workqueue.md).

No sockets here: the manager and the worker wrap this module with asyncio, and the
tests feed it bytes directly. Standard library only, Python 3.8 syntax, because the
worker carries this module to batch nodes where nothing else is installed.

Connections
-----------
``ManagerConnection()``
    The manager's end of one TCP connection. It parses what a worker (or a status
    client) sends and serialises what a manager sends.
``WorkerConnection()``
    The worker's end. It parses what a manager sends and serialises what a worker sends.

Both have the same four methods, in the manner of h11:

``receive_data(data: bytes)``
    Feed bytes read from the socket; ``b""`` means end of file.
``next_event() -> Event | NEED_DATA``
    The next complete event, or the sentinel ``NEED_DATA``. After the peer closed
    cleanly it returns ``ConnectionClosed()`` (again on every call). Misbehaviour of the
    peer raises ``ProtocolError``; the connection then stays broken (every later call
    raises it again), and the caller drops the peer.
``events() -> Iterator[Event]``
    ``next_event()`` until ``NEED_DATA`` (or through the first ``ConnectionClosed``).
``send(event) -> bytes``
    The bytes for one event. Misuse by the caller raises ``LocalProtocolError``
    (a bug on our side, so not a ``ProtocolError``).

Bulk payloads stream, on both sides
-----------------------------------
A message with a payload of LEN bytes (``Put``, ``FileReply``, ``Result``, ``Update``)
is received as its header event, then zero or more ``Data(data)`` chunks totalling LEN
bytes, then ``EndOfData()``. Nothing of the payload is buffered beyond the chunk at hand.
To send one, ``send(header)`` gives the header line; then either ``send(Data(chunk))``
(returns the chunk, counted) or write the bytes yourself (``socket.sendfile``) and call
``payload_streamed(n)``. ``send(EndOfData())`` is optional and checks the count.
Sending any other event while payload bytes are owed raises ``LocalProtocolError``.
Receiving may bypass the event stream too: ``payload_left`` says how many bytes of the
current payload have not arrived yet; read them from the socket yourself and call
``payload_received(n)`` (the worker does this for big files).
Small payloads (command, env, symlink target, URL) are collected into their event.

Events, manager to worker (``WorkerConnection`` parses them, ``ManagerConnection`` sends)
---------------------------------------------------------------------------------------
``Put(name, size, mode)`` + payload, ``Dir(name)`` ... ``End()``, ``Symlink(name, target)``
(only inside a ``Dir`` stream), ``Url(name, url, mode, flags)``,
``ThirdGet(mode, name, path)``, ``ThirdPut(mode, name, path)``,
``Task(task_id, command, category, cores, gpus, memory, disk, end_time, wall_time, env,
inputs, outputs)`` with ``TaskFile(cache_name, sandbox_name, flags)`` and
``EmptyDir(sandbox_name)``, ``SendResults(n)``, ``Get(name, recursive)``,
``Kill(task_id)`` (-1 = all), ``Unlink(name)``, ``InvalidateFile(name)``, ``Check()``,
``Release()``, ``Exit()``, ``Tlq(url)``, ``ProjectName(name)`` (reply to ``NameQuery``),
``StatusReply(body)`` and ``HttpReply(body, content_type)`` (to status clients; sent only).

Events, worker to manager (``ManagerConnection`` parses them, ``WorkerConnection`` sends)
---------------------------------------------------------------------------------------
``Greeting(hostname, os, arch, version, protocol)``, ``Info(name, value)``,
``Feature(name)``, ``Alive()``, ``Resource(name, total, smallest, largest)``,
``ResourceTag(tag)``, ``AvailableResults()``,
``Result(status, exit_code, size, usec, task_id)`` + payload,
``Update(task_id, path, offset, size)`` + payload, ``FileReply(path, size)`` + payload,
``DirReply(path)``, ``Missing(path, errno)``, ``End()``, ``ThirdPutComplete(ok)``,
``NameQuery()``; from status clients (as the first line, or right after the password
step): ``StatusRequest(kind)``, ``HttpRequest(path)``.

Both directions: ``Auth()``, ``Challenge(token)``, ``ChallengeResponse(digest)``,
``AuthVerdict(ok)`` (the password step, section 3.3), ``Data(data)``, ``EndOfData()``,
``ConnectionClosed()``.

What the state machines check
-----------------------------
* Lines are at most ``MAX_LINE`` bytes; every number a peer sends has a range; every
  collected payload has a size limit (see the constants below).
* Cache names (``put``/``dir``/``get``/``unlink``/... at top level, and the cache names
  in a task) are one path component: not empty, no ``/``, not ``.`` or ``..``, no
  newline (a get reply sends them raw). Names inside a ``dir`` stream are one
  component too. A ``get`` reply's paths must be the
  requested name or lie below it, without ``.``/``..`` components.
* Replies must answer a request: ``file``/``dir``/``missing`` only while a ``get`` is
  pending, ``result``/``update`` only while a ``send_results`` is pending, ``end``
  closes the oldest pending reply (requests may be pipelined), ``thirdput-complete``
  answers a ``thirdput``. ``symlink`` and nested ``end`` only inside a ``dir`` stream.
* Sandbox names in a task are parsed but not judged here: the worker refuses unsafe
  ones (``is_safe_relative_path``) with result INPUT_MISSING, as section 2.2 asks.

Other helpers: ``url_encode``/``url_decode`` (section 3.2), ``new_challenge``,
``challenge_response``, ``manager_response`` and ``PasswordHandshake`` (section 3.3;
``MANAGER``/``WORKER`` are its roles), ``status_request`` and
``parse_status_reply`` (section 3.11), ``is_component``, ``is_safe_relative_path``.
Names are ``str``; bytes that are not UTF-8 travel as surrogate escapes
(``os.fsdecode`` style), so any byte string survives a round trip.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import math
import re
import secrets
import string
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

PROTOCOL_VERSION = 9
# The port a manager listens on when it is given none (the reference's default too).
DEFAULT_PORT = 9123
# `info treadle-prefetch 1` in a treadle worker's greeting: it keeps a task that does not
# fit yet and starts it as soon as room frees, so a treadle manager may send it more
# than fits (docs/workqueue.md). A reference manager ignores the line, as any unknown info.
PREFETCH_INFO = "treadle-prefetch"

# --- Limits on what a peer may send (why each number) -------------------------------
# Control lines are at most 4096 bytes; anything longer is a broken or hostile peer.
MAX_LINE = 4096
# A command runs as `/bin/sh -c CMD`; Linux caps one argv string at 128 KiB
# (MAX_ARG_STRLEN) and all of argv+environ at ARG_MAX (2 MiB by default), so 1 MiB is
# more than any runnable command while keeping a hostile one cheap.
MAX_COMMAND = 1 << 20
# Each env entry is one string of environ: the same 128 KiB MAX_ARG_STRLEN applies.
MAX_ENV_ENTRY = 128 << 10
# A whole task description (lines + command + env) is held in memory until `end`;
# 16 MiB allows ~4000 input/output lines at the maximum line length.
MAX_TASK_BYTES = 16 << 20
# A symlink target is a path: PATH_MAX is 4096 including the NUL that treadle appends.
MAX_SYMLINK_TARGET = 4096
# URLs for `url` inputs: 64 KiB is far above what HTTP servers accept (8-16 KiB).
MAX_URL = 64 << 10
# Streamed payloads go to disk, so they need no memory bound, only a sanity bound:
# 2**50 bytes (1 PiB) is more than any disk holds and keeps sizes exact in a float.
MAX_PAYLOAD = 1 << 50
# A dir stream deeper than PATH_MAX/2 levels cannot be created (each level needs at
# least one character and a slash), so deeper nesting is a malicious stream.
MAX_DIR_DEPTH = MAX_LINE // 2
# A browser-style status request: headers are read and dropped; 100 is h11's order of
# magnitude for sane clients and bounds the work per connection.
MAX_HTTP_HEADERS = 100
# A status client reads the manager's JSON to EOF: 64 MiB holds task_status for a few
# hundred thousand tasks (about 300 bytes each).
MAX_STATUS_REPLY = 64 << 20
# A worker advertises the --feature flags its owner typed, once per connection, and the
# manager keeps each distinct one while the worker stays: 256 is far beyond real use and
# bounds what a peer can make the manager hold (at most 256 lines of MAX_LINE bytes).
MAX_FEATURES = 256
# Task ids are printed with %d by the reference: keep them below 2**31.
MAX_TASK_ID = (1 << 31) - 1
# Numbers on the wire are decimal; 20 digits hold any 64-bit value.
_MAX_DIGITS = 20

STATUS_KINDS = ("queue_status", "worker_status", "task_status", "wable_status", "resources_status")
AUTH_LINE = "auth password sha1"


class ResultCode(enum.IntEnum):
    """The STATUS of a `result` line: how a task ended for the queue (a non-zero exit is still SUCCESS).

    ``treadle.queue.Result`` is this class; the values are the reference's, so logs compare.
    """

    SUCCESS = 0
    INPUT_MISSING = 1
    OUTPUT_MISSING = 2
    STDOUT_MISSING = 4
    SIGNAL = 8
    RESOURCE_EXHAUSTION = 16
    TASK_TIMEOUT = 24
    UNKNOWN = 32
    FORSAKEN = 40
    MAX_RETRIES = 48
    TASK_MAX_RUN_TIME = 56
    DISK_ALLOC_FULL = 64
    RMONITOR_ERROR = 72
    OUTPUT_TRANSFER_ERROR = 80  # the manager could not write an output (full disk, permissions)


class FileFlag(enum.IntFlag):
    """The FLAGS field of `infile`/`outfile` lines (``treadle.queue.FileFlag``)."""

    NOCACHE = 0
    CACHE = 1
    SYMLINK = 2
    PREEXIST = 4
    THIRDGET = 8
    WATCH = 16  # stream this output while the task runs
    FAILURE_ONLY = 32
    SUCCESS_ONLY = 64


class ProtocolError(Exception):
    """The peer broke the protocol; drop its connection, keep the process running."""


class LocalProtocolError(RuntimeError):
    """Our own code tried to send something the protocol does not allow (a bug)."""


class _Sentinel:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA = _Sentinel("NEED_DATA")


# --- Events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """Base class of every protocol event."""


@dataclass(frozen=True)
class Data(Event):
    """A chunk of the payload of the preceding header event."""

    data: bytes


@dataclass(frozen=True)
class EndOfData(Event):
    """The payload of the preceding header event is complete."""


@dataclass(frozen=True)
class ConnectionClosed(Event):
    """The peer closed the connection at a message boundary."""


@dataclass(frozen=True)
class End(Event):
    """`end`: closes a dir stream (manager to worker) or a reply (worker to manager)."""


# password step (both directions)
@dataclass(frozen=True)
class Auth(Event):
    """`auth password sha1`: opens the password step."""


@dataclass(frozen=True)
class Challenge(Event):
    """A side's random challenge string."""

    token: str


@dataclass(frozen=True)
class ChallengeResponse(Event):
    """hex(sha1(password + b" " + challenge)) for the peer's challenge."""

    digest: str


@dataclass(frozen=True)
class AuthVerdict(Event):
    """`ok` or `failure`: whether this side accepted the peer's response."""

    ok: bool


# manager to worker
@dataclass(frozen=True)
class Put(Event):
    """`put NAME LEN MODE`, then LEN bytes: a file (or buffer) for the cache."""

    name: str
    size: int
    mode: int = 0o644


@dataclass(frozen=True)
class Dir(Event):
    """`dir NAME`: a directory; its entries follow, then `End`."""

    name: str


@dataclass(frozen=True)
class Symlink(Event):
    """`symlink NAME LEN` + target, only inside a dir stream."""

    name: str
    target: bytes

    @property
    def target_path(self) -> bytes:
        """The target without the trailing NULs treadle's manager appends (the reference worker does not NUL-end symlink targets)."""
        return self.target.rstrip(b"\0")


@dataclass(frozen=True)
class Url(Event):
    """`url NAME LEN MODE FLAGS` + the URL to fetch into cache/NAME."""

    name: str
    url: str
    mode: int = 0o644
    flags: int = 0


@dataclass(frozen=True)
class ThirdGet(Event):
    """`thirdget MODE NAME PATH`: fill cache/NAME from a shared filesystem or command."""

    mode: int
    name: str
    path: str


@dataclass(frozen=True)
class ThirdPut(Event):
    """`thirdput MODE NAME PATH`: copy cache/NAME out; answered by ThirdPutComplete."""

    mode: int
    name: str
    path: str


@dataclass(frozen=True)
class TaskFile(Event):
    """One `infile`/`outfile` line of a task."""

    cache_name: str
    sandbox_name: str
    flags: int = 0


@dataclass(frozen=True)
class EmptyDir(Event):
    """A task-level `dir NAME` line: an empty directory in the sandbox."""

    sandbox_name: str


@dataclass(frozen=True)
class Task(Event):
    """A whole task description, `task ID` ... `end` (section 3.5).

    Resource values are integers: decimals on the wire (the reference manager sends ``cores 1.000``) are rounded up.
    ``None`` means the line was absent (or negative, the reference's "unset").
    """

    task_id: int
    command: str
    category: str = "default"
    cores: int | None = None
    gpus: int | None = None
    memory: int | None = None
    disk: int | None = None
    end_time: float | None = None
    wall_time: float | None = None
    env: tuple[str, ...] = ()
    inputs: tuple[TaskFile | EmptyDir, ...] = ()
    outputs: tuple[TaskFile, ...] = ()


@dataclass(frozen=True)
class SendResults(Event):
    """`send_results N`: report finished tasks (N is ignored)."""

    n: int = -1


@dataclass(frozen=True)
class Get(Event):
    """`get NAME 1`: stream cache/NAME back."""

    name: str
    recursive: int = 1


@dataclass(frozen=True)
class Kill(Event):
    """`kill ID`: forget a task, killing it if it runs; -1 means every task."""

    task_id: int


@dataclass(frozen=True)
class Unlink(Event):
    """`unlink NAME`: delete cache/NAME."""

    name: str


@dataclass(frozen=True)
class InvalidateFile(Event):
    """`invalidate-file NAME`: foreman only; a plain worker ignores it."""

    name: str


@dataclass(frozen=True)
class Check(Event):
    """`check`: keepalive probe; answered by Alive and Info tasks_running."""


@dataclass(frozen=True)
class Release(Event):
    """`release`: disconnect and wipe."""


@dataclass(frozen=True)
class Exit(Event):
    """`exit`: wipe and exit."""


@dataclass(frozen=True)
class Tlq(Event):
    """`tlq URL`: ignored by workers."""

    url: str


@dataclass(frozen=True)
class ProjectName(Event):
    """The manager's reply to `name`: its project name, possibly empty."""

    name: str


@dataclass(frozen=True)
class StatusReply(Event):
    """The compact JSON answer to a StatusRequest (sent only; the manager then closes)."""

    body: bytes


@dataclass(frozen=True)
class HttpReply(Event):
    """The answer to an HttpRequest (sent only; the manager then closes)."""

    body: bytes
    content_type: str = "text/plain"


# worker to manager
@dataclass(frozen=True)
class Greeting(Event):
    """`workqueue 9 HOSTNAME OS ARCH VERSION`: the first line a worker sends."""

    hostname: str
    os: str
    arch: str
    version: str
    protocol: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Info(Event):
    """`info NAME VALUE`; VALUE is the rest of the line and is never empty (the reference manager drops a worker for an empty one)."""

    name: str
    value: str


@dataclass(frozen=True)
class Feature(Event):
    """`feature NAME`: a user feature the worker offers."""

    name: str


@dataclass(frozen=True)
class Alive(Event):
    """`alive`: keepalive answer."""


@dataclass(frozen=True)
class Resource(Event):
    """`resource NAME TOTAL SMALLEST LARGEST`."""

    name: str
    total: int
    smallest: int
    largest: int


@dataclass(frozen=True)
class ResourceTag(Event):
    """`resource tag N`: id of the last task the worker received."""

    tag: int


@dataclass(frozen=True)
class AvailableResults(Event):
    """`available_results`: asks the manager for `send_results`."""


@dataclass(frozen=True)
class Result(Event):
    """`result STATUS EXIT LEN USEC ID`, then LEN bytes of stdout+stderr."""

    status: int
    exit_code: int
    size: int
    usec: int
    task_id: int


@dataclass(frozen=True)
class Update(Event):
    """`update ID PATH OFFSET LEN`, then LEN bytes of a watched output."""

    task_id: int
    path: str
    offset: int
    size: int


@dataclass(frozen=True)
class FileReply(Event):
    """`file PATH LEN` in a get reply, then LEN bytes."""

    path: str
    size: int


@dataclass(frozen=True)
class DirReply(Event):
    """`dir PATH 0` in a get reply."""

    path: str


@dataclass(frozen=True)
class Missing(Event):
    """`missing PATH ERRNO` in a get reply."""

    path: str
    errno: int


@dataclass(frozen=True)
class ThirdPutComplete(Event):
    """`thirdput-complete R`: answer to ThirdPut."""

    ok: bool


@dataclass(frozen=True)
class NameQuery(Event):
    """`name`: the worker asks for the manager's project name."""


@dataclass(frozen=True)
class StatusRequest(Event):
    """A status client's first line, one of STATUS_KINDS."""

    kind: str


@dataclass(frozen=True)
class HttpRequest(Event):
    """`GET /PATH HTTP/1.x` plus headers: a browser asking for status."""

    path: str


# --- Names (section 3.2) --------------------------------------------------------------

_KEEP = frozenset(b for b in range(0x21, 0x7B) if b not in b"%\\<>'\"")
_ENCODE_TABLE = [chr(b) if b in _KEEP else f"%{b:02X}" for b in range(256)]
_HEX = frozenset(b"0123456789abcdefABCDEF")


def _to_bytes(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _to_str(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def url_encode(name: str) -> str:
    """Encode a name for the wire: bytes <= 0x20, > 0x7A and %\\<>'" become %XX."""
    return "".join([_ENCODE_TABLE[b] for b in _to_bytes(name)])


def url_decode(encoded: str | bytes) -> str:
    """Decode %hh (either case); a '%' not followed by two hex digits stays literal."""
    raw = _to_bytes(encoded) if isinstance(encoded, str) else encoded
    if b"%" not in raw:
        return _to_str(raw)
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        b = raw[i]
        if b == 0x25 and i + 2 < n and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(b)
            i += 1
    return _to_str(bytes(out))


def is_component(name: str) -> bool:
    """Whether ``name`` is one path component: not empty, no '/', not '.'/'..', no NUL."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def is_safe_relative_path(name: str) -> bool:
    """Whether a sandbox name stays inside the sandbox: relative, no '..', not the root."""
    if not name or name.startswith("/") or "\0" in name:
        return False
    parts = name.split("/")
    if ".." in parts:
        return False
    return any(p not in ("", ".") for p in parts)


def _is_below(path: str, top: str) -> bool:
    """Whether a get-reply path is ``top`` itself or a clean sub-path of it."""
    if path == top:
        return True
    if not path.startswith(top + "/") or "\0" in path:
        return False
    return all(is_component(p) for p in path[len(top) + 1 :].split("/"))


# --- Password step (section 3.3) ------------------------------------------------------
#
# Protocol 9's password step proves to each side that the other holds the password,
# without sending it: each side sends a random challenge and answers the peer's one with
# hex(sha1(PASSWORD + b" " + CHALLENGE)). The reference answers the peer's challenge as
# soon as it reads it, before the peer has proved anything, and that makes it an oracle:
# whoever hands it a challenge gets the answer. A peer without the password can then
# hand a side its own challenge back ("reflection"), on the same connection or on a
# second one, and relay the answer. treadle therefore never gives the reference-form
# answer before the peer's answer checked out. The reference answers without waiting,
# so waiting for it never deadlocks; two treadle peers would each wait for the other,
# so a treadle worker (or status client) marks its challenge, and a treadle manager that
# sees the mark answers first, in a form bound to the manager's role that no side
# accepts from a worker. What remains open (a relay between two honest peers, reference
# peers as oracles) is for TLS to close: docs/security-password.md.

_CHALLENGE_ALPHABET = string.ascii_letters + string.digits
CHALLENGE_LENGTH = 63
# The reference's challenges are 63 lowercase letters, and it takes any line without
# blanks as the peer's challenge (within 1024 bytes), so this prefix means "a treadle
# worker, which waits for the manager's proof first" to a treadle manager and nothing
# to a reference one. Neither a reference challenge nor a treadle one before the mark
# existed (letters and digits) can begin with it: the '-' never occurs in them.
TREADLE_MARK = "TREADLE1-"
MANAGER = "manager"
WORKER = "worker"
# The label that binds a treadle manager's early answer to its role: a worker never
# answers in this form, so an answer obtained from a manager cannot pass as a worker's.
_MANAGER_LABEL = b"treadle manager answer "


def new_challenge(length: int = CHALLENGE_LENGTH) -> str:
    """A random printable challenge without blanks (the reference uses 63 characters)."""
    return "".join(secrets.choice(_CHALLENGE_ALPHABET) for _ in range(length))


def challenge_response(password: bytes, challenge: str) -> str:
    """hex(sha1(PASSWORD + b" " + CHALLENGE)); PASSWORD keeps its trailing newline."""
    return hashlib.sha1(password + b" " + _to_bytes(challenge)).hexdigest()


def manager_response(password: bytes, challenge: str) -> str:
    """A treadle manager's answer to a marked challenge: HMAC-SHA1 keyed by the password
    over a manager-only label and the challenge (40 hex digits, like the reference form)."""
    return hmac.new(password, _MANAGER_LABEL + _to_bytes(challenge), hashlib.sha1).hexdigest()


class PasswordHandshake:
    """The password step (section 3.3) as a small pure state machine, for one role.

    ``role`` is ``MANAGER`` for a manager and ``WORKER`` for a worker or a status client.
    ``start()`` gives the events to send at once; feed every received auth event to
    ``receive()``, send what it returns, and read ``succeeded`` once it is not None
    (``failure`` then says why, for the log). The wire is that of protocol 9; only the
    moment each side reveals its answer differs from the reference (see above):

    * Neither role sends ``challenge_response`` for the peer's challenge before the
      peer's answer to its own challenge verified; then it sends it with ``ok``.
    * A worker's challenge carries ``TREADLE_MARK``. A manager answers a marked
      challenge at once with ``manager_response``; a worker accepts either that or the
      reference form from a manager, and a manager accepts only the reference form.
    * A peer challenge equal to our own is refused (reflection on one connection).
    """

    def __init__(self, password: bytes, role: str, challenge: str | None = None) -> None:
        if role not in (MANAGER, WORKER):
            raise LocalProtocolError(f"unknown password step role {role!r}")
        self._password = password
        self._role = role
        if challenge is None:
            mark = TREADLE_MARK if role == WORKER else ""
            challenge = mark + new_challenge(CHALLENGE_LENGTH - len(mark))
        self._challenge = challenge
        self._peer_challenge: str | None = None
        self._answered = False  # whether our answer to the peer's challenge went out
        self._step = 0
        self.succeeded: bool | None = None
        self.failure: str | None = None

    def start(self) -> list[Event]:
        return [Auth(), Challenge(self._challenge)]

    def receive(self, event: Event) -> list[Event]:
        """Consume one received event of the password step; return events to send."""
        expected = (Auth, Challenge, ChallengeResponse, AuthVerdict)
        if self.succeeded is not None:
            return []
        if self._step >= len(expected) or not isinstance(event, expected[self._step]):
            return self._fail(f"unexpected {type(event).__name__} in the password step")
        self._step += 1
        if isinstance(event, Challenge):
            return self._on_challenge(event.token)
        if isinstance(event, ChallengeResponse):
            return self._on_response(event.digest)
        if isinstance(event, AuthVerdict):
            self.succeeded = event.ok
            if not event.ok:
                self.failure = "the peer refused our answer (a different password?)"
        return []

    def _on_challenge(self, token: str) -> list[Event]:
        if hmac.compare_digest(_to_bytes(token), _to_bytes(self._challenge)):
            return self._fail("the peer sent our own challenge back (a reflection attempt)")
        self._peer_challenge = token
        if self._role == MANAGER and token.startswith(TREADLE_MARK):
            self._answered = True
            return [ChallengeResponse(manager_response(self._password, token))]
        return []

    def _on_response(self, digest: str) -> list[Event]:
        accepted = [challenge_response(self._password, self._challenge)]
        if self._role == WORKER:
            accepted.append(manager_response(self._password, self._challenge))
        # every candidate is compared, so the time taken says nothing about which matched
        ok = [hmac.compare_digest(want.encode(), _to_bytes(digest)) for want in accepted]
        if not any(ok):
            self._fail("the peer's answer is wrong (a different password?)")
            return [AuthVerdict(False)]
        out: list[Event] = []
        if not self._answered:
            assert self._peer_challenge is not None
            self._answered = True
            out.append(ChallengeResponse(challenge_response(self._password, self._peer_challenge)))
        out.append(AuthVerdict(True))
        return out

    def _fail(self, why: str) -> list[Event]:
        self.succeeded = False
        self.failure = why
        return []


# --- Status clients (section 3.11) ----------------------------------------------------


def status_request(kind: str = "queue_status") -> bytes:
    """The line a status client sends; the manager answers with JSON and closes."""
    if kind not in STATUS_KINDS:
        raise LocalProtocolError(f"unknown status kind {kind!r}")
    return kind.encode() + b"\n"


def parse_status_reply(body: bytes) -> list:
    """Decode a manager's status answer (a JSON array); ProtocolError if it is not one."""
    if len(body) > MAX_STATUS_REPLY:
        raise ProtocolError(f"status reply larger than {MAX_STATUS_REPLY} bytes")
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"status reply is not JSON: {e}") from None
    if not isinstance(value, list):
        raise ProtocolError("status reply is not a JSON array")
    return value


# --- Quoting peer data in messages ---------------------------------------------------

# An error message or log line quotes at most this much of what a peer sent: enough to
# recognise the value, while a 10 MB hostile line still makes a one-line message.
QUOTE_LIMIT = 200


def quoted(value: str | bytes, limit: int = QUOTE_LIMIT) -> str:
    """``repr`` of at most ``limit`` characters of ``value``, with ``...`` when cut."""
    shown = repr(value[:limit])
    return shown + "..." if len(value) > limit else shown


# --- Field parsing --------------------------------------------------------------------

_INT_RE = re.compile(rb"-?[0-9]{1,%d}\Z" % _MAX_DIGITS)
_DEC_RE = re.compile(rb"-?[0-9]{1,%d}(\.[0-9]{0,%d})?\Z" % (_MAX_DIGITS, _MAX_DIGITS))
_FLOAT_RE = re.compile(rb"[0-9.eE+-]{1,40}\Z")
_OCT_RE = re.compile(rb"[0-7]{1,7}\Z")


def _int(field: bytes, lo: int, hi: int, what: str) -> int:
    if not _INT_RE.match(field):
        raise ProtocolError(f"bad {what} {quoted(field)}")
    value = int(field)
    if not lo <= value <= hi:
        raise ProtocolError(f"{what} {value} out of range")
    return value


def _decimal_ceil(field: bytes, what: str) -> int:
    """A resource value: integer or decimal, rounded up."""
    if not _DEC_RE.match(field):
        raise ProtocolError(f"bad {what} {quoted(field)}")
    if b"." not in field:
        return int(field)
    whole, _, frac = field.partition(b".")
    value = int(whole or b"0")
    if frac.strip(b"0") and not whole.startswith(b"-"):
        value += 1
    return value


def _float(field: bytes, what: str) -> float:
    if not _FLOAT_RE.match(field):
        raise ProtocolError(f"bad {what} {quoted(field)}")
    try:
        value = float(field)
    except ValueError:
        raise ProtocolError(f"bad {what} {quoted(field)}") from None
    if not math.isfinite(value) or value < 0:
        raise ProtocolError(f"{what} {quoted(field)} out of range")
    return value


def _mode(field: bytes) -> int:
    if not _OCT_RE.match(field):
        raise ProtocolError(f"bad file mode {quoted(field)}")
    return int(field, 8) & 0o7777


def _size(field: bytes, what: str = "length") -> int:
    return _int(field, 0, MAX_PAYLOAD, what)


def _cache_name(field: bytes, encoded: bool = True) -> str:
    name = url_decode(field) if encoded else _to_str(field)
    if not is_component(name) or "\n" in name:  # a get reply sends the name raw
        raise ProtocolError(f"bad cache name {quoted(name)}")
    return name


def _fields(rest: bytes, n: int, what: str) -> list[bytes]:
    parts = rest.split()
    if len(parts) != n:
        raise ProtocolError(f"{what} needs {n} fields, got {len(parts)}")
    return parts


def _split_last(rest: bytes, what: str) -> tuple[bytes, bytes]:
    """Split off the last field: get-reply paths are raw and may contain spaces."""
    head, sep, last = rest.rpartition(b" ")
    if not sep or not head or not last:
        raise ProtocolError(f"malformed {what} line")
    return head, last


# --- Field formatting (sending side) --------------------------------------------------


def _token(value: str, what: str) -> str:
    """A raw field sent as is: it must not contain blanks or newlines."""
    if not value or any(c in value for c in " \t\n\r\x0b\x0c"):
        raise LocalProtocolError(f"{what} {quoted(value)} cannot be sent raw")
    return value


def _rest(value: str, what: str) -> str:
    """A raw rest-of-line field: no newline."""
    if "\n" in value:
        raise LocalProtocolError(f"{what} {quoted(value)} contains a newline")
    return value


def _num(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return repr(value)


def _line(text: str) -> bytes:
    data = _to_bytes(text) + b"\n"
    if len(data) > MAX_LINE + 1:
        raise LocalProtocolError(f"line longer than {MAX_LINE} bytes: {quoted(text)}")
    return data


def _payload(value: str, limit: int, what: str) -> bytes:
    """A small payload the receiver collects in memory: refuse one it would refuse."""
    data = _to_bytes(value)
    if len(data) > limit:
        raise LocalProtocolError(f"{what} of {len(data)} bytes is longer than the {limit} "
                                 f"a worker accepts")
    return data


def _check_cache_name(name: str) -> None:
    if not is_component(name) or "\n" in name:
        raise LocalProtocolError(f"cache name {quoted(name)} is not one path component")


# --- The shared byte-stream machinery -------------------------------------------------


class _Connection:
    """Buffering, line splitting, payload streaming and the sending-side payload count."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._scan = 0
        self._chunks: deque[bytes] = deque()
        self._eof = False
        self._broken: str | None = None
        self._ready: deque[Event] = deque()
        # receiving: payload streaming (header already emitted)
        self._stream_left: int | None = None
        # receiving: small payload collection
        self._collect_left = 0
        self._collect: bytearray | None = None
        self._collect_done: Callable[[bytes], Event | None] | None = None
        self._collect_newline = False
        # receiving: password step lines still expected after `auth password sha1`
        self._auth_lines: list[str] = []
        # sending: payload bytes still owed
        self._out_left = 0

    # public API
    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed its side."""
        if self._eof:
            if data:
                raise LocalProtocolError("data received after end of file")
            return
        if data:
            self._chunks.append(bytes(data))
        else:
            self._eof = True

    def next_event(self) -> Event | _Sentinel:
        """The next event, ``NEED_DATA``, or ``ConnectionClosed()`` after a clean EOF."""
        if self._broken is not None:
            raise ProtocolError(self._broken)
        try:
            return self._next()
        except ProtocolError as e:
            self._broken = str(e)
            raise

    def events(self) -> Iterator[Event]:
        """Every event available now; ends after NEED_DATA or ConnectionClosed."""
        while True:
            event = self.next_event()
            if event is NEED_DATA:
                return
            assert isinstance(event, Event)
            yield event
            if isinstance(event, ConnectionClosed):
                return

    def send(self, event: Event) -> bytes:
        """The bytes that carry ``event`` to the peer."""
        if isinstance(event, Data):
            if len(event.data) > self._out_left:
                raise LocalProtocolError("payload longer than its header said")
            self._out_left -= len(event.data)
            return event.data
        if isinstance(event, EndOfData):
            if self._out_left:
                raise LocalProtocolError(f"payload {self._out_left} bytes short")
            return b""
        if self._out_left:
            raise LocalProtocolError(f"{self._out_left} payload bytes owed before {type(event).__name__}")
        if isinstance(event, Auth):
            return _line(AUTH_LINE)
        if isinstance(event, Challenge):
            return _line(_token(event.token, "challenge"))
        if isinstance(event, ChallengeResponse):
            return _line(_token(event.digest, "response"))
        if isinstance(event, AuthVerdict):
            return b"ok\n" if event.ok else b"failure\n"
        return self._send(event)

    def payload_streamed(self, n: int) -> None:
        """Record that ``n`` payload bytes were written directly (e.g. socket.sendfile)."""
        if n < 0 or n > self._out_left:
            raise LocalProtocolError("payload longer than its header said")
        self._out_left -= n

    @property
    def payload_owed(self) -> int:
        """Payload bytes the caller must still write for the last header sent."""
        return self._out_left

    @property
    def payload_left(self) -> int:
        """Payload bytes of the current streamed message not yet received or buffered.

        Non-zero only while a payload streams and every byte fed so far has been
        handed out as ``Data``: the caller may then read up to this many bytes from
        the socket itself (straight into a file) and report them with
        ``payload_received``.
        """
        if self._stream_left is None or self._ready or self._chunks or \
                self._pos < len(self._buf):
            return 0
        return self._stream_left

    def payload_received(self, n: int) -> None:
        """Record ``n`` payload bytes the caller read from the socket itself."""
        if n < 0 or n > self.payload_left:
            raise LocalProtocolError("more payload read than the message has")
        assert self._stream_left is not None
        self._stream_left -= n

    # subclass hooks
    def _send(self, event: Event) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def _parse_line(self, line: bytes) -> Event | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _owe(self, size: int) -> None:
        self._out_left = size

    # receiving helpers for subclasses
    def _stream(self, size: int) -> None:
        self._stream_left = size

    def _collect_payload(self, size: int, limit: int, done, newline: bool = False) -> None:
        if size > limit:
            raise ProtocolError(f"payload of {size} bytes exceeds the limit of {limit}")
        self._collect = bytearray()
        self._collect_left = size
        self._collect_done = done
        self._collect_newline = newline

    # the engine
    def _next(self) -> Event | _Sentinel:
        while True:
            if self._ready:
                return self._ready.popleft()
            if self._stream_left is not None:
                if self._stream_left == 0:
                    self._stream_left = None
                    return EndOfData()
                chunk = self._take(self._stream_left)
                if chunk is None:
                    return self._starved()
                self._stream_left -= len(chunk)
                return Data(chunk)
            if self._collect is not None:
                if self._collect_left:
                    chunk = self._take(self._collect_left)
                    if chunk is None:
                        return self._starved()
                    self._collect += chunk
                    self._collect_left -= len(chunk)
                    continue
                if self._collect_newline:
                    nl = self._take(1)
                    if nl is None:
                        return self._starved()
                    if nl != b"\n":
                        raise ProtocolError("payload not followed by a newline")
                    self._collect_newline = False
                payload, done = bytes(self._collect), self._collect_done
                assert done is not None  # set with _collect
                self._collect = None
                self._collect_done = None
                event = done(payload)
                if event is not None:
                    return event
                continue
            line = self._take_line()
            if line is None:
                if self._eof and self._pos >= len(self._buf) and not self._chunks:
                    return ConnectionClosed()
                return self._starved()
            if self._auth_lines:
                event = self._parse_auth_line(line)
            else:
                event = self._parse_line(line)
            if event is not None:
                return event

    def _starved(self) -> _Sentinel:
        if self._eof:
            raise ProtocolError("connection closed in the middle of a message")
        return NEED_DATA

    def _take(self, n: int) -> bytes | None:
        """Up to ``n`` bytes of payload, avoiding copies when a whole chunk fits."""
        have = len(self._buf) - self._pos
        if have:
            k = min(n, have)
            out = bytes(self._buf[self._pos : self._pos + k])
            self._pos += k
            self._scan = self._pos
            self._compact()
            return out
        if not self._chunks:
            return None
        chunk = self._chunks.popleft()
        if len(chunk) <= n:
            return chunk
        self._buf = bytearray(chunk[n:])
        self._pos = self._scan = 0
        return chunk[:n]

    def _take_line(self) -> bytes | None:
        while True:
            i = self._buf.find(b"\n", self._scan)
            if i >= 0:
                if i - self._pos > MAX_LINE:
                    raise ProtocolError(f"line longer than {MAX_LINE} bytes")
                line = bytes(self._buf[self._pos : i])
                self._pos = self._scan = i + 1
                self._compact()
                return line
            self._scan = len(self._buf)
            if self._scan - self._pos > MAX_LINE:
                raise ProtocolError(f"line longer than {MAX_LINE} bytes")
            if not self._chunks:
                return None
            self._buf += self._chunks.popleft()

    def _compact(self) -> None:
        if self._pos == len(self._buf):
            self._buf = bytearray()
            self._pos = self._scan = 0
        elif self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._scan -= self._pos
            self._pos = 0

    def _begin_auth(self) -> Event:
        self._auth_lines = ["challenge", "response", "verdict"]
        return Auth()

    def _parse_auth_line(self, line: bytes) -> Event:
        kind = self._auth_lines.pop(0)
        text = _to_str(line).strip()
        if kind == "verdict":
            if text not in ("ok", "failure"):
                raise ProtocolError(f"bad password verdict {text[:40]!r}")
            return AuthVerdict(text == "ok")
        if not text or any(c.isspace() for c in text):
            raise ProtocolError(f"bad password {kind} line")
        return Challenge(text) if kind == "challenge" else ChallengeResponse(text)


# --- The worker's end: parses manager messages, sends worker messages -----------------


class WorkerConnection(_Connection):
    """The worker's end of a connection to a manager (sans-I/O)."""

    def __init__(self) -> None:
        super().__init__()
        self._depth = 0  # nesting of the dir stream being received
        self._name_pending = 0  # `name` queries sent and not yet answered
        self._task: dict | None = None  # task description being collected
        self._task_bytes = 0

    # receiving (manager -> worker)
    def _parse_line(self, line: bytes) -> Event | None:
        if self._task is not None:
            return self._task_line(line)
        if self._name_pending:
            self._name_pending -= 1
            return ProjectName(_to_str(line))
        word, _, rest = line.partition(b" ")
        if self._depth:
            return self._dir_line(word, rest)
        if word == b"put":
            name, size, mode = _fields(rest, 3, "put")
            event = Put(_cache_name(name), _size(size), _mode(mode))
            self._stream(event.size)
            return event
        if word == b"dir":
            (name,) = _fields(rest, 1, "dir")
            self._depth = 1
            return Dir(_cache_name(name))
        if word == b"task":
            (tid,) = _fields(rest, 1, "task")
            self._task = {"task_id": _int(tid, 0, MAX_TASK_ID, "task id"), "env": [],
                          "inputs": [], "outputs": []}
            self._task_bytes = len(line)
            return None
        if word == b"send_results":
            parts = rest.split()
            if len(parts) > 1:
                raise ProtocolError("malformed send_results line")
            n = _int(parts[0], -MAX_TASK_ID, MAX_TASK_ID, "count") if parts else -1
            return SendResults(n)
        if word == b"get":
            parts = rest.split()
            if not 1 <= len(parts) <= 2:
                raise ProtocolError("malformed get line")
            recursive = _int(parts[1], 0, 1, "recursive flag") if len(parts) == 2 else 1
            return Get(_cache_name(parts[0]), recursive)
        if word == b"kill":
            (tid,) = _fields(rest, 1, "kill")
            return Kill(_int(tid, -1, MAX_TASK_ID, "task id"))
        if word == b"unlink":
            (name,) = _fields(rest, 1, "unlink")
            return Unlink(_cache_name(name))
        if word == b"invalidate-file":
            (name,) = _fields(rest, 1, "invalidate-file")
            return InvalidateFile(_cache_name(name))
        if word in (b"check", b"release", b"exit") and not rest.strip():
            return {b"check": Check, b"release": Release, b"exit": Exit}[word]()
        if word == b"url":
            name, size, mode, flags = _fields(rest, 4, "url")
            cache = _cache_name(name, encoded=False)
            m, f = _mode(mode), _int(flags, 0, MAX_TASK_ID, "flags")
            self._collect_payload(
                _size(size), MAX_URL, lambda b: Url(cache, _to_str(b), m, f)
            )
            return None
        if word in (b"thirdget", b"thirdput"):
            parts = rest.split(b" ", 2)
            if len(parts) != 3 or not parts[2]:
                raise ProtocolError(f"malformed {word.decode()} line")
            third_mode = _int(parts[0], 0, 9, "mode")
            cls = ThirdGet if word == b"thirdget" else ThirdPut
            return cls(third_mode, _cache_name(parts[1]), _to_str(parts[2]))
        if word == b"tlq":
            return Tlq(_to_str(rest))
        if line == AUTH_LINE.encode():
            return self._begin_auth()
        raise ProtocolError(f"unknown message {quoted(line)}")

    def _dir_line(self, word: bytes, rest: bytes) -> Event | None:
        if word == b"end" and not rest.strip():
            self._depth -= 1
            return End()
        if word == b"put":
            name, size, mode = _fields(rest, 3, "put")
            event = Put(_cache_name(name), _size(size), _mode(mode))
            self._stream(event.size)
            return event
        if word == b"dir":
            (name,) = _fields(rest, 1, "dir")
            if self._depth >= MAX_DIR_DEPTH:
                raise ProtocolError("directory stream nested too deeply")
            self._depth += 1
            return Dir(_cache_name(name))
        if word == b"symlink":
            name, size = _fields(rest, 2, "symlink")
            link = _cache_name(name)
            self._collect_payload(
                _size(size), MAX_SYMLINK_TARGET, lambda b: Symlink(link, b)
            )
            return None  # the Symlink event comes with its payload
        raise ProtocolError(f"unexpected {quoted(word)} inside a directory stream")

    def _task_line(self, line: bytes) -> Event | None:
        task = self._task
        assert task is not None
        self._task_bytes += len(line) + 1
        if self._task_bytes > MAX_TASK_BYTES:
            raise ProtocolError(f"task description larger than {MAX_TASK_BYTES} bytes")
        word, _, rest = line.partition(b" ")
        if word == b"end" and not rest.strip():
            self._task = None
            if "command" not in task:
                raise ProtocolError(f"task {task['task_id']} has no cmd")
            return Task(
                task_id=task["task_id"], command=task["command"],
                category=task.get("category", "default"),
                cores=task.get("cores"), gpus=task.get("gpus"),
                memory=task.get("memory"), disk=task.get("disk"),
                end_time=task.get("end_time"), wall_time=task.get("wall_time"),
                env=tuple(task["env"]), inputs=tuple(task["inputs"]),
                outputs=tuple(task["outputs"]),
            )
        if word == b"cmd":
            (size,) = _fields(rest, 1, "cmd")
            n = _size(size)
            self._task_bytes += n
            self._collect_payload(n, MAX_COMMAND, lambda b: task.__setitem__("command", _to_str(b)))
            return None
        if word == b"env":
            (size,) = _fields(rest, 1, "env")
            n = _size(size)
            self._task_bytes += n
            self._collect_payload(
                n, MAX_ENV_ENTRY, lambda b: task["env"].append(_to_str(b)), newline=True
            )
            return None
        if word == b"category":
            task["category"] = _to_str(rest)
        elif word in (b"cores", b"gpus", b"memory", b"disk"):
            (value,) = _fields(rest, 1, word.decode())
            v = _decimal_ceil(value, word.decode())
            task[word.decode()] = v if v >= 0 else None
        elif word in (b"end_time", b"wall_time"):
            (value,) = _fields(rest, 1, word.decode())
            task[word.decode()] = _float(value, word.decode())
        elif word in (b"infile", b"outfile"):
            cache, sandbox, flags = _fields(rest, 3, word.decode())
            item = TaskFile(_cache_name(cache, encoded=False), url_decode(sandbox),
                            _int(flags, 0, MAX_TASK_ID, "flags"))
            task["inputs" if word == b"infile" else "outputs"].append(item)
        elif word == b"dir":
            (name,) = _fields(rest, 1, "dir")
            task["inputs"].append(EmptyDir(_to_str(name)))
        else:
            raise ProtocolError(f"unknown line {quoted(line)} in a task description")
        return None

    # sending (worker -> manager)
    def _send(self, event: Event) -> bytes:
        if isinstance(event, Alive):
            return b"alive\n"
        if isinstance(event, Info):
            if not event.value:
                raise LocalProtocolError(f"info {event.name} needs a value")
            return _line("info {} {}".format(_token(event.name, "info name"),
                                         _rest(event.value, "info value")))
        if isinstance(event, Result):
            self._owe(event.size)
            return _line(f"result {event.status} {event.exit_code} {event.size} "
                         f"{event.usec} {event.task_id}")
        if isinstance(event, End):
            return b"end\n"
        if isinstance(event, FileReply):
            self._owe(event.size)
            return _line(f"file {_rest(event.path, 'path')} {event.size}")
        if isinstance(event, DirReply):
            return _line("dir {} 0".format(_rest(event.path, "path")))
        if isinstance(event, Missing):
            return _line(f"missing {_rest(event.path, 'path')} {event.errno}")
        if isinstance(event, AvailableResults):
            return b"available_results\n"
        if isinstance(event, Resource):
            return _line(f"resource {_token(event.name, 'resource')} {event.total} "
                         f"{event.smallest} {event.largest}")
        if isinstance(event, ResourceTag):
            return _line(f"resource tag {event.tag}")
        if isinstance(event, Greeting):
            return _line("workqueue {} {} {} {} {}".format(
                event.protocol, _token(event.hostname, "hostname"), _token(event.os, "os"),
                _token(event.arch, "arch"), _token(event.version, "version")))
        if isinstance(event, Feature):
            return _line(f"feature {url_encode(event.name)}")
        if isinstance(event, Update):
            self._owe(event.size)
            return _line(f"update {event.task_id} {_token(event.path, 'path')} "
                         f"{event.offset} {event.size}")
        if isinstance(event, ThirdPutComplete):
            return b"thirdput-complete 1\n" if event.ok else b"thirdput-complete 0\n"
        if isinstance(event, NameQuery):
            self._name_pending += 1
            return b"name\n"
        if isinstance(event, StatusRequest):
            return status_request(event.kind)
        raise LocalProtocolError(f"a worker does not send {type(event).__name__}")


# --- The manager's end: parses worker messages, sends manager messages ----------------


class ManagerConnection(_Connection):
    """The manager's end of a connection from a worker or a status client (sans-I/O)."""

    def __init__(self) -> None:
        super().__init__()
        self._phase = "start"  # start -> [authenticated] -> handshake -> worker | http | done
        self._pending: deque[tuple[str, str]] = deque()  # replies owed by the worker
        self._name_pending = 0
        self._http_path = ""
        self._http_headers = 0
        self._out_depth = 0  # nesting of the dir stream being sent

    @property
    def greeted(self) -> bool:
        """Whether the worker's greeting has arrived."""
        return self._phase == "worker"

    # receiving (worker -> manager)
    def _parse_line(self, line: bytes) -> Event | None:
        phase = self._phase
        if phase == "worker":
            return self._worker_line(line)
        if phase == "http":
            if line.rstrip(b"\r"):
                self._http_headers += 1
                if self._http_headers > MAX_HTTP_HEADERS:
                    raise ProtocolError("too many HTTP header lines")
                return None
            self._phase = "done"
            return HttpRequest(self._http_path)
        if phase == "done":
            raise ProtocolError("data after a status request")
        word, _, rest = line.partition(b" ")
        if phase in ("start", "authenticated"):  # a status client may authenticate first
            self._phase = "handshake"
            text = line.rstrip(b"\r").decode("latin-1")
            if text in STATUS_KINDS:
                self._phase = "done"
                return StatusRequest(text)
            if word == b"GET":
                parts = rest.rstrip(b"\r").split(b" ")
                if len(parts) != 2 or not parts[1].startswith(b"HTTP/"):
                    raise ProtocolError("malformed HTTP request line")
                self._http_path = _to_str(parts[0])
                self._phase = "http"
                return None
            if line == AUTH_LINE.encode() and phase == "start":
                self._phase = "authenticated"
                return self._begin_auth()
        if line == b"name":
            self._name_pending += 1
            return NameQuery()
        if word == b"workqueue":
            parts = rest.split()
            if len(parts) < 5:
                raise ProtocolError("malformed workqueue greeting")
            protocol = _int(parts[0], 0, MAX_TASK_ID, "protocol version")
            self._phase = "worker"
            return Greeting(_to_str(parts[1]), _to_str(parts[2]), _to_str(parts[3]),
                            _to_str(parts[4]), protocol)
        raise ProtocolError(f"unexpected {quoted(line)} before the worker's greeting")

    def _worker_line(self, line: bytes) -> Event | None:
        word, _, rest = line.partition(b" ")
        head = self._pending[0] if self._pending else ("", "")
        if word == b"info":
            name, _, value = rest.partition(b" ")
            if not name or not value:
                raise ProtocolError("info line without a value")
            return Info(_to_str(name), _to_str(value))
        if word == b"alive" and not rest.strip():
            return Alive()
        if word == b"available_results" and not rest.strip():
            return AvailableResults()
        if word == b"resource":
            parts = rest.split()
            if len(parts) == 2 and parts[0] == b"tag":
                return ResourceTag(_int(parts[1], -1, MAX_TASK_ID, "resource tag"))
            if len(parts) != 4:
                raise ProtocolError("malformed resource line")
            total, smallest, largest = (_decimal_ceil(p, "resource value") for p in parts[1:])
            return Resource(_to_str(parts[0]), total, smallest, largest)
        if word == b"end" and not rest.strip():
            if head[0] not in ("get", "results"):
                raise ProtocolError("end without a pending reply")
            self._pending.popleft()
            return End()
        if word == b"file":
            path, size = _split_last(rest, "file")
            event = FileReply(self._reply_path(path, head), _size(size))
            self._stream(event.size)
            return event
        if word == b"dir":
            path, zero = _split_last(rest, "dir")
            _int(zero, 0, 0, "dir reply flag")
            return DirReply(self._reply_path(path, head))
        if word == b"missing":
            path, err = _split_last(rest, "missing")
            return Missing(self._reply_path(path, head), _int(err, 0, 4095, "errno"))
        if word == b"result":
            if head[0] != "results":
                raise ProtocolError("result without send_results")
            status, code, size, usec, tid = _fields(rest, 5, "result")
            result = Result(_int(status, 0, 255, "result code"),
                            _int(code, -(1 << 31), (1 << 31) - 1, "exit code"),
                            _size(size), _int(usec, 0, 1 << 62, "time"),
                            _int(tid, 0, MAX_TASK_ID, "task id"))
            self._stream(result.size)
            return result
        if word == b"update":
            if head[0] != "results":
                raise ProtocolError("update without send_results")
            tid, path, offset, size = _fields(rest, 4, "update")
            update = Update(_int(tid, 0, MAX_TASK_ID, "task id"), _to_str(path),
                            _size(offset, "offset"), _size(size))
            self._stream(update.size)
            return update
        if word == b"feature":
            (name,) = _fields(rest, 1, "feature")
            return Feature(url_decode(name))
        if word == b"thirdput-complete":
            (ok,) = _fields(rest, 1, "thirdput-complete")
            if head[0] != "thirdput":
                raise ProtocolError("thirdput-complete without thirdput")
            self._pending.popleft()
            return ThirdPutComplete(_int(ok, 0, 1, "thirdput status") == 1)
        raise ProtocolError(f"unknown message {quoted(line)}")

    def _reply_path(self, raw: bytes, head: tuple[str, str]) -> str:
        if head[0] != "get":
            raise ProtocolError("file data without a pending get")
        path = _to_str(raw)
        if not _is_below(path, head[1]):
            raise ProtocolError(f"reply path {quoted(path)} is not below {quoted(head[1])}")
        return path

    # sending (manager -> worker)
    def _send(self, event: Event) -> bytes:
        if isinstance(event, Put):
            self._check_name(event.name)
            self._owe(event.size)
            return _line(f"put {url_encode(event.name)} {event.size} 0{event.mode:o}")
        if isinstance(event, Task):
            return self._send_task(event)
        if isinstance(event, Get):
            _check_cache_name(event.name)
            self._pending.append(("get", event.name))
            return _line(f"get {url_encode(event.name)} {event.recursive}")
        if isinstance(event, SendResults):
            self._pending.append(("results", ""))
            return _line(f"send_results {event.n}")
        if isinstance(event, Kill):
            return _line(f"kill {event.task_id}")
        if isinstance(event, Unlink):
            _check_cache_name(event.name)
            return _line(f"unlink {url_encode(event.name)}")
        if isinstance(event, Dir):
            self._check_name(event.name)
            self._out_depth += 1
            return _line(f"dir {url_encode(event.name)}")
        if isinstance(event, End):
            if not self._out_depth:
                raise LocalProtocolError("end outside a directory stream")
            self._out_depth -= 1
            return b"end\n"
        if isinstance(event, Symlink):
            if not self._out_depth:
                raise LocalProtocolError("symlink outside a directory stream")
            self._check_name(event.name)
            return _line(f"symlink {url_encode(event.name)} {len(event.target)}") + event.target
        if isinstance(event, Check):
            return b"check\n"
        if isinstance(event, Release):
            return b"release\n"
        if isinstance(event, Exit):
            return b"exit\n"
        if isinstance(event, Url):
            _check_cache_name(event.name)
            url = _payload(event.url, MAX_URL, "url")
            return _line(f"url {_token(event.name, 'url name')} {len(url)} {event.mode:o} "
                         f"{event.flags}") + url
        if isinstance(event, (ThirdGet, ThirdPut)):
            _check_cache_name(event.name)
            word = "thirdget" if isinstance(event, ThirdGet) else "thirdput"
            if isinstance(event, ThirdPut):
                self._pending.append(("thirdput", event.name))
            return _line(f"{word} {event.mode} {url_encode(event.name)} "
                         f"{_rest(event.path, 'path')}")
        if isinstance(event, InvalidateFile):
            _check_cache_name(event.name)
            return _line(f"invalidate-file {url_encode(event.name)}")
        if isinstance(event, Tlq):
            return _line("tlq {}".format(_rest(event.url, "url")))
        if isinstance(event, ProjectName):
            if not self._name_pending:
                raise LocalProtocolError("project name sent without a name query")
            self._name_pending -= 1
            return _line(_rest(event.name, "project name"))
        if isinstance(event, StatusReply):
            return event.body
        if isinstance(event, HttpReply):
            head = ("HTTP/1.1 200 OK\nConnection: close\nAccess-Control-Allow-Origin: *\n"
                    "Content-type: {}\n\n".format(_rest(event.content_type, "content type")))
            return head.encode("latin-1") + event.body
        raise LocalProtocolError(f"a manager does not send {type(event).__name__}")

    def _check_name(self, name: str) -> None:
        if not is_component(name) or "\n" in name:
            where = "inside a directory stream" if self._out_depth else "as a cache name"
            raise LocalProtocolError(f"{quoted(name)} is not one path component {where}")

    def _send_task(self, task: Task) -> bytes:
        if self._out_depth:
            raise LocalProtocolError("task inside a directory stream")
        cmd = _payload(task.command, MAX_COMMAND, "command")
        out = [_line(f"task {task.task_id}"), _line(f"cmd {len(cmd)}"), cmd,
               _line("category {}".format(_rest(task.category, "category")))]
        for name in ("cores", "gpus", "memory", "disk"):
            value = getattr(task, name)
            if value is not None:
                out.append(_line(f"{name} {value}"))
        for name in ("end_time", "wall_time"):
            value = getattr(task, name)
            if value is not None:
                out.append(_line(f"{name} {_num(value)}"))
        for entry in task.env:
            raw = _payload(entry, MAX_ENV_ENTRY, "environment entry")
            out += [_line(f"env {len(raw)}"), raw, b"\n"]
        for item in task.inputs:
            if isinstance(item, EmptyDir):
                out.append(_line("dir {}".format(_token(item.sandbox_name, "dir name"))))
            else:
                out.append(self._task_file("infile", item))
        for item in task.outputs:
            out.append(self._task_file("outfile", item))
        out.append(b"end\n")
        data = b"".join(out)
        if len(data) > MAX_TASK_BYTES:
            raise LocalProtocolError(f"task description of {len(data)} bytes is larger than "
                                     f"the {MAX_TASK_BYTES} a worker accepts")
        return data

    @staticmethod
    def _task_file(word: str, item: TaskFile) -> bytes:
        _check_cache_name(item.cache_name)
        return _line(f"{word} {_token(item.cache_name, 'cache name')} "
                     f"{url_encode(item.sandbox_name)} {item.flags}")
