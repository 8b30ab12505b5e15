"""The archive of finished rules (``--archive``): results stored by what made them, restored instead of rerun.

A rule's key is a SHA-256 over what decides its results: its command (as
written, not wrapped), the variables it exports, its container image, the
names of its outputs, and the name and SHA-256 of each input's contents. Two
rules with one key, in this workflow or another, make the same files.

On disk (``DIR`` is ``--archive-dir``)::

    DIR/objects/ab/cdef...   one file per distinct output content, named by its SHA-256
    DIR/rules/12/3456...     one JSON manifest per key: each output's name, SHA-256 and size
    DIR/tmp/                 files being written; renamed into place when complete

Objects are written before the manifest that names them, and every file is
written to ``tmp/`` and renamed, so a reader sees a complete entry or none,
and two runs storing the same entry at once both succeed (the second rename
replaces identical bytes). A restore copies each object to a temporary name
beside the output, hashing as it copies, and renames it into place only when
every output matched its hash: a damaged object is a miss and the rule runs.

The pure parts (:func:`rule_key`, :func:`manifest_text`, :func:`parse_manifest`)
take values; :class:`Archive` does the I/O.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

KEY_VERSION = 1  # part of every key: a change to what keys cover makes old entries misses, never wrong hits
BLOCK = 1 << 20  # bytes read at a time when hashing or copying


@dataclass(frozen=True, slots=True)
class Stored:
    """One output of an archived rule."""

    name: str
    sha256: str
    size: int


def default_dir(environ: Mapping[str, str] | None = None) -> str:
    """``$XDG_CACHE_HOME/treadle/archive`` (else ``~/.cache/treadle/archive``).

    The reference's ``/tmp/makeflow.archive.UID`` lives in a directory every
    user can write, where another user could plant entries before ours exist;
    the user's cache directory is private.
    """
    env = os.environ if environ is None else environ
    cache = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "treadle", "archive")


def rule_key(command: str, environment: Mapping[str, str], container: str, outputs: Sequence[str],
             inputs: Iterable[tuple[str, str]]) -> str:
    """The key of a rule: a SHA-256 over what decides its results (``inputs``: (name, sha256) pairs)."""
    what = {
        "version": KEY_VERSION,
        "command": command,
        "environment": sorted(environment.items()),
        "container": container,
        "outputs": list(outputs),
        "inputs": sorted(inputs),
    }
    text = json.dumps(what, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def manifest_text(key: str, outputs: Sequence[Stored]) -> str:
    """The manifest of one entry, as JSON."""
    return json.dumps({"key": key, "outputs": [{"name": o.name, "sha256": o.sha256, "size": o.size}
                                                for o in outputs]}, ensure_ascii=False, indent=1)


def parse_manifest(key: str, text: str, names: Sequence[str]) -> list[Stored] | None:
    """The outputs a manifest lists, or ``None`` when it is not a well-formed entry for ``key`` and ``names``."""
    try:
        data = json.loads(text)
        if data["key"] != key:
            return None
        outputs = [Stored(str(o["name"]), str(o["sha256"]), int(o["size"])) for o in data["outputs"]]
    except (ValueError, KeyError, TypeError):
        return None
    if [o.name for o in outputs] != list(names):
        return None
    if any(len(o.sha256) != 64 or not all(c in "0123456789abcdef" for c in o.sha256) for o in outputs):
        return None
    return outputs


def file_sha256(path: str) -> str | None:
    """The SHA-256 of a regular file's contents, or ``None`` for anything else (a directory, a missing file)."""
    try:
        with open(path, "rb") as f:
            if not os.path.isfile(path):
                return None
            h = hashlib.sha256()
            for block in iter(lambda: f.read(BLOCK), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


class Archive:
    """One archive directory: look a key up and restore its outputs, or store a finished rule's outputs."""

    def __init__(self, root: str):
        self.root = root

    def _path(self, kind: str, digest: str) -> str:
        return os.path.join(self.root, kind, digest[:2], digest[2:])

    def _temp(self) -> tuple[int, str]:
        tmp = os.path.join(self.root, "tmp")
        os.makedirs(tmp, exist_ok=True)
        return tempfile.mkstemp(dir=tmp, prefix="part.")

    def _publish(self, temp: str, final: str) -> None:
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.rename(temp, final)

    def restore(self, key: str, names: Sequence[str]) -> str | None:
        """Put the outputs stored under ``key`` at ``names``: ``None`` when done, else why not.

        No output is touched unless every one of them was copied and matched
        its hash.
        """
        try:
            with open(self._path("rules", key), encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return "not in the archive"
        except OSError as e:
            return f"cannot read the archive entry: {e.strerror}"
        outputs = parse_manifest(key, text, names)
        if outputs is None:
            return "the archive entry is malformed"
        copied: list[tuple[str, str]] = []
        try:
            for o in outputs:
                temp = _copy_verified(self._path("objects", o.sha256), o)
                if temp is None:
                    return f"the archived copy of {o.name} does not match its hash"
                copied.append((temp, o.name))
            for temp, name in copied:
                os.replace(temp, name)
            copied.clear()
        except OSError as e:
            return f"cannot restore from the archive: {e.strerror}"
        finally:
            for temp, _ in copied:
                _unlink(temp)
        return None

    def store(self, key: str, names: Sequence[str]) -> str | None:
        """Store the files ``names`` (a finished rule's outputs) under ``key``: ``None`` when done, else why not.

        A rule with an output that is not a regular file (a directory) is not
        archived.
        """
        outputs: list[Stored] = []
        try:
            for name in names:
                if not os.path.isfile(name):
                    return f"{name} is not a regular file"
                stored = self._store_object(name)
                if stored is None:
                    return f"{name} changed while it was archived"
                outputs.append(stored)
            fd, temp = self._temp()
            try:
                with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
                    f.write(manifest_text(key, outputs))
                    f.flush()
                    os.fsync(f.fileno())
                self._publish(temp, self._path("rules", key))
            except BaseException:
                _unlink(temp)
                raise
        except OSError as e:
            return f"cannot write to the archive {self.root}: {e.strerror}"
        return None

    def _store_object(self, name: str) -> Stored | None:
        """Copy one file into ``objects/`` under its hash (hashed while copied)."""
        fd, temp = self._temp()
        try:
            h = hashlib.sha256()
            size = 0
            with open(name, "rb") as src, os.fdopen(fd, "wb") as dst:
                for block in iter(lambda: src.read(BLOCK), b""):
                    h.update(block)
                    size += len(block)
                    dst.write(block)
                dst.flush()
                os.fsync(dst.fileno())
            digest = h.hexdigest()
            if os.path.getsize(temp) != size:
                _unlink(temp)
                return None
            final = self._path("objects", digest)
            if os.path.exists(final) and _matches(final, digest):
                _unlink(temp)
            else:
                self._publish(temp, final)
        except BaseException:
            _unlink(temp)
            raise
        return Stored(name, digest, size)


def _copy_verified(obj: str, out: Stored) -> str | None:
    """A copy of ``obj`` at a temporary name beside ``out.name``, or ``None`` when its bytes are not ``out``'s."""
    folder = os.path.dirname(out.name) or "."
    os.makedirs(folder, exist_ok=True)
    try:
        src = open(obj, "rb")
    except FileNotFoundError:
        return None
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(out.name)}.restore.")
    try:
        h = hashlib.sha256()
        size = 0
        with src, os.fdopen(fd, "wb") as dst:
            for block in iter(lambda: src.read(BLOCK), b""):
                h.update(block)
                size += len(block)
                dst.write(block)
        if h.hexdigest() != out.sha256 or size != out.size:
            _unlink(temp)
            return None
        os.chmod(temp, 0o666 & ~_umask())
    except BaseException:
        _unlink(temp)
        raise
    return temp


def _matches(path: str, digest: str) -> bool:
    return file_sha256(path) == digest


@functools.cache
def _umask() -> int:
    """The process's umask (read once: reading it means setting it, which is not thread-safe)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
