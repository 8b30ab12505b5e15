"""Datasets: lazily generated, ordered lists of Files (docs/weaver.md, "Datasets").

A dataset is generated at most once per compile, on first iteration, and its
member list is written to a stash file (``cache_path``). ``ds.NAME`` is
``ds.c.NAME`` for names the dataset does not define, which is why every
dataset keeps its own state in underscore-prefixed attributes.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterator
from functools import partial
from typing import Any

from treadle.weave.diagnostics import error, user_site, warn
from treadle.weave.filters import Cursor, Field, Filter, _check
from treadle.weave.nest import CurrentNest, File

log = logging.getLogger("treadle.weave.dataset")


class Dataset:
    """The base class: iterable, with a field cursor ``c``, a ``nest`` and a ``cache_path``."""

    def __init__(self) -> None:
        self._nest = CurrentNest()
        self._members: list[File] | None = None
        self._cache_path: str | None = None

    @property
    def c(self) -> Cursor:
        return Cursor()

    @property
    def nest(self) -> Any:
        return self._nest

    @property
    def cache_path(self) -> str | None:
        return self._cache_path

    def __getattr__(self, name: str) -> Field:
        if name.startswith("_"):
            raise AttributeError(name)
        return Field(name)

    def _generate(self) -> Iterator[File]:
        """Yield the members, once; subclasses implement this."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[File]:
        if self._members is None:
            members = list(self._generate())
            path = self._nest.stash.next()
            with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
                for m in members:
                    f.write(m.dag + "\n")
            self._cache_path = path
            self._members = members
            log.debug("%r: %d members, listed in %s", self, len(members), path)
            if not members:
                self._warn_empty()
        return iter(self._members)

    def __bool__(self) -> bool:
        return True

    def _sql_source(self) -> Any:
        """The SQL dataset this one compiles into, or None for file datasets."""
        return None

    def _warn_empty(self) -> None:
        """Called when the dataset turned out empty; datasets that select say so (at their line)."""


class _Selection(Dataset):
    """A dataset that selects from something bigger, so an empty result is most likely a mistake.

    A pattern with a typo or a filter that matches nothing would otherwise compile to
    a DAG without those rules and fail, or do nothing, at run time, far from the cause;
    the warning names the script line that made the selection (an error under ``-W``).
    """

    _empty_words = "selects nothing"

    def __init__(self) -> None:
        super().__init__()
        self._site = user_site()

    def _warn_empty(self) -> None:
        warn(f"{self!r} {self._empty_words}", self._site)


class Glob(_Selection):
    """The files matching ``expr`` (``**`` allowed), sorted (**change**: not directory order)."""

    _empty_words = "matches no files"

    def __init__(self, expr: str):
        super().__init__()
        self._expr = os.fspath(expr)

    def _generate(self) -> Iterator[File]:
        nest = self._nest
        for path in sorted(glob.glob(self._expr, recursive=True)):
            yield File(path, nest)

    def __repr__(self) -> str:
        return f"Glob({self._expr!r})"


class FileList(Dataset):
    """One path per line of a file; blank and ``#`` lines skipped. The file is the cache.

    Members are streamed from the file on every iteration, so a list of a million
    paths never sits in memory.
    """

    def __init__(self, path: str):
        super().__init__()
        self._path = os.path.abspath(os.fspath(path))
        if not os.path.isfile(self._path):
            raise error(f"FileList: {path} does not exist")
        self._cache_path = self._path

    def __iter__(self) -> Iterator[File]:
        nest = self._nest
        with open(self._path, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                line = line.rstrip("\n").rstrip("\r")
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                yield File(line, nest)

    def __repr__(self) -> str:
        return f"FileList({self._path!r})"


class Query(_Selection):
    """The members of ``dataset`` that pass every filter, in order, up to ``limit``."""

    def __init__(self, dataset: Dataset, *filters: Filter, limit: int | None = None,
                 fields: list[str] | None = None, path: Any = None, order_by: Any = None):
        super().__init__()
        if not isinstance(dataset, Dataset):
            raise error(f"Query needs a dataset first, got {dataset!r}")
        for f in filters:
            _check(f)
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise error(f"limit must be a whole number >= 0, got {limit!r}")
        self._dataset = dataset
        self._filters = filters
        self._limit = limit
        self._fields = fields
        self._path = path
        self._order_by = order_by

    def _sql_source(self) -> Any:
        return self._dataset._sql_source()

    def _generate(self) -> Iterator[File]:
        source = self._sql_source()
        if source is not None:
            yield from source._run_query(self)
            return
        count = 0
        if self._limit == 0:
            return
        for f in self._dataset:
            if all(flt.test(partial(_file_field, f)) for flt in self._filters):
                yield f
                count += 1
                if self._limit is not None and count >= self._limit:
                    return

    def __repr__(self) -> str:
        return f"Query({self._dataset!r}, {', '.join(map(repr, self._filters))})"


def _file_field(f: File, name: str) -> Any:
    try:
        return getattr(f, name)
    except AttributeError:
        raise error(f"{f.path} has no attribute {name!r} to filter on") from None
