"""Reading manifests: CSV, JSON Lines, JSON arrays and --files; type inference and conversion."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from treadle.errors import RepoError
from treadle.repo.manifest import (
    BadRow,
    ManifestRow,
    Value,
    columns_of,
    convert,
    files_manifest,
    infer_types,
    open_manifest,
    row_converter,
)


def write_csv(path: Path, header: list[str], records: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(records)
    return path


def test_csv_rows_resolve_paths_against_the_manifest_and_know_their_lines(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    manifest = write_csv(tmp_path / "m" / "photos.csv", ["path", "subject", "note"],
                         [["a.jpg", "1", "two\nlines"], ["sub/b.jpg", "2", ""], ["/abs/c.jpg", "3", "x"]])
    rows = list(open_manifest(manifest).rows())
    assert [r.source for r in rows] == ["a.jpg", "sub/b.jpg", "/abs/c.jpg"]
    assert [r.path for r in rows] == [str(tmp_path / "m" / "a.jpg"), str(tmp_path / "m" / "sub/b.jpg"),
                                      "/abs/c.jpg"]
    # the first record spans lines 2-3, so the second starts on line 4
    assert [r.where for r in rows] == [f"{manifest}:2", f"{manifest}:4", f"{manifest}:5"]
    assert rows[0].values == {"subject": "1", "note": "two\nlines"}
    assert all(r.problem is None for r in rows)


def test_a_csv_record_of_the_wrong_width_is_a_bad_row_with_its_line(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,subject\na.jpg,1\nb.jpg,2,extra\n\nc.jpg,3\n")
    rows = list(open_manifest(manifest).rows())
    assert [r.problem for r in rows] == [None, "3 fields where the header has 2", None]
    assert rows[1].where == f"{manifest}:3"
    assert rows[2].where == f"{manifest}:5"


@pytest.mark.parametrize(("text", "message"), [
    ("", "the manifest is empty"),
    ("file,subject\na,1\n", "no 'path' column (columns: file, subject)"),
    ("path,a,a\nx,1,2\n", "column 'a' appears more than once"),
])
def test_an_unusable_csv_header_is_refused_naming_the_manifest(tmp_path: Path, text: str, message: str) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(RepoError, match=str(manifest)) as caught:
        open_manifest(manifest)
    assert message in str(caught.value)


def test_a_missing_manifest_is_named(tmp_path: Path) -> None:
    with pytest.raises(RepoError, match="nope.csv: cannot read the manifest: No such file"):
        open_manifest(tmp_path / "nope.csv")


def test_json_lines_rows_and_their_problems(tmp_path: Path) -> None:
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text('{"path": "a.jpg", "subject": 1, "ok": true}\n\n'
                        '{"path": "b.jpg", "tags": [1, 2]}\n'
                        'not json\n'
                        '[1]\n'
                        '{"subject": 3}\n'
                        '{"path": "c.jpg", "score": 1.5, "name": null}\n')
    rows = list(open_manifest(manifest).rows())
    assert [r.where.rsplit(":", 1)[1] for r in rows] == ["1", "3", "4", "5", "6", "7"]
    assert rows[0].values == {"subject": 1, "ok": 1} and rows[0].problem is None
    assert rows[1].problem == "column 'tags': a nested value (list) is not allowed"
    assert rows[2].problem is not None and rows[2].problem.startswith("not JSON")
    assert rows[3].problem == "a JSON list, not an object"
    assert rows[4].problem == "no 'path' given"
    assert rows[5].values == {"score": 1.5, "name": None}


def test_a_json_array_gives_each_object_the_line_it_starts_on(tmp_path: Path) -> None:
    manifest = tmp_path / "rows.json"
    manifest.write_text('[\n  {"path": "a.jpg", "n": 1},\n\n  {"path": "b.jpg",\n   "n": 2}, {"path": "c.jpg"}\n]\n')
    rows = list(open_manifest(manifest).rows())
    assert [(r.source, r.where) for r in rows] == [
        ("a.jpg", f"{manifest}:2"), ("b.jpg", f"{manifest}:4"), ("c.jpg", f"{manifest}:5")]


def test_a_broken_json_array_is_refused_with_its_line(tmp_path: Path) -> None:
    manifest = tmp_path / "rows.json"
    manifest.write_text('[\n{"path": "a.jpg"},\n{"path": \n')
    with pytest.raises(RepoError, match=r"rows.json:\d+: not JSON"):
        list(open_manifest(manifest).rows())


def test_a_json_file_starting_with_an_object_is_json_lines(tmp_path: Path) -> None:
    manifest = tmp_path / "rows.json"
    manifest.write_text('{"path": "a.jpg"}\n{"path": "b.jpg"}\n')
    assert [r.source for r in open_manifest(manifest).rows()] == ["a.jpg", "b.jpg"]


def test_files_with_a_name_regex_make_columns_of_named_groups() -> None:
    manifest = files_manifest(["thumbs/17.jpg", "thumbs/18.JPG", "thumbs/x.jpg"],
                              r"(?P<source>[0-9]+)[.](?P<ext>jpg)?")
    rows = list(manifest.rows())
    assert rows[0].values == {"source": "17", "ext": "jpg"}
    assert rows[1].values == {"source": "18", "ext": None}
    assert rows[2].problem is not None and "does not match --name-regex" in rows[2].problem
    assert rows[2].where == "thumbs/x.jpg"
    assert columns_of(rows) == ["source", "ext"]


@pytest.mark.parametrize(("regex", "message"), [("(", "not a regular expression"), ("[0-9]+", "no named groups")])
def test_a_bad_name_regex_is_refused(regex: str, message: str) -> None:
    with pytest.raises(RepoError, match=message):
        files_manifest(["a.jpg"], regex)


def _rows(*values: Mapping[str, Value]) -> list[ManifestRow]:
    return [ManifestRow(f"m.csv:{i + 2}", "x", "x", dict(v)) for i, v in enumerate(values)]


def test_inference_int_real_text_and_empty_values() -> None:
    rows = _rows({"a": "1", "b": "1.5", "c": "x", "d": "", "e": 7},
                 {"a": "-20", "b": "2", "c": "3", "d": "", "e": 1e3},
                 {"a": "", "b": "", "c": "", "d": None, "e": ""})
    assert infer_types(rows, ["a", "b", "c", "d", "e"]) == {
        "a": "int", "b": "real", "c": "text", "d": "text", "e": "real"}


def test_given_types_win_and_add_columns() -> None:
    rows = _rows({"a": "1"})
    assert infer_types(rows, ["a"], {"a": "text", "thumb": "fileid"}) == {"a": "text", "thumb": "fileid"}
    with pytest.raises(RepoError, match="one of int, real, text, fileid"):
        infer_types(rows, ["a"], {"a": "date"})


def test_numbers_beyond_64_bits_are_not_int() -> None:
    assert infer_types(_rows({"a": str(1 << 63)}), ["a"]) == {"a": "real"}
    assert infer_types(_rows({"a": str((1 << 63) - 1)}), ["a"]) == {"a": "int"}


@pytest.mark.parametrize(("value", "kind", "reason"), [
    ("abc", "int", "'abc' is not an integer"), ("1.5", "int", "'1.5' is not an integer of 64 bits"),
    (" 1", "int", "' 1' is not an integer"), ("1_000", "int", "is not an integer"),
    ("x", "real", "'x' is not a number"), ("0", "fileid", "'0' is not a fileid"),
    ("nan", "real", "'nan' is not a number"), ("\u0661\u0662", "int", "is not an integer"),
    ("+", "int", "'\\+' is not an integer"), ("1 ", "int", "is not an integer"),
])
def test_values_that_do_not_convert_say_why(value: str, kind: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        convert(value, kind)


def test_signed_decimal_text_is_an_int() -> None:
    assert [convert(v, "int") for v in ("+5", "-0012", "0", str(-(1 << 63)))] == [5, -12, 0, -(1 << 63)]


def test_row_converter_names_the_row_and_column() -> None:
    row = _rows({"subject": "12", "camera": "nikon"}, {"subject": "twelve"})
    assert row_converter({"subject": "int", "camera": "text"})(row[0]) == {"subject": 12, "camera": "nikon"}
    with pytest.raises(BadRow, match=r"^m.csv:3: column 'subject': 'twelve' is not an integer$"):
        row_converter({"subject": "int"})(row[1])
    with pytest.raises(BadRow, match="column 'camera': the table has no such column"):
        row_converter({"subject": "int"})(row[0])


# --- round trips -------------------------------------------------------------------------------

_field_text = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00\r"),
                      max_size=20)
_names = st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(lambda n: n != "path"),
                  min_size=1, max_size=4, unique=True)


@settings(max_examples=60, deadline=None)
@given(names=_names, data=st.data())
def test_csv_round_trip(tmp_path_factory: pytest.TempPathFactory, names: list[str], data: st.DataObject) -> None:
    records = data.draw(st.lists(st.tuples(st.from_regex(r"[a-z0-9_./-]{1,12}", fullmatch=True),
                                           st.lists(_field_text, min_size=len(names), max_size=len(names))),
                                 max_size=15))
    manifest = write_csv(tmp_path_factory.mktemp("csv") / "m.csv", ["path", *names],
                         [[path, *values] for path, values in records])
    rows = list(open_manifest(manifest).rows())
    assert [(r.source, r.values) for r in rows] == [(p, dict(zip(names, v, strict=True))) for p, v in records]
    line = 2
    for row, (path, values) in zip(rows, records, strict=True):
        assert row.where == f"{manifest}:{line}"
        line += 1 + sum(v.count("\n") for v in [path, *values])


_json_value = st.one_of(st.none(), st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
                        st.floats(allow_nan=False, allow_infinity=False), _field_text)


@settings(max_examples=60, deadline=None)
@given(objects=st.lists(st.dictionaries(st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True).filter(
    lambda n: n != "path"), _json_value, max_size=4), max_size=15), as_array=st.booleans())
def test_json_round_trip(tmp_path_factory: pytest.TempPathFactory, objects: list[dict[str, object]],
                         as_array: bool) -> None:
    rows_in = [{"path": f"f{i}.dat", **obj} for i, obj in enumerate(objects)]
    manifest = tmp_path_factory.mktemp("json") / ("m.json" if as_array else "m.jsonl")
    if as_array:
        manifest.write_text("[\n" + ",\n".join(json.dumps(r) for r in rows_in) + "\n]\n")
    else:
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows_in))
    rows = list(open_manifest(manifest).rows())
    assert [r.values for r in rows] == objects
    assert [r.where for r in rows] == [f"{manifest}:{i + 2 if as_array else i + 1}" for i in range(len(objects))]


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1), min_size=1, max_size=10),
       blanks=st.integers(min_value=0, max_value=3))
def test_inferred_ints_convert_back_to_themselves(values: list[int], blanks: int) -> None:
    rows = _rows(*[{"n": str(v)} for v in values], *[{"n": ""} for _ in range(blanks)])
    types = infer_types(rows, ["n"])
    assert types == {"n": "int"}
    assert [row_converter(types)(r).get("n") for r in rows] == [*values, *[None] * blanks]


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=10))
def test_inferred_reals_convert_back_to_themselves(values: list[float]) -> None:
    rows = _rows(*[{"x": repr(v)} for v in values])
    types = infer_types(rows, ["x"])
    assert types == {"x": "real"}  # a float's repr always has a point or an exponent
    assert [row_converter({"x": "real"})(r)["x"] for r in rows] == values


@settings(max_examples=100, deadline=None)
@given(values=st.lists(_field_text, min_size=1, max_size=10))
def test_text_that_is_not_all_numbers_is_text_and_kept_as_is(values: list[str]) -> None:
    rows = _rows(*[{"t": v} for v in values], {"t": "not a number"})
    types = infer_types(rows, ["t"])
    assert types == {"t": "text"}
    assert [row_converter(types)(r)["t"] for r in rows] == [v or None for v in values] + ["not a number"]
