"""The sans-I/O handler of the HTTP service, fed request bytes without a socket (docs/repo.md)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from treadle.repo.context import RepoContext, open_context
from treadle.repo.http import MAX_HEAD, Handler, ObjectBody, Plan, Upload, new_connection
from treadle.repo.ingest import ingest
from treadle.repo.serve import RepoLookup, StoreLookup, open_bare_store
from treadle.repo.tokens import TokenChecker, create_token, tokens_path


@pytest.fixture
def database_url() -> None:
    """The handler is the same over either database: SQLite is enough here."""
    return None


@pytest.fixture
def ctx(repo_dir: Path, make_files: Callable[..., list[Path]]) -> Iterator[RepoContext]:
    """The repository with three files of 1,000 bytes, fileids 1-3, in table ``images``."""
    sources = make_files(3, size=1000, suffix=".jpg")
    with open_context(repo_dir, write=True) as c:
        ingest(c, None, table="images", files=[str(p) for p in sources])
    with open_context(repo_dir) as c:
        yield c


@pytest.fixture
def handler(ctx: RepoContext) -> Handler:
    return Handler(RepoLookup(ctx), None)


def request(target: str, *headers: tuple[str, str], method: str = "GET") -> h11.Request:
    """The Request that h11 parses from a client's head."""
    connection = new_connection()
    head = f"{method} {target} HTTP/1.1\r\nHost: x\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    connection.receive_data((head + "\r\n").encode())
    event = connection.next_event()
    assert isinstance(event, h11.Request)
    return event


def answer(handler: Handler, target: str, *headers: tuple[str, str], method: str = "GET") -> Plan:
    plan = handler.plan(request(target, *headers, method=method))
    assert isinstance(plan, Plan)
    return plan


def header(plan: Plan, name: str) -> str | None:
    return next((value for key, value in plan.headers if key.lower() == name.lower()), None)


def test_a_whole_file_with_its_identity_headers(handler: Handler, ctx: RepoContext,
                                                repo_dir: Path) -> None:
    plan = answer(handler, "/v1/files/2")
    assert plan.status == 200
    assert isinstance(plan.body, ObjectBody) and plan.body.whole
    data = (repo_dir / "stores" / "a" / _relpath(plan.body.checksum)).read_bytes()
    digest = hashlib.sha256(data).digest()
    assert header(plan, "ETag") == f'"sha256:{digest.hex()}"'
    assert header(plan, "Repr-Digest") == f"sha-256=:{base64.b64encode(digest).decode()}:"
    assert header(plan, "Content-Length") == "1000" and header(plan, "Accept-Ranges") == "bytes"
    assert header(plan, "Content-Type") == "image/jpeg"
    assert header(plan, "Cache-Control") == "private, max-age=31536000, immutable"
    assert header(plan, "Last-Modified", ).endswith(" GMT")  # type: ignore[union-attr]
    blob = answer(handler, f"/v1/blobs/sha256/{digest.hex()}")
    assert blob.status == 200 and blob.body == plan.body
    head = answer(handler, "/v1/files/2", method="HEAD")
    assert head.status == 200 and not head.send_body and header(head, "Content-Length") == "1000"


def _relpath(checksum: str) -> str:
    hexdigest = checksum.removeprefix("sha256:")
    return f"objects/sha256/{hexdigest[:2]}/{hexdigest[2:4]}/{hexdigest}"


@pytest.mark.parametrize(("wanted", "status", "span"), [
    ("bytes=0-99", 206, (0, 100)),
    ("bytes=500-599", 206, (500, 100)),
    ("bytes=-10", 206, (990, 10)),
    ("bytes=990-", 206, (990, 10)),
    ("bytes=900-5000", 206, (900, 100)),
    ("bytes=0-", 206, (0, 1000)),
    ("bytes=0-0,5-9", 200, (0, 1000)),  # several ranges: the whole object, as RFC 9110 allows
    ("bytes=9-5", 200, (0, 1000)),      # malformed: ignored
    ("lines=1-2", 200, (0, 1000)),
])
def test_ranges(handler: Handler, wanted: str, status: int, span: tuple[int, int]) -> None:
    plan = answer(handler, "/v1/files/1", ("Range", wanted))
    assert plan.status == status
    assert isinstance(plan.body, ObjectBody)
    assert (plan.body.offset, plan.body.length) == span
    if status == 206:
        assert header(plan, "Content-Range") == f"bytes {span[0]}-{sum(span) - 1}/1000"
        assert header(plan, "Content-Length") == str(span[1])


@pytest.mark.parametrize("wanted", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_an_unsatisfiable_range_is_416_with_the_size(handler: Handler, wanted: str) -> None:
    plan = answer(handler, "/v1/files/1", ("Range", wanted))
    assert plan.status == 416 and header(plan, "Content-Range") == "bytes */1000"


def test_conditional_requests(handler: Handler) -> None:
    etag = header(answer(handler, "/v1/files/1"), "ETag")
    assert etag is not None
    assert answer(handler, "/v1/files/1", ("If-None-Match", etag)).status == 304
    assert answer(handler, "/v1/files/1", ("If-None-Match", f'"x", W/{etag}')).status == 304
    assert answer(handler, "/v1/files/1", ("If-None-Match", "*")).status == 304
    assert answer(handler, "/v1/files/1", ("If-None-Match", '"sha256:00"')).status == 200
    same = answer(handler, "/v1/files/1", ("Range", "bytes=0-9"), ("If-Range", etag))
    assert same.status == 206
    other = answer(handler, "/v1/files/1", ("Range", "bytes=0-9"), ("If-Range", '"sha256:00"'))
    assert other.status == 200 and isinstance(other.body, ObjectBody) and other.body.length == 1000


def test_metadata_listings_and_health(handler: Handler, ctx: RepoContext) -> None:
    import json

    def body(target: str) -> object:
        plan = answer(handler, target)
        assert plan.status == 200, plan.body
        assert isinstance(plan.body, bytes)
        return json.loads(plan.body)

    meta = body("/v1/meta/3")
    assert meta["fileid"] == 3 and meta["size"] == 1000 and meta["replicas_ok"] == 2  # type: ignore[index]
    assert meta["extension"] == "jpg" and meta["state"] == "OK"  # type: ignore[index]
    def listed(fileid: int) -> dict[str, object]:
        """A listing's entry: what /v1/meta says of the file's identity and stat."""
        full = body(f"/v1/meta/{fileid}")
        assert isinstance(full, dict)
        return {key: full[key] for key in ("fileid", "size", "checksum", "extension", "created_at")}

    assert body("/v1/list/fileid?limit=2") == {"fileids": [1, 2], "files": [listed(1), listed(2)],
                                               "next": 2}
    assert body("/v1/list/fileid?after=2&limit=2") == {"fileids": [3], "files": [listed(3)],
                                                       "next": None}
    assert body("/v1/list/table/images?after=1") == {"fileids": [listed(2), listed(3)], "next": None}
    assert body("/v1/list/tables") == {"tables": ["images"]}
    assert body("/v1/health") == {"status": "ok", "uuid": ctx.config.uuid, "format": 1,
                                  "schema": body("/v1/health")["schema"],  # type: ignore[index]
                                  "mount": "/bxgrid"}


@pytest.mark.parametrize(("target", "status"), [
    ("/v1/files/4", 404), ("/v1/meta/4", 404), ("/v1/files/9223372036854775808", 404),
    ("/v1/blobs/sha256/" + "0" * 64, 404), ("/v1/list/table/thumbs", 404),
    ("/v1/files/0", 404), ("/v1/files/01", 404), ("/v1/files/1x", 404), ("/v1/files/-1", 404),
    ("/v1/files/12345678901234567890", 404), ("/v1/blobs/sha256/../../../etc/passwd", 404),
    ("/v1/blobs/sha256/" + "A" * 64, 404), ("/v1/blobs/md5/" + "0" * 32, 404),
    ("/v1/list/table/files", 400), ("/v1/list/table/a%3Bdrop", 400), ("/v1/list/table/vpath", 400),
    ("/v1/list/fileid?limit=10001", 400), ("/v1/list/fileid?after=x", 400),
    ("/v1/list/fileid?limit=0", 400), ("/etc/passwd", 404), ("/v1/files/1/../../x", 404),
])
def test_request_text_is_checked_never_joined_into_a_path(handler: Handler, target: str,
                                                         status: int) -> None:
    plan = answer(handler, target)
    assert plan.status == status
    assert isinstance(plan.body, bytes) and plan.body.startswith(b'{"error": ')


def test_methods(handler: Handler) -> None:
    put = answer(handler, "/v1/blobs/sha256/" + "0" * 64, ("Content-Length", "0"), method="PUT")
    assert put.status == 405 and header(put, "Allow") == "GET, HEAD"
    assert answer(handler, "/v1/files/1", method="DELETE").status == 405


def test_tokens_are_required_except_for_health(ctx: RepoContext, repo_dir: Path) -> None:
    reader, _ = create_token(repo_dir, "read")
    handler = Handler(RepoLookup(ctx), TokenChecker(tokens_path(repo_dir)).check)
    refused = answer(handler, "/v1/files/1")
    assert refused.status == 401 and header(refused, "WWW-Authenticate", ).startswith("Bearer")  # type: ignore[union-attr]
    assert answer(handler, "/v1/files/1", ("Authorization", "Bearer trt_wrong")).status == 401
    assert answer(handler, "/v1/files/1", ("Authorization", f"Basic {reader}")).status == 401
    assert answer(handler, "/v1/files/1", ("Authorization", f"Bearer {reader}")).status == 200
    assert answer(handler, "/v1/files/1", ("Authorization", f"bearer {reader}")).status == 200
    assert answer(handler, "/v1/health").status == 200


def test_a_store_server_takes_puts_with_a_write_token(repo_dir: Path) -> None:
    store_dir = repo_dir / "stores" / "b"
    reader, _ = create_token(store_dir, "read")
    writer, _ = create_token(store_dir, "write")
    handler = Handler(StoreLookup(*open_bare_store(store_dir)), TokenChecker(tokens_path(store_dir)).check)
    target = "/v1/blobs/sha256/" + "ab" * 32
    with_reader = handler.plan(request(target, ("Authorization", f"Bearer {reader}"),
                                       ("Content-Length", "3"), method="PUT"))
    assert isinstance(with_reader, Plan) and with_reader.status == 403
    upload = handler.plan(request(target, ("Authorization", f"Bearer {writer}"),
                                  ("Content-Length", "3"), method="PUT"))
    assert upload == Upload("sha256:" + "ab" * 32, 3)
    chunked = handler.plan(request(target, ("Authorization", f"Bearer {writer}"),
                                   ("Transfer-Encoding", "chunked"), method="PUT"))
    assert isinstance(chunked, Plan) and chunked.status == 411
    files = handler.plan(request("/v1/files/1", ("Authorization", f"Bearer {reader}")))
    assert isinstance(files, Plan) and files.status == 404


def test_an_oversized_head_is_a_protocol_error() -> None:
    connection = new_connection()
    connection.receive_data(b"GET /v1/health HTTP/1.1\r\nX: " + b"a" * MAX_HEAD)
    with pytest.raises(h11.RemoteProtocolError) as raised:
        connection.next_event()
    assert raised.value.error_status_hint == 431


def _feed(handler: Handler, data: bytes) -> None:
    """Feed bytes as a client would; plan every request. Only h11's errors may escape."""
    connection = new_connection()
    connection.receive_data(data)
    connection.receive_data(b"")
    while True:
        event = connection.next_event()
        if isinstance(event, h11.Request):
            plan = handler.plan(event)
            assert isinstance(plan, (Plan, Upload))
            return
        if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            return


_TOKEN = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=" "),
                 min_size=1, max_size=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400))
def test_random_bytes_raise_only_protocol_errors(handler: Handler, data: bytes) -> None:
    try:
        _feed(handler, data)
    except h11.ProtocolError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "HEAD", "PUT", "POST"]),
       path=st.lists(st.sampled_from(["v1", "files", "blobs", "sha256", "meta", "list", "table",
                                      "fileid", "health", "1", "0", "99", "..", "%2e", "images",
                                      "a" * 64, "9" * 20]), max_size=5).map(lambda p: "/" + "/".join(p)),
       query=st.one_of(st.just(""), _TOKEN.map(lambda q: "?" + q)),
       headers=st.lists(st.tuples(st.sampled_from(["Range", "If-Range", "If-None-Match",
                                                   "Authorization", "Content-Length"]), _TOKEN),
                        max_size=3))
def test_well_formed_requests_always_get_an_answer(handler: Handler, method: str, path: str,
                                                   query: str, headers: list[tuple[str, str]]) -> None:
    head = f"{method} {path}{query} HTTP/1.1\r\nHost: x\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    try:
        _feed(handler, (head + "\r\n").encode())
    except h11.ProtocolError:
        pass  # e.g. a Content-Length that is not a number
