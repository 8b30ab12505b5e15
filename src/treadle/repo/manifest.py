"""Reading what an ingest is asked to add: CSV, JSON Lines, a JSON array, or a list of files (docs/repo.md).

Every row remembers where it came from (``manifest:line``, or the path for ``--files``), so a
bad value is reported where the user can find it. A row that cannot be read is yielded with its
problem rather than raised, because ``--skip-bad`` goes on past it while a plain ingest stops its
batch. Type inference and value conversion live here too: they decide what a manifest's text
means, before any database is involved.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from treadle.errors import RepoError
from treadle.repo.schema import COLUMN_TYPES

Value = str | int | float | None  # a manifest field as read: CSV gives text, JSON numbers too
Typed = int | float | str | None  # a field converted to its column's type

PATH_FIELD = "path"
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
_REAL = re.compile(r"[+-]?(?:[0-9]+[.]?[0-9]*|[.][0-9]+)(?:[eE][+-]?[0-9]+)?")


@dataclass(slots=True)
class ManifestRow:
    """One row to ingest: its place, its source file and its metadata fields (``path`` excluded).

    ``source`` is the path as given; ``path`` is the file to read (``source`` resolved against the
    manifest's directory; a string, as rows are many and cheap). ``problem`` is set when the row
    itself is unusable (no ``path``, a nested value, a name that does not match
    ``--name-regex``); ``where`` is what every message about the row starts with.
    """

    where: str
    source: str
    path: str
    values: dict[str, Value] = field(default_factory=dict)
    problem: str | None = None


class Manifest:
    """A source of rows, by name; ``rows()`` reads it afresh on every call.

    The ingest reads a manifest twice: once to count its rows (so that a rerun can say how far
    it had come) and once to ingest them.
    """

    def __init__(self, name: str, read: Callable[[], Iterator[ManifestRow]]) -> None:
        self.name = name
        self._read = read

    def rows(self) -> Iterator[ManifestRow]:
        return self._read()


def columns_of(rows: Iterable[ManifestRow]) -> list[str]:
    """The metadata columns the usable ``rows`` name, in the order first seen."""
    seen: dict[str, None] = {}
    for row in rows:
        if row.problem is None:
            seen.update(dict.fromkeys(row.values))
    return list(seen)


def open_manifest(path: Path | str) -> Manifest:
    """The manifest at ``path``: CSV (``.csv``), JSON Lines (``.jsonl``/``.ndjson``), or JSON.

    A ``.json`` file or one of another name is JSON when its first character is ``[`` (an array
    of objects) or ``{`` (JSON Lines), else CSV. A manifest that cannot be read at all (missing,
    no header, no ``path`` column) is a RepoError naming it.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            start = f.read(4096).lstrip("\ufeff \t\r\n")[:1]
    except (OSError, UnicodeDecodeError) as e:
        raise RepoError(f"{path}: cannot read the manifest: {_reason(e)}") from None
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson") or (suffix != ".csv" and start == "{"):
        return Manifest(str(path), functools.partial(_read_json_lines, path))
    if suffix != ".csv" and start == "[":
        return Manifest(str(path), functools.partial(_read_json_array, path))
    _check_csv_header(path)
    return Manifest(str(path), functools.partial(_read_csv, path))


def files_manifest(paths: Iterable[str], name_regex: str | None = None) -> Manifest:
    """One row per path of ``--files``; ``name_regex``'s named groups become its columns.

    The regex is searched (``re.search``) in the path as given; a path it does not match is a bad
    row. Groups that did not take part in the match give NULL.
    """
    pattern = None
    if name_regex is not None:
        try:
            pattern = re.compile(name_regex)
        except re.error as e:
            raise RepoError(f"--name-regex {name_regex!r} is not a regular expression: {e}") from None
        if not pattern.groupindex:
            raise RepoError(f"--name-regex {name_regex!r} has no named groups "
                            f"(write (?P<name>...) for each column)")
    rows = []
    for given in paths:
        values: dict[str, Value] = {}
        problem = None
        if pattern is not None:
            match = pattern.search(given)
            if match is None:
                problem = f"does not match --name-regex {name_regex!r}"
            else:
                values = match.groupdict()
        rows.append(ManifestRow(where=given, source=given, path=given, values=values,
                                problem=problem))
    return Manifest("--files", lambda: iter(rows))


def _reason(e: BaseException) -> str:
    """An OSError's words without the path (the caller names the place), or the exception's text."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e)


def _cannot_read(path: Path, e: BaseException) -> RepoError:
    return RepoError(f"{path}: cannot read the manifest: {_reason(e)}")


def _resolver(base: str) -> Callable[[str], str]:
    """How a manifest in directory ``base`` turns a ``path`` field into the file to read.

    ``os.path.join(base, given)``, with the prefix joined once per manifest rather than once per
    row: rows are many (an absolute ``given`` stands as it is, as with join).
    """
    prefix = os.path.join(base, "")
    return lambda given: given if given.startswith(os.sep) else prefix + given


def _no_path(where: str) -> ManifestRow:
    return ManifestRow(where, "", "", problem=f"no {PATH_FIELD!r} given")


def _row_from_fields(where: str, resolve: Callable[[str], str], fields: Mapping[str, object]) -> ManifestRow:
    """A row from a JSON object's fields: numbers and text kept, nested values a problem."""
    given = fields.get(PATH_FIELD)
    if not isinstance(given, str) or not given:
        return _no_path(where)
    values: dict[str, Value] = {}
    problem = None
    for name, value in fields.items():
        if name == PATH_FIELD:
            continue
        if isinstance(value, bool):
            value = int(value)  # JSON true/false: the column types have no boolean
        if value is None or isinstance(value, (str, int, float)):
            values[name] = value
        elif problem is None:
            problem = f"column {name!r}: a nested value ({type(value).__name__}) is not allowed"
    return ManifestRow(where, given, resolve(given), values, problem)


def _check_csv_header(path: Path) -> None:
    """RepoError naming the manifest when its header is missing, lacks ``path`` or repeats a name."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            header = next(csv.reader(f, dialect="excel"), None)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise _cannot_read(path, e) from None
    if header is None:
        raise RepoError(f"{path}: the manifest is empty (a CSV manifest needs a header row)")
    if PATH_FIELD not in header:
        raise RepoError(f"{path}:1: no {PATH_FIELD!r} column (columns: {', '.join(header) or 'none'})")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise RepoError(f"{path}:1: column {repeated[0]!r} appears more than once")


def _read_csv(path: Path) -> Iterator[ManifestRow]:
    """The rows of a CSV manifest; a row's line is the one its record starts on."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, dialect="excel")
            header = next(reader, None) or []
            if PATH_FIELD not in header:  # the file changed since open_manifest looked at it
                raise RepoError(f"{path}:1: no {PATH_FIELD!r} column")
            at, width = header.index(PATH_FIELD), len(header)
            name, resolve = str(path), _resolver(str(path.parent))
            line = reader.line_num + 1  # where the next record starts
            while True:
                try:
                    for record in reader:  # a for loop: rows are many, and next() costs more
                        start, line = line, reader.line_num + 1
                        if not record:
                            continue  # a blank line
                        if len(record) != width:
                            yield ManifestRow(f"{name}:{start}", "", "",
                                              problem=f"{len(record)} fields where the header has {width}")
                            continue
                        given = record[at]
                        if not given:
                            yield _no_path(f"{name}:{start}")
                            continue
                        # CSV fields are all text: none needs the checks of a JSON value
                        values: dict[str, Value] = dict(zip(header, record, strict=False))  # as wide: checked
                        del values[PATH_FIELD]
                        yield ManifestRow(f"{name}:{start}", given, resolve(given), values)
                    return
                except csv.Error as e:
                    yield ManifestRow(f"{name}:{line}", "", "", problem=str(e))
                    line = reader.line_num + 1
    except (OSError, UnicodeDecodeError) as e:
        raise _cannot_read(path, e) from None


def _json_object_row(path: Path, line: int, obj: object, resolve: Callable[[str], str]) -> ManifestRow:
    if not isinstance(obj, dict):
        return ManifestRow(f"{path}:{line}", "", "",
                           problem=f"a JSON {type(obj).__name__}, not an object")
    return _row_from_fields(f"{path}:{line}", resolve, obj)


def _read_json_lines(path: Path) -> Iterator[ManifestRow]:
    """One row per non-blank line, each a flat JSON object."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            resolve = _resolver(str(path.parent))
            for line, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    yield ManifestRow(f"{path}:{line}", "", "", problem=f"not JSON: {e.msg}")
                    continue
                yield _json_object_row(path, line, obj, resolve)
    except (OSError, UnicodeDecodeError) as e:
        raise _cannot_read(path, e) from None


_SPACE = re.compile(r"\s*")


def _skip_space(text: str, pos: int) -> int:
    match = _SPACE.match(text, pos)  # \s* matches everywhere, if only the empty string
    return match.end() if match else pos


def _read_json_array(path: Path) -> Iterator[ManifestRow]:
    """The array's objects, decoded one at a time, so each row knows the line it starts on.

    A syntax error breaks the rest of the array, so it is a RepoError rather than a bad row.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise _cannot_read(path, e) from None
    decoder = json.JSONDecoder()
    resolve = _resolver(str(path.parent))
    pos = _skip_space(text, 0)
    if text[pos:pos + 1] != "[":
        raise RepoError(f"{path}:1: not a JSON array")
    pos = _skip_space(text, pos + 1)
    if text[pos:pos + 1] == "]":
        return
    while True:
        line = text.count("\n", 0, pos) + 1
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise RepoError(f"{path}:{e.lineno}: not JSON: {e.msg}") from None
        yield _json_object_row(path, line, obj, resolve)
        pos = _skip_space(text, pos)
        if text[pos:pos + 1] == ",":
            pos = _skip_space(text, pos + 1)
        elif text[pos:pos + 1] == "]":
            return
        else:
            line = text.count("\n", 0, pos) + 1
            raise RepoError(f"{path}:{line}: expected ',' or ']' in the JSON array")


def _to_int(value: Value) -> int | None:
    """The 64-bit integer a value spells (decimal digits, no spaces or underscores), else None."""
    if isinstance(value, str):
        # str.isdigit alone would take other scripts' digits; int() alone, spaces and underscores
        if not (value.isdigit() and value.isascii()):  # unsigned, the common case, first
            digits = value[1:] if value[:1] in ("+", "-") else ""
            if not (digits.isdigit() and digits.isascii()):
                return None
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        return None
    return number if INT64_MIN <= number <= INT64_MAX else None


def _is_int(value: Value) -> bool:
    return _to_int(value) is not None


def _is_real(value: Value) -> bool:
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, str) and _REAL.fullmatch(value) is not None


def is_empty(value: Value) -> bool:
    """Empty fields are NULL, whatever the column's type."""
    return value is None or value == ""


def infer_types(rows: Iterable[ManifestRow], columns: Iterable[str],
                given: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each column's type over ``rows`` (the first batch): int, else real, else text.

    Empty values say nothing; a column with none but empty values is text. ``given`` (from
    ``--types``) wins over inference and may add columns the manifest lacks.
    """
    given = dict(given or {})
    for name, kind in given.items():
        if kind not in COLUMN_TYPES:
            raise RepoError(f"--types {name}={kind}: the type must be one of {', '.join(COLUMN_TYPES)}")
    usable = [row for row in rows if row.problem is None]
    types: dict[str, str] = {}
    for name in columns:
        if name in given:
            continue
        values = [v for row in usable if not is_empty(v := row.values.get(name))]
        if values and all(_is_int(v) for v in values):
            types[name] = "int"
        elif values and all(_is_real(v) for v in values):
            types[name] = "real"
        else:
            types[name] = "text"
    types.update(given)
    return types


Converter = Callable[[Value], Typed]


def _to_text(value: Value) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _to_int_column(value: Value) -> int | None:
    if isinstance(value, str) and len(value) < 19 and value.isdigit() and value.isascii():
        return int(value)  # the common case, at once: up to 18 digits always fit 64 bits
    if value is None or value == "":
        return None
    number = _to_int(value)
    if number is None:
        raise ValueError(f"{value!r} is not an integer" + (" of 64 bits" if _is_real(value) else ""))
    return number


def _to_fileid(value: Value) -> int | None:
    number = _to_int_column(value)
    if number is not None and number < 1:
        raise ValueError(f"{value!r} is not a fileid (a positive integer)")
    return number


def _to_real(value: Value) -> float | None:
    if value is None or value == "":
        return None
    if not _is_real(value):
        raise ValueError(f"{value!r} is not a number")
    return float(value)  # _is_real: a number or its decimal text


_CONVERTERS: dict[str, Converter] = {"text": _to_text, "int": _to_int_column, "fileid": _to_fileid,
                                     "real": _to_real}


def converter(kind: str) -> Converter:
    """The function that turns a value into what a column of type ``kind`` holds (empty: None).

    It raises ValueError saying why a value does not convert. Chosen once per column rather
    than per value, as a manifest has many rows and few columns.
    """
    try:
        return _CONVERTERS[kind]
    except KeyError:
        raise ValueError(f"unknown column type {kind!r}") from None


def convert(value: Value, kind: str) -> Typed:
    """``value`` as a column of type ``kind`` holds it; ValueError saying why it does not convert."""
    return converter(kind)(value)


def row_converter(types: Mapping[str, str]) -> Callable[[ManifestRow], dict[str, Typed]]:
    """A function converting a row's fields to ``types``; it raises BadRow naming the row, column and reason.

    A field the types do not name is an error too (unless empty): the table has no column for it.
    The columns' converters are looked up here, once per table.
    """
    converters = {name: converter(kind) for name, kind in types.items()}
    columns = ", ".join(types) or "none"

    def convert_row(row: ManifestRow) -> dict[str, Typed]:
        out: dict[str, Typed] = {}
        for name, value in row.values.items():
            to_column = converters.get(name)
            if to_column is None:
                if is_empty(value):
                    continue
                raise BadRow(row, f"column {name!r}: the table has no such column (columns: {columns})")
            try:
                out[name] = to_column(value)
            except ValueError as e:
                raise BadRow(row, f"column {name!r}: {e}") from None
        return out

    return convert_row


class BadRow(RepoError):
    """One row of a manifest that cannot be ingested, said as ``where: reason``."""

    def __init__(self, row: ManifestRow, reason: str) -> None:
        super().__init__(f"{row.where}: {reason}")
        self.row = row
        self.reason = reason
