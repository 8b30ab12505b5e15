"""The client of ``treadle repo serve``'s read service: files, blobs and metadata by HTTP.

``get --from`` and vfs read through :class:`ServiceClient`; ``treadle.repo.remote.HttpStore`` is a
store over the same requests. This module needs nothing but the standard library (no database
driver), so a vfs run that reads only from services starts quickly (docs/repo.md). Status codes
carry the service's contract: only a 404 means "absent" (:class:`FileAbsent`); a refused
connection, a timeout or a 5xx is :class:`StoreUnreachable`, so a reader never takes a server that
is down for a file that is gone.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit

from treadle.errors import FileAbsent, RepoDataError, RepoError, StoreUnreachable
from treadle.repo.checksums import CHUNK, parse_checksum

TOKEN_ENV = "TREADLE_REPO_TOKEN"
TOKEN_FILE_ENV = "TREADLE_REPO_TOKEN_FILE"


def read_token(token_file: str | None = None) -> str | None:
    """The bearer token a client sends: ``--token-file``, else ``$TREADLE_REPO_TOKEN``, else the
    file named by ``$TREADLE_REPO_TOKEN_FILE``; None when none is set.

    Never from a command-line value: other users see argv in ``ps``.
    """
    path = token_file or (None if os.environ.get(TOKEN_ENV) else os.environ.get(TOKEN_FILE_ENV))
    if path is None:
        return os.environ.get(TOKEN_ENV) or None
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise RepoError(f"cannot read the token file {path}: {e.strerror}") from None
    if not token:
        raise RepoError(f"the token file {path} is empty")
    return token


def describe_token_source(token_file: str | None = None) -> str:
    """Where :func:`read_token` takes the token from, for messages about a refused token."""
    if token_file:
        return f"--token-file {token_file}"
    if os.environ.get(TOKEN_ENV):
        return f"${TOKEN_ENV}"
    if os.environ.get(TOKEN_FILE_ENV):
        return f"${TOKEN_FILE_ENV} ({os.environ[TOKEN_FILE_ENV]})"
    return f"no token (set {TOKEN_ENV} or {TOKEN_FILE_ENV})"


def _error_text(response: http.client.HTTPResponse) -> str:
    """The ``error`` of a JSON error body, else the reason phrase."""
    try:
        body = json.loads(response.read(64 * 1024))
        return str(body["error"])
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
        return response.reason


class ServiceClient:
    """Requests to one ``treadle repo serve``, one connection per request.

    One connection per request keeps a returned body stream independent of the next request;
    the service is meant for whole files, where a connection set-up is small beside the body.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 10.0, *,
                 token_source: str | None = None):
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
            raise RepoError(f"not a service URL: {url!r} (expected http(s)://HOST:PORT)")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.token_source = token_source or describe_token_source()
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port
        self._prefix = parts.path.rstrip("/")

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout,
                                               context=ssl.create_default_context(),
                                               blocksize=CHUNK)
        # blocksize: a PUT body is read and sent in 1 MiB pieces, not http.client's 8 KiB
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout,
                                          blocksize=CHUNK)

    def request(self, method: str, path: str, *, body: BinaryIO | None = None,
                headers: dict[str, str] | None = None,
                absent_ok: bool = False) -> http.client.HTTPResponse:
        """Send one request and return its response, status checked.

        404 raises FileAbsent (or returns the response when ``absent_ok``); 401/403 RepoError
        naming where the token came from; 5xx, refusals and timeouts StoreUnreachable. The
        caller reads and closes the response (closing it closes the connection).
        """
        sent = dict(headers or {})
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        connection = self._connection()
        try:
            connection.request(method, self._prefix + path, body=body, headers=sent)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as e:
            connection.close()
            raise StoreUnreachable(f"{self.url}: {_reason(e)}") from None
        status = response.status
        if status < 300 or status == 304 or (status == 404 and absent_ok):
            return response
        try:
            text = _error_text(response)
        finally:
            response.close()
            connection.close()
        if status == 404:
            raise FileAbsent(f"{self.url}{path}: {text}")
        if status in (401, 403):
            raise RepoError(f"{self.url} refused the token ({status} {text}): token from "
                            f"{self.token_source}")
        if status >= 500:
            raise StoreUnreachable(f"{self.url}{path}: {status} {text}")
        raise RepoDataError(f"{self.url}{path}: {status} {text}")

    def _json(self, path: str) -> dict[str, Any]:
        response = self.request("GET", path)
        try:
            data = json.loads(response.read())
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise StoreUnreachable(f"{self.url}{path}: a bad answer: {_reason(e)}") from None
        finally:
            response.close()
        if not isinstance(data, dict):
            raise StoreUnreachable(f"{self.url}{path}: a bad answer: not a JSON object")
        return data

    def health(self) -> dict[str, Any]:
        """``/v1/health``: status, uuid, format, schema and mount (a store server: its uuids)."""
        return self._json("/v1/health")

    def meta(self, fileid: int) -> dict[str, Any]:
        """``/v1/meta/<fileid>``: the file's size, checksum, extension, media type, dates, state."""
        return self._json(f"/v1/meta/{int(fileid)}")

    def open_file(self, fileid: int) -> tuple[BinaryIO, dict[str, str]]:
        """A GET of file ``fileid``: the body stream (unverified) and the headers, names lower-cased."""
        return self._open(f"/v1/files/{int(fileid)}")

    def open_blob(self, checksum: str) -> tuple[BinaryIO, dict[str, str]]:
        """A GET of the object named ``checksum``: the body stream (unverified) and the headers."""
        return self._open(blob_path(checksum))

    def _open(self, path: str) -> tuple[BinaryIO, dict[str, str]]:
        response = self.request("GET", path)
        headers = {name.lower(): value for name, value in response.getheaders()}
        return cast(BinaryIO, response), headers


def blob_path(checksum: str) -> str:
    """The service path of an object; RepoError for a malformed checksum."""
    return f"/v1/blobs/sha256/{parse_checksum(checksum)}"


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


