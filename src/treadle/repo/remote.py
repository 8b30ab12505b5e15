"""A store served over HTTP (``treadle repo serve --store DIR`` elsewhere), as the Store protocol.

The requests are :class:`treadle.repo.client.ServiceClient`'s; this module adds the store's side:
sizes by HEAD, reads, and verified PUTs (docs/repo.md, "Stores").
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from treadle.errors import FileAbsent, RepoDataError, RepoError, StoreUnreachable
from treadle.repo.client import ServiceClient, blob_path
from treadle.repo.stores import Written


class HttpStore:
    """A store that is a ``treadle repo serve --store DIR`` elsewhere (the Store protocol).

    Writes are PUTs that the server hashes as it receives them and refuses on a mismatch, so a
    repeated PUT is harmless; a HEAD first skips sending bytes that are already there.
    ``repo_uuid``, when given, must be the repository the served store belongs to.
    """

    def __init__(self, name: str, url: str, token: str | None = None, *,
                 repo_uuid: str | None = None, timeout: float = 10.0):
        self.name = name
        self.client = ServiceClient(url, token, timeout)
        self.repo_uuid = repo_uuid

    def check(self) -> None:
        """StoreUnreachable when the server is down, or serves another repository's store."""
        health = self.client.health()
        if health.get("status") != "ok":
            raise StoreUnreachable(f"store {self.name} ({self.client.url}): status "
                                   f"{health.get('status')!r}")
        if self.repo_uuid is not None and health.get("repository") != self.repo_uuid:
            raise StoreUnreachable(f"store {self.name} ({self.client.url}) belongs to another "
                                   f"repository ({health.get('repository')})")

    def size_of(self, checksum: str) -> int | None:
        """The object's size from a HEAD; None when the server says it has none."""
        response = self.client.request("HEAD", blob_path(checksum), absent_ok=True)
        response.close()
        if response.status == 404:
            return None
        length = response.getheader("Content-Length")
        if length is None or not length.isdigit():
            raise StoreUnreachable(f"store {self.name}: a HEAD without a Content-Length")
        return int(length)

    def open_read(self, checksum: str) -> BinaryIO:
        """The object's bytes as the server sends them, unverified; FileNotFoundError if absent."""
        try:
            stream, _ = self.client.open_blob(checksum)
        except FileAbsent:
            raise FileNotFoundError(f"store {self.name}: no object {checksum}") from None
        return stream

    def put_file(self, src: Path, checksum: str, size: int) -> Written:
        """Send ``src`` unless the store has it; the server verifies it against ``checksum``."""
        present = self.size_of(checksum)
        if present is not None:
            if present != size:
                raise RepoDataError(f"store {self.name}: object {checksum} has {present} bytes, "
                                    f"not {size}")
            return Written(checksum, size, None, False)
        with open(src, "rb") as body:
            response = self.client.request(
                "PUT", blob_path(checksum), body=body,
                headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})
        response.close()
        return Written(checksum, size, None, response.status == 201)

    def delete(self, checksum: str) -> None:
        """The service has no DELETE: objects of a served store are removed on its own host."""
        raise RepoError(f"store {self.name} is served over HTTP and cannot delete {checksum}: "
                        f"remove it on the store's host")

