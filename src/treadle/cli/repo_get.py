"""``treadle repo get``: copy files out of a repository or a service, verified (docs/repo.md).

Every file lands under a temp name, is hashed as it arrives and is renamed only when it
matches its checksum, so nothing unverified ever carries a final name. One file that cannot
be had (absent, corrupt everywhere, unreachable) is named on stderr and the others are still
written; the exit status is then 2.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Protocol

import click

from treadle.cli.ranges import TIMEOUT
from treadle.errors import RepoDataError, RepoError, UsageError

_FILEID = r"[1-9][0-9]{0,18}"
_VPATH = re.compile(rf"(?P<mount>/.*)/fileid/(?P<fileid>{_FILEID})")


def parse_file_argument(text: str, mount: Callable[[], str]) -> int:
    """A fileid given as a number or as the vpath ``<mount>/fileid/<N>``; UsageError otherwise.

    ``mount`` is asked only for a vpath (with ``--from`` it costs a request to the service).
    """
    if re.fullmatch(_FILEID, text):
        return int(text)
    match = _VPATH.fullmatch(text)
    if match is None:
        raise UsageError(f"not a fileid or vpath: {text!r} (expected N or MOUNT/fileid/N)")
    expected = mount().rstrip("/")
    if match.group("mount").rstrip("/") != expected:
        raise UsageError(f"{text!r} is not under this repository's mount {expected}")
    return int(match.group("fileid"))


class _Source(Protocol):
    """Where files come from: a repository directory, or a service with ``--from``."""

    def mount(self) -> str: ...

    def save(self, fileid: int, directory: Path) -> Path:
        """Write file ``fileid`` verified into ``directory``; return its path."""
        ...

    def close(self) -> None: ...


def _warn(line: str) -> None:
    click.echo(f"treadle: {line}", err=True)


class _RepositorySource:
    """Files read from the repository's own stores, through treadle.repo.fetch."""

    def __init__(self, repo: str, timeout: float):
        from treadle.repo.context import open_context

        self.ctx = open_context(repo)
        self.timeout = timeout

    def mount(self) -> str:
        return self.ctx.config.mount

    def save(self, fileid: int, directory: Path) -> Path:
        from treadle.repo.fetch import save_file

        return save_file(self.ctx, fileid, directory, timeout=self.timeout, report=_warn)

    def close(self) -> None:
        self.ctx.close()


class _ServiceSource:
    """Files read from a ``treadle repo serve``, verified here against the checksum it states."""

    def __init__(self, url: str, token_file: str | None, timeout: float):
        from treadle.repo.client import ServiceClient, describe_token_source, read_token

        self.client = ServiceClient(url, read_token(token_file), timeout,
                                    token_source=describe_token_source(token_file))
        self._mount: str | None = None

    def mount(self) -> str:
        if self._mount is None:
            self._mount = str(self.client.health().get("mount", "/bxgrid"))
        return self._mount

    def save(self, fileid: int, directory: Path) -> Path:
        from treadle.repo.checksums import parse_checksum
        from treadle.repo.fetch import output_name, save_stream

        meta = self.client.meta(fileid)
        try:
            checksum, size = str(meta["checksum"]), int(meta["size"])
            parse_checksum(checksum)
            dest = directory / output_name(fileid, str(meta.get("extension") or ""))
        except (KeyError, TypeError, ValueError, RepoError) as e:
            raise RepoDataError(f"{self.client.url}: a bad answer about fileid {fileid}: {e}") from None
        stream, _ = self.client.open_file(fileid)
        with closing(stream):
            save_stream(stream, checksum, size, dest)
        return dest

    def close(self) -> None:
        pass


@click.command(name="get")
@click.argument("arguments", nargs=-1, required=True, metavar="(REPO | --from URL) FILEID|VPATH...")
@click.option("--from", "service_url", metavar="URL", help="Read through a treadle repo serve at URL.")
@click.option("-o", "--output", default=".", show_default=True, metavar="DIR|-",
              help="Directory to write <fileid>.<ext> into (made if missing); - writes one file to stdout.")
@click.option("--timeout", type=TIMEOUT, default=60.0, show_default=True,
              metavar="S", help="Retry unreachable stores for up to S seconds; wait at most min(10, S) s for "
                   "any one answer.")
@click.option("--token-file", metavar="FILE",
              help="Token for --from (else $TREADLE_REPO_TOKEN or $TREADLE_REPO_TOKEN_FILE).")
def command(arguments: tuple[str, ...], service_url: str | None, output: str, timeout: float,
            token_file: str | None) -> None:
    """Copy files out of a repository, verified, by fileid or vpath.

    Each file is written as DIR/<fileid>.<ext> through a temp name, and renamed only once its
    bytes match the checksum the repository recorded; a replica with wrong bytes is skipped and
    marked SUSPECT. Exit status 2 when any file was absent, corrupt in every replica or
    unreachable (each named on stderr; the others are still written). See docs/repo.md.

    \b
    Examples:
      treadle repo get images.repo 17 18 -o out/
      treadle repo get images.repo /bxgrid/fileid/17 -o - > 17.jpg
      treadle repo get --from http://127.0.0.1:8765 17 --token-file token.txt
    """
    if service_url is None and len(arguments) < 2:
        raise UsageError("give REPO and at least one FILEID or VPATH (or --from URL)")
    items = arguments if service_url is not None else arguments[1:]
    if output == "-" and len(items) != 1:
        raise UsageError("-o - writes exactly one file to stdout")
    source: _Source = (_ServiceSource(service_url, token_file, timeout) if service_url is not None
                       else _RepositorySource(arguments[0], timeout))
    try:
        fileids = [parse_file_argument(item, source.mount) for item in items]
        if output == "-":
            _to_stdout(source, fileids[0])
        else:
            _to_directory(source, fileids, Path(output))
    finally:
        source.close()


def _to_directory(source: _Source, fileids: list[int], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    failed = 0
    for fileid in fileids:
        try:
            source.save(fileid, directory)
        except RepoDataError as e:
            failed += 1
            _warn(f"fileid {fileid}: {e}")
    if failed:
        raise RepoDataError(f"{failed} of {len(fileids)} files not written")


def _to_stdout(source: _Source, fileid: int) -> None:
    """Verify the whole file in a temp directory first: bytes sent to a pipe cannot be taken back."""
    with tempfile.TemporaryDirectory(prefix="treadle-get-") as scratch:
        try:
            path = source.save(fileid, Path(scratch))
        except RepoDataError as e:
            raise type(e)(f"fileid {fileid}: {e}") from None
        with open(path, "rb") as f:
            shutil.copyfileobj(f, sys.stdout.buffer)
        sys.stdout.buffer.flush()
