"""Files: a path plus the nest it belongs to, with lazily stat'ed attributes (docs/weaver.md, "Files")."""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from treadle.weave import context
from treadle.weave.diagnostics import error

if TYPE_CHECKING:
    from treadle.weave.nest import Nest

_STAT_FIELDS = {"size": "st_size", "mtime": "st_mtime", "atime": "st_atime", "uid": "st_uid",
                "gid": "st_gid"}


def absolute(path: str) -> str:
    """``os.path.abspath`` without a ``getcwd`` call per file (compiles make millions).

    Relative paths are taken relative to the directory the compile started in.
    """
    if path[0] != "/":
        path = context.start_dir() + "/" + path
    if "/." in path or "//" in path or path.endswith("/"):
        path = os.path.normpath(path)
    return path


class File:
    """A file that may or may not exist yet. ``str(f)`` is its name in the DAG."""

    __slots__ = ("path", "abspath", "nest", "dag", "row", "_stat", "__weakref__")

    def __init__(self, path: str | os.PathLike[str], nest: Nest | None = None,
                 row: Mapping[str, Any] | None = None):
        path = os.fspath(path)
        if not path:
            raise error("a file needs a non-empty path")
        self.path = path
        self.nest = nest if nest is not None else context.CurrentNest()
        self.abspath = absolute(path)
        self.dag = self.nest.dag_name(path, self.abspath)
        self.row = row
        self._stat: os.stat_result | None = None

    @property
    def name(self) -> str:
        return os.path.basename(self.abspath)

    def __getattr__(self, attr: str) -> Any:
        if attr in _STAT_FIELDS:
            if self._stat is None:
                try:
                    self._stat = os.stat(self.abspath)
                except OSError as e:
                    raise error(f"cannot read {attr} of {self.path}: it does not exist "
                                f"(yet?): {e.strerror}") from None
            return getattr(self._stat, _STAT_FIELDS[attr])
        row = object.__getattribute__(self, "row")
        if row is not None and attr in row:
            return row[attr]
        raise AttributeError(f"File {self.path!r} has no attribute {attr!r}")

    def __str__(self) -> str:
        return self.dag

    def __repr__(self) -> str:
        return f"File({self.path!r})"

    def __fspath__(self) -> str:
        return self.abspath

    def __eq__(self, other: object) -> bool:
        return isinstance(other, File) and self.abspath == other.abspath

    def __lt__(self, other: File) -> bool:
        return self.abspath < other.abspath

    def __hash__(self) -> int:
        return hash(self.abspath)


_CACHE: weakref.WeakValueDictionary[tuple[str, int], File] = weakref.WeakValueDictionary()


def MakeFile(obj: File | str | os.PathLike[str], nest: Nest | None = None) -> File:  # noqa: N802
    """An existing File unchanged, else the one cached File per (path, nest)."""
    if isinstance(obj, File):
        return obj
    nest = nest if nest is not None else context.CurrentNest()
    key = (os.fspath(obj), id(nest))
    f = _CACHE.get(key)
    if f is None:
        f = _CACHE[key] = File(obj, nest)
    return f


def flatten(obj: Any, nest: Nest | None = None) -> Iterator[File]:
    """Every File in None / a path / a File / a dataset / nested lists of these, in order."""
    from treadle.weave.datasets import Dataset

    if obj is None:
        return
    if isinstance(obj, File):
        yield obj
    elif isinstance(obj, str | os.PathLike):
        yield MakeFile(obj, nest)
    elif isinstance(obj, Dataset):
        yield from obj
    elif isinstance(obj, Iterable) and not isinstance(obj, bytes | Mapping):
        for item in obj:
            yield from flatten(item, nest)
    else:
        raise error(f"expected files (a path, a File, a dataset or a list of them), "
                    f"got {type(obj).__name__} {obj!r}")


def file_list(obj: Any, nest: Nest | None = None) -> list[File]:
    """``flatten`` as a list."""
    return list(flatten(obj, nest))
