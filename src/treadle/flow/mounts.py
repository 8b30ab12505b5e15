"""``--mounts FILE`` and ``--cache DIR``: files the workflow names, fetched once before the run.

A mount file has one ``TARGET SOURCE`` pair a line (``#`` starts a comment):
TARGET is the name the workflow uses, SOURCE a local path or an ``http(s)``
URL. Each source is fetched into the cache under the SHA-256 of its name,
checked (the size the server announced), its content's SHA-256 recorded
beside it, then hard-linked (else copied) to TARGET. A source already in the
cache with its recorded digest intact is not fetched again. Any failure is a
:class:`~treadle.errors.UsageError` naming the file and line, raised before
anything runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass

from treadle.errors import UsageError

FETCH_TIMEOUT = 60  # seconds without a byte from a server before the fetch is given up
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of a mount file."""

    target: str
    source: str
    where: str  # FILE:LINE, for messages

    @property
    def is_url(self) -> bool:
        return self.source.startswith(("http://", "https://"))


def parse_mounts(path: str) -> list[Mount]:
    """The mounts of ``path``; a malformed line is an error naming ``path:LINE``."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UsageError(f"cannot read --mounts file {path}: {e.strerror}") from None
    mounts: list[Mount] = []
    seen: set[str] = set()
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        where = f"{path}:{n}"
        words = text.split()
        if len(words) != 2:
            raise UsageError(f"{where}: error: expected 'TARGET SOURCE', got {text!r}")
        target, source = words
        norm = os.path.normpath(target)
        if os.path.isabs(target) or norm == ".." or norm.startswith("../"):
            raise UsageError(f"{where}: error: the target {target} must be a name inside the workflow's directory")
        if norm in seen:
            raise UsageError(f"{where}: error: the target {target} is mounted twice")
        seen.add(norm)
        mounts.append(Mount(norm, source, where))
    return mounts


def prepare_mounts(mounts: list[Mount], cache_dir: str) -> list[tuple[Mount, str, str]]:
    """Fetch every source into ``cache_dir`` (once) and link it to its target.

    Returns (mount, cache name, SHA-256) for each mount, in order.
    """
    os.makedirs(cache_dir, exist_ok=True)
    done = []
    for m in mounts:
        name = hashlib.sha256(m.source.encode()).hexdigest()
        cached = os.path.join(cache_dir, name)
        digest = _cached_digest(cached)
        if digest is None:
            digest = _fetch(m, cached)
        _place(m, cached)
        done.append((m, name, digest))
    return done


def _cached_digest(cached: str) -> str | None:
    """The recorded SHA-256 of a cached file whose content still matches it, else ``None``."""
    try:
        with open(cached + ".sha256", encoding="ascii") as f:
            recorded = f.read().strip()
        return recorded if _sha256(cached) == recorded else None
    except OSError:
        return None


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fetch(m: Mount, cached: str) -> str:
    """Copy or download ``m.source`` to ``cached`` (via a temporary name); its SHA-256."""
    part = f"{cached}.part.{os.getpid()}"
    h = hashlib.sha256()
    size = 0
    try:
        if m.is_url:
            try:
                with urllib.request.urlopen(m.source, timeout=FETCH_TIMEOUT) as r, open(part, "wb") as out:
                    announced = r.headers.get("Content-Length")
                    while chunk := r.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
            except urllib.error.HTTPError as e:
                raise UsageError(f"{m.where}: cannot fetch {m.source}: HTTP {e.code} {e.reason}") from None
            except (urllib.error.URLError, OSError, ValueError) as e:
                why = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
                raise UsageError(f"{m.where}: cannot fetch {m.source}: {why}") from None
            if announced is not None and announced.isdigit() and int(announced) != size:
                raise UsageError(f"{m.where}: {m.source} sent {size} bytes of the {announced} it announced")
        else:
            try:
                shutil.copyfile(m.source, part)
            except OSError as e:
                raise UsageError(f"{m.where}: cannot read {m.source}: {e.strerror}") from None
        digest = h.hexdigest() if m.is_url else _sha256(part)
        os.replace(part, cached)
        with open(cached + ".sha256", "w", encoding="ascii") as f:
            f.write(digest + "\n")
        return digest
    finally:
        if os.path.exists(part):
            os.unlink(part)


def _place(m: Mount, cached: str) -> None:
    """Put the cached file at the mount's target: a hard link where possible, else a copy."""
    os.makedirs(os.path.dirname(m.target) or ".", exist_ok=True)
    tmp = f"{m.target}.mount.{os.getpid()}"
    try:
        try:
            os.link(cached, tmp)
        except OSError:
            shutil.copyfile(cached, tmp)
        os.replace(tmp, m.target)
    except OSError as e:
        raise UsageError(f"{m.where}: cannot place {m.target}: {e.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
