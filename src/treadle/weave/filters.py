"""Cursor expressions: filters that run as bound SQL or as tests on Files (docs/weaver.md, "Datasets")."""

from __future__ import annotations

import fnmatch
import operator
from collections.abc import Callable
from typing import Any

from treadle.weave.diagnostics import error

_HINT = "combine filters with And(...), Or(...) and Not(...), not with and/or/not or a < b < c"


class Filter:
    """A condition on a dataset's members. Python's and/or/not cannot combine these."""

    def __bool__(self) -> bool:
        raise TypeError(f"a filter has no truth value: {_HINT}")

    def fields(self) -> list[str]:
        """Field names this filter reads."""
        raise NotImplementedError

    def test(self, get: Callable[[str], Any]) -> bool:
        """Whether a member passes; ``get(name)`` reads one of its fields."""
        raise NotImplementedError

    def sql(self, column: Callable[[str], Any]) -> Any:
        """A SQLAlchemy clause; ``column(name)`` gives a validated column."""
        raise NotImplementedError


_COMPARE = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
            ">": operator.gt, ">=": operator.ge}


class Compare(Filter):
    """``field OP value`` for OP in == != < <= > >=, LIKE (%), IN (|), ALL (&), IS."""

    def __init__(self, field: str, op: str, value: Any):
        self.field = field
        self.op = op
        self.value = value

    def fields(self) -> list[str]:
        return [self.field]

    def __repr__(self) -> str:
        return f"({self.field} {self.op} {self.value!r})"

    def test(self, get: Callable[[str], Any]) -> bool:
        v = get(self.field)
        op, value = self.op, self.value
        if op in _COMPARE:
            if value is None or v is None:
                return _COMPARE[op](v, value) if op in ("==", "!=") else False
            try:
                return _COMPARE[op](v, value)
            except TypeError:
                return False
        if op == "LIKE":
            return fnmatch.fnmatchcase(str(v), str(value))
        if op == "IN":
            return v in value
        if op == "ALL":
            return all(v == x for x in value)
        if op == "IS":
            return v is value
        raise AssertionError(op)

    def sql(self, column: Callable[[str], Any]) -> Any:
        from sqlalchemy import and_, false, true

        c = column(self.field)
        op, value = self.op, self.value
        if op == "==":
            return c.is_(None) if value is None else c == value
        if op == "!=":
            return c.is_not(None) if value is None else c != value
        if op in _COMPARE:
            return _COMPARE[op](c, value)
        if op == "LIKE":
            return c.like(value)
        if op == "IN":
            return c.in_(list(value)) if value else false()
        if op == "ALL":
            return and_(*[c == x for x in value]) if value else true()
        if op == "IS":
            return c.is_(value)
        raise AssertionError(op)


class _Combination(Filter):
    """A filter made of other filters (the common part of ``And`` and ``Or``)."""

    def __init__(self, *filters: Filter):
        for f in filters:
            _check(f)
        self.filters = filters

    def fields(self) -> list[str]:
        return [n for f in self.filters for n in f.fields()]


class And(_Combination):
    """Every filter passes; ``And()`` matches everything."""

    def test(self, get: Callable[[str], Any]) -> bool:
        return all(f.test(get) for f in self.filters)

    def sql(self, column: Callable[[str], Any]) -> Any:
        from sqlalchemy import and_, true

        return and_(true(), *[f.sql(column) for f in self.filters])


class Or(_Combination):
    """Some filter passes; ``Or()`` matches nothing."""

    def test(self, get: Callable[[str], Any]) -> bool:
        return any(f.test(get) for f in self.filters)

    def sql(self, column: Callable[[str], Any]) -> Any:
        from sqlalchemy import false, or_

        return or_(false(), *[f.sql(column) for f in self.filters])


class Not(Filter):
    """The filter fails."""

    def __init__(self, f: Filter):
        _check(f)
        self.filter = f

    def fields(self) -> list[str]:
        return self.filter.fields()

    def test(self, get: Callable[[str], Any]) -> bool:
        return not self.filter.test(get)

    def sql(self, column: Callable[[str], Any]) -> Any:
        from sqlalchemy import not_

        return not_(self.filter.sql(column))


def _check(f: Any) -> None:
    if not isinstance(f, Filter):
        raise error(f"expected a filter such as ds.c.size > 10, got {f!r}")


class Field:
    """``ds.c.NAME``: builds filters with Python operators."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __eq__(self, value: object) -> Compare:  # type: ignore[override]  # builds a filter, not a bool
        return Compare(self.name, "==", value)

    def __ne__(self, value: object) -> Compare:  # type: ignore[override]  # builds a filter, not a bool
        return Compare(self.name, "!=", value)

    def __lt__(self, value: Any) -> Compare:
        return Compare(self.name, "<", value)

    def __le__(self, value: Any) -> Compare:
        return Compare(self.name, "<=", value)

    def __gt__(self, value: Any) -> Compare:
        return Compare(self.name, ">", value)

    def __ge__(self, value: Any) -> Compare:
        return Compare(self.name, ">=", value)

    def __mod__(self, pattern: Any) -> Compare:
        return Compare(self.name, "LIKE", pattern)

    def __or__(self, values: Any) -> Compare:
        return Compare(self.name, "IN", tuple(values))

    def __and__(self, values: Any) -> Compare:
        return Compare(self.name, "ALL", tuple(values))

    def is_(self, value: Any) -> Compare:
        return Compare(self.name, "IS", value)

    def __bool__(self) -> bool:
        raise TypeError(f"a field has no truth value: {_HINT}")

    __hash__ = None  # type: ignore[assignment]  # equality builds a filter: no hash

    def __repr__(self) -> str:
        return f"Field({self.name!r})"


class Cursor:
    """``ds.c``: any attribute is a Field."""

    def __getattr__(self, name: str) -> Field:
        if name.startswith("__"):
            raise AttributeError(name)
        return Field(name)
