"""Loading the two sets of an All-Pairs run: list files, directories, or anything
iterable of paths (Weaver datasets included)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from treadle.errors import AllPairsError


@dataclass(frozen=True)
class ItemSet:
    """An ordered list of items. ``names`` are the entries as listed (they appear in the
    output); ``paths`` are what F is given. For list files the two are the same."""

    names: tuple[str, ...]
    paths: tuple[str, ...]
    origin: str

    def __len__(self) -> int:
        return len(self.names)


def read_list_file(path: str | os.PathLike) -> ItemSet:
    """One path per line; blank and ``#`` lines skipped; tab or CR in a path refused."""
    try:
        with open(path, encoding="utf-8", newline="\n") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        raise AllPairsError(f"set list {os.fspath(path)} does not exist") from None
    except UnicodeDecodeError as e:
        raise AllPairsError(f"set list {os.fspath(path)} is not UTF-8 text: {e}") from None
    except IsADirectoryError:
        raise AllPairsError(f"set list {os.fspath(path)} is a directory, not a list file") from None
    if lines and lines[-1] == "":
        lines.pop()
    names = []
    for number, line in enumerate(lines, 1):
        if not line or line.startswith("#"):
            continue
        if "\t" in line or "\r" in line:
            raise AllPairsError(
                f"{os.fspath(path)}:{number}: a path may not contain a tab or carriage return")
        names.append(line)
    return _checked(tuple(names), tuple(names), os.fspath(path))


def read_directory(path: str | os.PathLike) -> ItemSet:
    """The regular files directly inside a directory, sorted by name (hidden ones skipped)."""
    base = os.fspath(path)
    names = tuple(os.path.join(base, name) for name in sorted(os.listdir(base))
                  if not name.startswith(".") and os.path.isfile(os.path.join(base, name)))
    return _checked(names, names, base)


def _entry(item: object) -> str:
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    path = getattr(item, "path", None)
    if isinstance(path, (str, os.PathLike)):
        return os.fspath(path)
    return str(item)


def load_set(source: object) -> ItemSet:
    """A list file's path, a directory, or any iterable of paths, ``Path``s, Weaver ``File``s
    or a dataset."""
    if isinstance(source, ItemSet):
        return source
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        return read_directory(source)
    if isinstance(source, (str, os.PathLike)):
        return read_list_file(source)
    if not isinstance(source, Iterable):
        raise AllPairsError(f"a set must be a list file or an iterable of paths, not "
                            f"{type(source).__name__}")
    names = tuple(_entry(item) for item in source)
    for name in names:
        if "\t" in name or "\r" in name or "\n" in name:
            raise AllPairsError(f"item {name!r}: a path may not contain a tab, newline or "
                                "carriage return")
    return _checked(names, names, type(source).__name__)


def _checked(names: tuple[str, ...], paths: tuple[str, ...], origin: str) -> ItemSet:
    if not names:
        raise AllPairsError(f"set {origin} is empty")
    for path in paths:
        if not os.path.isfile(path):
            what = "is not a regular file" if os.path.exists(path) else "does not exist"
            raise AllPairsError(f"item {path!r} of set {origin} {what}")
    return ItemSet(names, paths, origin)
