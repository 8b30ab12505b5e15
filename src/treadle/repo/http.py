"""The HTTP service's answers, without sockets: an h11 request in, a response plan out.

Like h11 itself, this module does no I/O of its own: it checks a request's text,
asks a :class:`Lookup` what the repository holds and says what to send: a status, headers, and
either bytes or a segment of an object. ``serve.py`` runs it and moves the bytes (docs/repo.md).

Status codes carry the vfs contract: 404 only when the lookup raised :class:`FileAbsent` (the
database said so), 503 when it raised :class:`StoreUnreachable`, 500 for treadle's bugs.
Request text never becomes a path: fileids, hashes and table names are checked against fixed
patterns and the lookup works from the database's checksums.
"""

from __future__ import annotations

import base64
import email.utils
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs

import h11

from treadle.errors import FileAbsent, RepoError, StoreUnreachable
from treadle.repo.checksums import format_checksum, parse_checksum
from treadle.repo.schema import check_name
from treadle.repo.tokens import ALLOWED, FORBIDDEN

# h11 buffers at most this much of a request head before it is complete. Real heads (a path,
# a bearer token, a Range) are well under 1 KiB; 16 KiB leaves room for proxies' extra headers
# while a client that sends an endless head costs each connection no more than that.
MAX_HEAD = 16 * 1024
MAX_LIST = 10_000
MAX_ID = 2**63 - 1  # fileids are 64-bit; a longer number names nothing
CACHE_CONTROL = "private, max-age=31536000, immutable"
_ID = r"[1-9][0-9]{0,18}"
_ROUTES = [(name, re.compile(pattern)) for name, pattern in (
    ("file", rf"/v1/files/({_ID})"),
    ("blob", r"/v1/blobs/sha256/([0-9a-f]{64})"),
    ("meta", rf"/v1/meta/({_ID})"),
    ("list", r"/v1/list/fileid"),
    ("table", r"/v1/list/table/([^/]+)"),
    ("tables", r"/v1/list/tables"),
    ("health", r"/v1/health"),
)]
_AFTER = re.compile(rf"0|{_ID}")
_LIMIT = re.compile(r"[1-9][0-9]{0,4}")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def new_connection() -> h11.Connection:
    """An h11 server connection with the head limit above."""
    return h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)


@dataclass(frozen=True)
class ObjectInfo:
    """What answering for one object needs: its name, size, type and date."""

    checksum: str
    size: int
    media_type: str | None = None
    modified: datetime | None = None


class Lookup(Protocol):
    """What the handler asks of a repository (or of a bare store); serve.py provides one.

    Each method raises FileAbsent when the database says there is no such thing and
    StoreUnreachable when it cannot tell.
    """

    accepts_put: bool

    def health(self) -> dict[str, Any]: ...
    def file(self, fileid: int) -> ObjectInfo: ...
    def blob(self, checksum: str) -> ObjectInfo: ...
    def meta(self, fileid: int) -> dict[str, Any]: ...
    def fileids(self, after: int, limit: int) -> list[dict[str, Any]]: ...
    def table_fileids(self, table: str, after: int, limit: int) -> list[dict[str, Any]]: ...
    def tables(self) -> list[str]: ...


@dataclass(frozen=True)
class ObjectBody:
    """Send ``length`` bytes of object ``checksum`` from ``offset``; ``whole`` when all of it."""

    checksum: str
    offset: int
    length: int
    whole: bool


@dataclass(frozen=True)
class Upload:
    """Receive the request body as object ``checksum`` (``length`` bytes, verified)."""

    checksum: str
    length: int


@dataclass(frozen=True)
class Plan:
    """A response to send: status, headers and a body (bytes or an object segment).

    ``send_body`` is False for HEAD and 304, whose Content-Length describes a body not sent.
    """

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | ObjectBody = b""
    send_body: bool = True

    def response(self) -> h11.Response:
        headers = [("Date", email.utils.formatdate(usegmt=True)), *self.headers]
        if isinstance(self.body, bytes) and self.status != 304:
            headers.append(("Content-Length", str(len(self.body))))
        return h11.Response(status_code=self.status, headers=headers,
                            reason=HTTPStatus(self.status).phrase.encode())


def json_plan(status: int, data: dict[str, Any], **kw: Any) -> Plan:
    return Plan(status, [("Content-Type", "application/json"), ("Cache-Control", "no-store")],
                (json.dumps(data) + "\n").encode(), **kw)


def error_plan(status: int, message: str, extra: Sequence[tuple[str, str]] = (),
               send_body: bool = True) -> Plan:
    """A JSON ``{"error": ...}`` answer."""
    plan = json_plan(status, {"error": message}, send_body=send_body)
    return Plan(plan.status, [*plan.headers, *extra], plan.body, send_body)


def stored_plan(created: bool) -> Plan:
    """The answer to a PUT that stored (201) or found (200) its object."""
    return json_plan(201 if created else 200, {"stored": created})


class Handler:
    """Plans the answer to each request of one service.

    ``authorize(token, scope)`` is a :class:`treadle.repo.tokens.TokenChecker`'s ``check``, or
    None when the service runs with ``--no-auth``.
    """

    def __init__(self, lookup: Lookup, authorize: Callable[[str | None, str], str] | None):
        self.lookup = lookup
        self.authorize = authorize

    def plan(self, request: h11.Request) -> Plan | Upload:
        """The answer to ``request``, or the Upload a PUT asks for (answered by serve.py once the
        body is stored); the lookup's exceptions become 404/503/400 answers."""
        method = request.method.decode("ascii", "replace")
        head_only = method == "HEAD"
        try:
            return self._plan(request, method)
        except FileAbsent as e:
            return error_plan(404, str(e), send_body=not head_only)
        except StoreUnreachable as e:
            return error_plan(503, str(e), [("Retry-After", "5")], send_body=not head_only)
        except RepoError as e:
            return error_plan(400, str(e), send_body=not head_only)

    def _plan(self, request: h11.Request, method: str) -> Plan | Upload:
        target = request.target.decode("ascii", "replace")
        path, _, query = target.partition("?")
        route, match = next(((name, m) for name, pattern in _ROUTES
                             if (m := pattern.fullmatch(path))), ("", None))
        if match is None:
            return error_plan(404, f"no such endpoint: {path[:200]}", send_body=method != "HEAD")
        allowed = {"blob": ("GET", "HEAD", "PUT"), "file": ("GET", "HEAD")}.get(route, ("GET",))
        if method not in allowed or (method == "PUT" and not self.lookup.accepts_put):
            methods = [m for m in allowed if m != "PUT" or self.lookup.accepts_put]
            return error_plan(405, f"{method} is not allowed here",
                              [("Allow", ", ".join(methods))], send_body=method != "HEAD")
        if route != "health":
            refused = self._refusal(request, "write" if method == "PUT" else "read")
            if refused is not None:
                return refused
        headers = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in request.headers}
        if route == "health":
            return json_plan(200, self.lookup.health())
        if route == "meta":
            return json_plan(200, self.lookup.meta(_fileid(match.group(1))))
        if route == "tables":
            return json_plan(200, {"tables": self.lookup.tables()})
        if route in ("list", "table"):
            after, limit = _paging(query)
            if route == "list":
                entries = self.lookup.fileids(after, limit)
            else:
                entries = self.lookup.table_fileids(check_name(match.group(1), "table"), after,
                                                    limit)
            following = entries[-1]["fileid"] if len(entries) == limit else None
            if route == "table":
                return json_plan(200, {"fileids": entries, "next": following})
            # "fileids" stays a list of numbers for older clients; "files" adds their metadata
            return json_plan(200, {"fileids": [e["fileid"] for e in entries], "files": entries,
                                   "next": following})
        checksum = format_checksum(match.group(1)) if route == "blob" else ""
        if method == "PUT":
            return _upload_plan(checksum, headers)
        info = self.lookup.file(_fileid(match.group(1))) if route == "file" else \
            self.lookup.blob(checksum)
        return object_plan(info, headers, head_only=method == "HEAD")

    def _refusal(self, request: h11.Request, scope: str) -> Plan | None:
        if self.authorize is None:
            return None
        token = None
        for name, value in request.headers:
            if name == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    token = credentials.strip()
        verdict = self.authorize(token, scope)
        if verdict == ALLOWED:
            return None
        head = request.method != b"HEAD"
        if verdict == FORBIDDEN:
            return error_plan(403, f"this token may not {scope}", send_body=head)
        return error_plan(401, "a valid bearer token is needed",
                          [("WWW-Authenticate", 'Bearer realm="treadle"')], send_body=head)


def _fileid(text: str) -> int:
    fileid = int(text)
    if fileid > MAX_ID:
        raise FileAbsent(f"no file {fileid}")
    return fileid


def _paging(query: str) -> tuple[int, int]:
    """``after`` and ``limit`` of a listing; RepoError (400) for anything malformed."""
    try:
        args = parse_qs(query, strict_parsing=bool(query), max_num_fields=8)
    except ValueError:
        raise RepoError("a listing takes ?after=N&limit=M") from None
    after, limit = args.get("after", ["0"])[-1], args.get("limit", [str(MAX_LIST)])[-1]
    if not _AFTER.fullmatch(after) or int(after) > MAX_ID:
        raise RepoError(f"after must be a fileid or 0, not {after[:40]!r}")
    if not _LIMIT.fullmatch(limit) or int(limit) > MAX_LIST:
        raise RepoError(f"limit must be 1 to {MAX_LIST}, not {limit[:40]!r}")
    return int(after), int(limit)


def _upload_plan(checksum: str, headers: dict[str, str]) -> Plan | Upload:
    length = headers.get("content-length")
    if length is None or "transfer-encoding" in headers:
        return error_plan(411, "a PUT needs a Content-Length")
    return Upload(checksum, int(length))


def _etag_matches(header: str, etag: str) -> bool:
    """If-None-Match's weak comparison: ``*`` or any listed tag equal to ``etag`` without W/."""
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)


def _single_range(header: str, size: int) -> tuple[int, int] | None | str:
    """(first, last) of one satisfiable range, None to send the whole object, "416" if none fits.

    Several ranges get the whole object (RFC 9110, section 14.2, allows it), as does a malformed header,
    which the RFC says to ignore.
    """
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            return "416"
        return max(0, size - suffix), size - 1
    start = int(first)
    end = size - 1 if last == "" else int(last)
    if start >= size:
        return "416"
    if end < start:
        return None
    return start, min(end, size - 1)


def object_plan(info: ObjectInfo, headers: dict[str, str], *, head_only: bool = False) -> Plan:
    """The answer for an object: whole (200), one range (206), 416, or 304 (If-None-Match).

    ``headers`` are the request's, names lower-cased.
    """
    etag = f'"{info.checksum}"'
    digest = base64.b64encode(bytes.fromhex(parse_checksum(info.checksum))).decode()
    common = [("ETag", etag), ("Cache-Control", CACHE_CONTROL)]
    modified = email.utils.format_datetime(info.modified, usegmt=True) if info.modified else None
    if modified:
        common.append(("Last-Modified", modified))
    if "if-none-match" in headers and _etag_matches(headers["if-none-match"], etag):
        return Plan(304, common, b"", send_body=False)
    described = [*common, ("Accept-Ranges", "bytes"), ("Repr-Digest", f"sha-256=:{digest}:"),
                 ("Content-Type", info.media_type or "application/octet-stream")]
    wanted = headers.get("range")
    if_range = headers.get("if-range")
    if wanted is not None and if_range is not None and if_range.strip() not in (etag, modified):
        wanted = None  # the client's copy is another version: send it all
    span = _single_range(wanted, info.size) if wanted is not None else None
    if span == "416":
        return error_plan(416, f"no byte of the range is in the {info.size}-byte object",
                          [("Content-Range", f"bytes */{info.size}"), *common],
                          send_body=not head_only)
    if isinstance(span, tuple):
        first, last = span
        length = last - first + 1
        return Plan(206, [*described, ("Content-Range", f"bytes {first}-{last}/{info.size}"),
                          ("Content-Length", str(length))],
                    ObjectBody(info.checksum, first, length, whole=length == info.size),
                    send_body=not head_only)
    return Plan(200, [*described, ("Content-Length", str(info.size))],
                ObjectBody(info.checksum, 0, info.size, whole=True), send_body=not head_only)
