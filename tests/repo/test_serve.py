"""``treadle repo serve`` as a client sees it: http.client against a real server process on
127.0.0.1 (docs/repo.md), and the clients of remote.py against it."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tests._wait import wait_for

from treadle.cli import main
from treadle.errors import FileAbsent, RepoDataError, RepoError, StoreUnreachable
from treadle.repo import fetch
from treadle.repo.checksums import hash_file
from treadle.repo.client import ServiceClient
from treadle.repo.context import open_context
from treadle.repo.ingest import ingest
from treadle.repo.remote import HttpStore
from treadle.repo.schema import replicas
from treadle.repo.tokens import create_token

SIZES = (300_000, 1000, 0)  # fileids 1-3: a sendfile body, a small one, an empty one


@pytest.fixture
def database_url() -> None:
    """The service reads through treadle.repo.fetch, tested on both databases; SQLite here."""
    return None


class Service:
    """A ``treadle repo serve`` process; its URL, its access log, a SIGTERM that must exit 0."""

    def __init__(self, args: list[str], log: Path, *, scheme: str = "http"):
        self.log_path = log
        with open(log, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "treadle", "repo", "serve", *args, "--bind", "127.0.0.1:0"],
                stdout=subprocess.PIPE, stderr=err, text=True)
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        assert self.url.startswith(f"{scheme}://127.0.0.1:"), self.log()
        self.port = urlsplit(self.url).port

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture
def sources(repo_dir: Path, tmp_path: Path) -> list[Path]:
    """The repository's files (fileids 1, 2, 3) as they were ingested."""
    paths = []
    for n, size in enumerate(SIZES, 1):
        path = tmp_path / f"src{n}.bin"
        path.write_bytes(os.urandom(size))
        paths.append(path)
    with open_context(repo_dir, write=True) as ctx:
        ingest(ctx, None, table="images", files=[str(p) for p in paths])
    return paths


@pytest.fixture
def token(repo_dir: Path) -> str:
    return create_token(repo_dir, "read")[0]


@pytest.fixture
def service(repo_dir: Path, sources: list[Path], token: str, tmp_path: Path) -> Iterator[Service]:
    server = Service([str(repo_dir)], tmp_path / "serve.log")
    yield server
    assert server.stop() == 0, server.log()


def get(connection: http.client.HTTPConnection, target: str, *headers: tuple[str, str],
        method: str = "GET") -> tuple[http.client.HTTPResponse, bytes]:
    connection.request(method, target, headers=dict(headers))
    response = connection.getresponse()
    return response, response.read()


def test_whole_ranged_head_and_conditional_requests(service: Service, sources: list[Path],
                                                    token: str) -> None:
    auth = ("Authorization", f"Bearer {token}")
    data = sources[0].read_bytes()
    digest = hashlib.sha256(data).digest()
    c = service.connect()  # one keep-alive connection for every request
    response, body = get(c, "/v1/files/1", auth)
    assert response.status == 200 and body == data
    etag = response.getheader("ETag")
    assert etag == f'"sha256:{digest.hex()}"'
    assert response.getheader("Repr-Digest") == f"sha-256=:{base64.b64encode(digest).decode()}:"
    for wanted, status, expected in [
        ("bytes=0-9", 206, data[:10]), ("bytes=100000-199999", 206, data[100000:200000]),
        ("bytes=-70000", 206, data[-70000:]), ("bytes=0-1,5-6", 200, data),
        ("bytes=300000-", 416, None),
    ]:
        response, body = get(c, "/v1/files/1", auth, ("Range", wanted))
        assert response.status == status, wanted
        if expected is not None:
            assert body == expected
        else:
            assert response.getheader("Content-Range") == "bytes */300000"
    response, body = get(c, "/v1/files/1", auth, method="HEAD")
    assert response.status == 200 and body == b"" and response.getheader("Content-Length") == "300000"
    response, body = get(c, "/v1/files/1", auth, ("If-None-Match", etag))
    assert response.status == 304 and body == b""
    response, body = get(c, "/v1/files/1", auth, ("Range", "bytes=0-3"), ("If-Range", etag))
    assert response.status == 206 and body == data[:4]
    response, body = get(c, "/v1/files/1", auth, ("Range", "bytes=0-3"), ("If-Range", '"sha256:0"'))
    assert response.status == 200 and body == data
    for fileid, source in ((2, sources[1]), (3, sources[2])):
        response, body = get(c, f"/v1/files/{fileid}", auth)
        assert response.status == 200 and body == source.read_bytes()
        assert response.getheader("ETag") == f'"{hash_file(source)[0]}"'
    c.close()


def test_tokens_are_checked_and_never_logged(service: Service, token: str, repo_dir: Path) -> None:
    c = service.connect()
    response, _ = get(c, "/v1/files/1")
    assert response.status == 401 and response.getheader("WWW-Authenticate", "").startswith("Bearer")
    response, _ = get(c, "/v1/files/1", ("Authorization", "Bearer trt_not-a-token"))
    assert response.status == 401
    response, _ = get(c, "/v1/health")
    assert response.status == 200
    response, _ = get(c, f"/v1/meta/1?t={token[:6]}", ("Authorization", f"Bearer {token}"))
    assert response.status == 200
    c.close()
    wait_for(lambda: "/v1/meta/1" in service.log(), what="the access line")
    assert token not in service.log() and token[6:] not in service.log()
    assert len(service.log().splitlines()) == 4


def test_absent_is_404_and_an_unreachable_store_is_503(service: Service, token: str,
                                                        repo_dir: Path) -> None:
    auth = ("Authorization", f"Bearer {token}")
    c = service.connect()
    assert get(c, "/v1/files/99", auth)[0].status == 404
    stores = repo_dir / "stores"
    stores.rename(repo_dir / "stores.away")
    try:
        response, body = get(c, "/v1/files/2", auth)
        assert response.status == 503 and b'"error"' in body
        assert get(c, "/v1/files/99", auth)[0].status == 404  # the database still says so
    finally:
        (repo_dir / "stores.away").rename(stores)
    assert get(c, "/v1/files/2", auth)[0].status == 200
    c.close()


def test_an_unreadable_database_is_503_never_404(service: Service, token: str, repo_dir: Path) -> None:
    auth = ("Authorization", f"Bearer {token}")
    c = service.connect()
    # the same files, their headers destroyed: the server's open connections see it too,
    # because the WAL index they share in memory is gone with them
    for name in ("metadata.db", "metadata.db-shm"):
        with open(repo_dir / name, "r+b") as f:
            f.write(b"\0" * 4096)
    response, body = get(c, "/v1/files/3", auth)
    assert response.status == 503, body
    assert get(c, "/v1/files/99", auth)[0].status == 503
    c.close()


def test_a_wrong_replica_is_cut_short_and_marked_suspect(service: Service, sources: list[Path],
                                                         token: str, repo_dir: Path) -> None:
    checksum = hash_file(sources[0])[0]
    with open_context(repo_dir) as ctx:
        first, second = fetch.candidates(ctx, checksum)
    assert first.path is not None and second.path is not None
    first.path.chmod(0o644)
    with open(first.path, "r+b") as f:  # same size, one byte changed, mtime changes: untrusted
        f.seek(123)
        f.write(bytes([f.read(1)[0] ^ 1]))
    os.utime(second.path, ns=(0, 0))  # right bytes, but no longer trusted unhashed either
    c = service.connect()
    c.request("GET", "/v1/files/1", headers={"Authorization": f"Bearer {token}"})
    response = c.getresponse()
    assert response.status == 200
    with pytest.raises(http.client.IncompleteRead):
        response.read()
    c.close()
    with open_context(repo_dir) as ctx, ctx.engine.connect() as conn:
        states = dict(conn.execute(replicas.select().with_only_columns(
            replicas.c.storeid, replicas.c.state).where(replicas.c.checksum == checksum)).all())
    assert states[first.row.storeid] == "SUSPECT"
    response, body = get(service.connect(), "/v1/files/1", ("Authorization", f"Bearer {token}"))
    assert response.status == 200 and body == sources[0].read_bytes()


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except (TimeoutError, ConnectionResetError):
        return False
    return True


@pytest.mark.slow
def test_a_slow_head_is_dropped(service: Service) -> None:
    with socket.create_connection(("127.0.0.1", service.port)) as slow, \
            socket.create_connection(("127.0.0.1", service.port)) as silent:
        slow.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        assert _closed_within(slow, 20)
        assert _closed_within(silent, 1)  # a connection that says nothing: dropped as soon


def test_an_oversized_head_is_refused(service: Service) -> None:
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        with contextlib.suppress(ConnectionError):  # the server may stop reading first
            sock.sendall(b"X-Pad: " + b"a" * 100_000 + b"\r\n\r\n")
        sock.settimeout(10)
        answer = b""
        with contextlib.suppress(ConnectionError):
            while chunk := sock.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_service_client(service: Service, sources: list[Path], token: str, tmp_path: Path) -> None:
    client = ServiceClient(service.url, token)
    assert client.health()["status"] == "ok"
    assert client.meta(2)["size"] == 1000
    stream, headers = client.open_file(1)
    with stream:
        assert stream.read() == sources[0].read_bytes()
    assert headers["etag"] == f'"{hash_file(sources[0])[0]}"'
    stream, _ = client.open_blob(hash_file(sources[1])[0])
    with stream:
        assert stream.read() == sources[1].read_bytes()
    with pytest.raises(FileAbsent):
        client.meta(99)
    with pytest.raises(RepoError, match=r"refused the token \(401.*TREADLE_REPO_TOKEN"):
        ServiceClient(service.url, None).meta(1)
    token_file = tmp_path / "t"
    token_file.write_text("trt_wrong\n")
    with pytest.raises(RepoError, match=f"--token-file {token_file}"):
        ServiceClient(service.url, "trt_wrong", token_source=f"--token-file {token_file}").meta(1)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(StoreUnreachable):
        ServiceClient(f"http://127.0.0.1:{port}", token).health()


@pytest.fixture
def store_service(repo_dir: Path, sources: list[Path], tmp_path: Path) -> Iterator[tuple[Service, str, str]]:
    """Store ``b`` served with ``--store``: (service, write token, read token)."""
    store_dir = repo_dir / "stores" / "b"
    writer, _ = create_token(store_dir, "write")
    reader, _ = create_token(store_dir, "read")
    server = Service(["--store", str(store_dir)], tmp_path / "store.log")
    yield server, writer, reader
    assert server.stop() == 0, server.log()


def test_put_into_a_served_store_is_verified(store_service: tuple[Service, str, str], repo_dir: Path,
                                             make_files: Callable[..., list[Path]]) -> None:
    service, writer, reader = store_service
    with open_context(repo_dir) as ctx:
        uuid = ctx.config.uuid
    store = HttpStore("b", service.url, writer, repo_uuid=uuid)
    store.check()
    with pytest.raises(StoreUnreachable, match="another repository"):
        HttpStore("b", service.url, writer, repo_uuid="someone-else").check()
    source = make_files(1, size=200_000, prefix="put")[0]
    checksum, size = hash_file(source)
    assert store.size_of(checksum) is None
    assert store.put_file(source, checksum, size).created
    assert store.size_of(checksum) == size
    assert not store.put_file(source, checksum, size).created  # HEAD first: not sent again
    with store.open_read(checksum) as f:
        assert f.read() == source.read_bytes()
    other = make_files(1, size=1000, prefix="other")[0]
    wrong = "sha256:" + "ab" * 32
    with pytest.raises(RepoDataError, match="422"):
        store.put_file(other, wrong, 1000)
    assert store.size_of(wrong) is None
    assert list((repo_dir / "stores" / "b" / "tmp").iterdir()) == []
    with pytest.raises(RepoError, match="403"):
        HttpStore("b", service.url, reader).put_file(other, hash_file(other)[0], 1000)
    with pytest.raises(FileNotFoundError):
        store.open_read(wrong)
    c = service.connect()
    c.request("PUT", f"/v1/blobs/sha256/{checksum[7:]}", body=iter([b"x"]),
              headers={"Authorization": f"Bearer {writer}", "Transfer-Encoding": "chunked"})
    assert c.getresponse().status == 411


def _treadle(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        main(list(argv))
        status = 0
    except SystemExit as e:
        status = int(e.code or 0)
    return status, capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--bind", "0.0.0.0:0"], "give --tls-cert and --tls-key, or --insecure-http"),
    (["--bind", "0.0.0.0:0", "--insecure-http", "--no-auth"], "--no-auth is allowed on a loopback"),
    (["--bind", "nohost"], "bad --bind"),
])
def test_unsafe_binds_are_refused(repo_dir: Path, capsys: pytest.CaptureFixture[str],
                                  args: list[str], message: str) -> None:
    status, err = _treadle(capsys, "repo", "serve", str(repo_dir), *args)
    assert status == 1 and message in err


def test_repo_or_store_not_both(repo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, err = _treadle(capsys, "repo", "serve", str(repo_dir), "--store", str(repo_dir / "stores" / "a"))
    assert status == 1 and "one of them" in err


def test_connections_beyond_the_limit_get_503(repo_dir: Path, sources: list[Path], tmp_path: Path) -> None:
    server = Service([str(repo_dir), "--no-auth", "--max-connections", "1"], tmp_path / "serve.log")
    try:
        first = server.connect()
        assert get(first, "/v1/health")[0].status == 200  # holds the one slot, kept alive
        response, body = get(server.connect(), "/v1/health")
        assert response.status == 503 and b"too many connections" in body
        assert get(first, "/v1/files/2")[0].status == 200
        first.close()
        wait_for(lambda: get(server.connect(), "/v1/health")[0].status == 200,
                 what="the slot to be free again")
    finally:
        assert server.stop() == 0, server.log()


def test_sigterm_stops_accepting_and_exits_0(service: Service, token: str) -> None:
    idle = service.connect()
    assert get(idle, "/v1/health")[0].status == 200
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=15) == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", service.port), timeout=5)


def test_tls(repo_dir: Path, sources: list[Path], token: str, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server = Service([str(repo_dir), "--tls-cert", str(cert), "--tls-key", str(key)],
                     tmp_path / "serve.log", scheme="https")
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust the test's own certificate
        stream, _ = ServiceClient(server.url, token).open_file(1)
        with stream:
            assert stream.read() == sources[0].read_bytes()  # sendfile falls back to writes
        monkeypatch.delenv("SSL_CERT_FILE")
        with pytest.raises(StoreUnreachable, match="certificate verify failed"):
            ServiceClient(server.url, token).health()
    finally:
        assert server.stop() == 0, server.log()
