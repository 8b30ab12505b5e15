"""treadle repo query (docs/repo.md, "Query"): every operator against a brute-force filter of the
same rows, names refused, values inert, --sql read-only, the output formats.

Rows are put in with plain SQLAlchemy inserts (objects, files and a user table made by
schema.user_table), so these tests do not depend on ingest.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select
from tests._cli import run_cli as cli

from treadle.cli.repo_query import parse_where
from treadle.errors import RepoError
from treadle.repo import query, schema
from treadle.repo.context import RepoContext, open_context
from treadle.repo.db import utcnow
from treadle.repo.query import OPERATORS

INJECTIONS = ["O'Brien", "x' OR '1'='1", "'; DROP TABLE people; --", 'a"b', "%", "_", "\\",
              "Robert'); DROP TABLE people;--", "", "o'brien", "O%Brien", "50%_off", "A_B", "a\\%"]
PEOPLE_KINDS = {"owner": "text", "age": "int", "score": "real", "thumb": "fileid"}
# names a user might try to smuggle SQL through
BAD_NAMES = ["owner; DROP TABLE people", "owner OR 1=1", "owner--", "1", "people.owner", "*",
             "owner\x00", "vpath", "files", "Files", "sqlite_master", "", "a b"]

TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)


def insert_rows(ctx: RepoContext, table: str, kinds: Mapping[str, str],
                rows: Sequence[Mapping[str, Any]], *, key: str | None = None) -> list[int]:
    """Make user table ``table`` and give each row a file of its own; return the fileids.

    A ``fileid``-kind column given as an index into ``rows`` is set to that row's fileid.
    """
    made = schema.user_table(table, dict(kinds), key=key)
    fileids = []
    with ctx.engine.begin() as conn:
        made.create(conn)
        for i, _ in enumerate(rows):
            checksum = "sha256:" + hashlib.sha256(f"{table} {i}".encode()).hexdigest()
            conn.execute(insert(schema.objects).values(checksum=checksum, size=i))
            fileids.append(conn.execute(insert(schema.files).values(
                checksum=checksum, size=i, extension="dat", state="OK", created_at=utcnow(),
                source=f"src/{i}.dat").returning(schema.files.c.fileid)).scalar_one())
        for fileid, row in zip(fileids, rows, strict=True):
            values = {name: (fileids[value] if kinds[name] == "fileid" and value is not None
                             else value) for name, value in row.items()}
            conn.execute(insert(made).values(fileid=fileid, **values))
    return fileids


def _people_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i, owner in enumerate([*INJECTIONS, "plain", "Plain", "émile", "Zoë", None]):
        rows.append({"owner": owner, "age": None if i % 7 == 3 else (i * 37) % 23 - 5,
                     "score": None if i % 5 == 4 else round((i * 0.7) % 3 - 1, 2),
                     "thumb": (i + 1) % 4 if i % 3 else None})
    return rows


@pytest.fixture
def people(repo_dir: Path) -> Iterator[tuple[RepoContext, list[dict[str, Any]]]]:
    """A repository with a table ``people``; the open (read-only) context and the rows as stored."""
    rows = _people_rows()
    with open_context(repo_dir, write=True) as ctx:
        fileids = insert_rows(ctx, "people", PEOPLE_KINDS, rows)
    stored = [{"fileid": fid, **row, "thumb": None if row["thumb"] is None else fileids[row["thumb"]]}
              for fid, row in zip(fileids, rows, strict=True)]
    ctx = open_context(repo_dir, read_only=True)
    yield ctx, stored
    ctx.close()


def like(pattern: str, value: str) -> bool:
    """SQL LIKE with \\ as escape, case-sensitive: the reference for the ~ operator."""
    regex = ""
    chars = iter(pattern)
    for c in chars:
        if c == "\\":
            regex += re.escape(next(chars))
        elif c == "%":
            regex += ".*"
        elif c == "_":
            regex += "."
        else:
            regex += re.escape(c)
    return re.fullmatch(regex, value, re.DOTALL) is not None


def brute_force(rows: list[dict[str, Any]], column: str, op: str, value: Any) -> list[int]:
    """The fileids the condition keeps, computed in Python: NULL never compares true."""
    tests: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
        "~": lambda a, b: like(b, str(a))}
    return [r["fileid"] for r in rows if r[column] is not None and tests[op](r[column], value)]


def fileids(ctx: RepoContext, table: str = "people", **conditions: Any) -> list[int]:
    return [r["fileid"] for r in query.select_rows(ctx, table, **conditions)]


def _people_count(ctx: RepoContext) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(
            schema.reflect_user_table(conn, "people"))).scalar_one())


COMPARISONS = [op for op in OPERATORS if op not in ("is", "is not")]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(op=st.sampled_from(COMPARISONS),
       value=st.one_of(st.sampled_from([*INJECTIONS, "plain", "émile"]), TEXT))
def test_text_operators_match_a_brute_force_filter(people, op: str, value: str) -> None:
    ctx, rows = people
    if op == "~" and re.search(r"(?<!\\)(\\\\)*\\$", value):
        with pytest.raises(RepoError, match="lone"):
            fileids(ctx, where=[("owner", op, value)])
        return
    assert fileids(ctx, where=[("owner", op, value)]) == brute_force(rows, "owner", op, value)
    assert query.count_rows(ctx, "people", where=[("owner", op, value)]) == \
        len(brute_force(rows, "owner", op, value))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(op=st.sampled_from(COMPARISONS), column=st.sampled_from(["age", "score", "thumb"]),
       value=st.one_of(st.integers(-8, 25), st.floats(-2, 3, allow_nan=False).map(lambda f: round(f, 2))))
def test_number_operators_match_a_brute_force_filter(people, op: str, column: str,
                                                     value: float) -> None:
    ctx, rows = people
    if op == "~":
        if column != "score":  # how a real is written as text differs between the databases
            pattern = f"%{value}%"
            got = fileids(ctx, where=[(column, op, pattern)])
            assert got == brute_force(rows, column, op, pattern)
        return
    if PEOPLE_KINDS[column] != "real" and not float(value).is_integer():
        with pytest.raises(RepoError, match="holds integers"):
            fileids(ctx, where=[(column, op, value)])
        return
    if PEOPLE_KINDS[column] != "real":
        value = int(value)
    expected = brute_force(rows, column, op, value)
    # the CLI gives values as text: converted to the column's type, 10 > 9 holds
    assert fileids(ctx, where=[(column, op, str(value))]) == expected
    assert fileids(ctx, where=[(column, op, value)]) == expected


def test_conditions_combine_with_and_and_null_tests(people) -> None:
    ctx, rows = people
    got = fileids(ctx, where=[("age", ">", "0"), ("owner", "~", "%a%")], not_null=["thumb"])
    assert got == [r["fileid"] for r in rows if r["age"] is not None and r["age"] > 0
                   and r["owner"] is not None and "a" in r["owner"] and r["thumb"] is not None]
    nulls = [r["fileid"] for r in rows if r["thumb"] is None]
    assert fileids(ctx, null=["thumb"]) == nulls
    assert fileids(ctx, where=[("thumb", "is", None)]) == nulls
    assert fileids(ctx, where=[("thumb", "=", None)]) == nulls
    assert fileids(ctx, where=[("thumb", "is not", None)]) == fileids(ctx, not_null=["thumb"])
    assert query.count_rows(ctx, "people", null=["thumb"]) == len(nulls)


def test_like_is_case_sensitive_and_escapes(people) -> None:
    ctx, rows = people
    owners = {r["fileid"]: r["owner"] for r in rows}
    assert [owners[f] for f in fileids(ctx, where=[("owner", "~", "O%")])] == \
        ["O'Brien", "O%Brien"]
    assert [owners[f] for f in fileids(ctx, where=[("owner", "~", "%\\%%")])] == \
        ["%", "O%Brien", "50%_off", "a\\%"]
    assert [owners[f] for f in fileids(ctx, where=[("owner", "~", "_")])] == \
        ["%", "_", "\\"]
    if ctx.engine.dialect.name == "sqlite":
        # the pragma that makes SQLite's LIKE case-sensitive does not stay on the connection
        with ctx.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 'a' LIKE 'A'").scalar_one() == 1


def test_rows_carry_fileid_vpath_and_the_chosen_columns(people) -> None:
    ctx, rows = people
    first = next(query.select_rows(ctx, "people"))
    assert list(first) == ["fileid", "owner", "age", "score", "thumb", "vpath"]
    assert first["vpath"] == f"/bxgrid/fileid/{first['fileid']}"
    some = list(query.select_rows(ctx, "people", columns=["age", "owner", "age"], limit=2))
    assert [list(r) for r in some] == [["fileid", "age", "owner", "vpath"]] * 2
    assert query.row_columns(ctx, "people", ["age", "owner"]) == ["fileid", "age", "owner", "vpath"]


def test_order_puts_nulls_last_then_fileid_and_limit_counts(people) -> None:
    ctx, rows = people
    got = fileids(ctx, order="age")
    expected = sorted(rows, key=lambda r: (r["age"] is None, r["age"] or 0, r["fileid"]))
    assert got == [r["fileid"] for r in expected]
    assert fileids(ctx, order="age", limit=3) == got[:3]
    assert fileids(ctx, limit=0) == []
    with pytest.raises(RepoError, match="0 or more"):
        fileids(ctx, limit=-1)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_are_refused_and_nothing_changes(people, name: str) -> None:
    ctx, rows = people
    attempts: list[dict[str, Any]] = [{"where": [(name, "=", "x")]}, {"null": [name]},
                                      {"not_null": [name]}, {"columns": [name]}, {"order": name}]
    for conditions in attempts:
        with pytest.raises(RepoError, match=r"no column|bad column"):
            fileids(ctx, **conditions)
    with pytest.raises(RepoError, match=r"bad table|no table"):
        fileids(ctx, table=name)
    with pytest.raises(RepoError):
        query.count_rows(ctx, "people", where=[(name, "=", "x")])
    assert _people_count(ctx) == len(rows)


def test_unknown_names_list_what_there_is(people) -> None:
    ctx, _ = people
    with pytest.raises(RepoError, match=r"no column 'colour' \(columns: fileid, owner, age, score, thumb\)"):
        fileids(ctx, where=[("colour", "=", "blue")])
    with pytest.raises(RepoError, match=r"no table images \(tables: people\)"):
        fileids(ctx, table="images")
    with pytest.raises(RepoError, match="vpath is computed"):
        fileids(ctx, where=[("vpath", "=", "/bxgrid/fileid/1")])


@pytest.mark.parametrize(("condition", "message"), [
    (("age", "=", "ten"), "holds integers"), (("age", ">", "1.5"), "holds integers"),
    (("age", "=", str(1 << 63)), "64-bit"), (("score", "<", "nan"), "finite"),
    (("score", "<", "x"), "holds numbers"), (("owner", "=", "a\x00b"), "NUL"),
    (("owner", "is", "x"), "only with NULL"), (("owner", "<", None), "never true"),
    (("owner", "==", "x"), "unknown operator"), (("owner", "~", "ab\\"), "lone"),
])
def test_bad_values_and_operators_are_refused(people, condition: tuple[str, str, Any],
                                              message: str) -> None:
    ctx, _ = people
    with pytest.raises(RepoError, match=message):
        fileids(ctx, where=[condition])


# --- read-only SQL ----------------------------------------------------------------------------

def test_sql_binds_parameters(people) -> None:
    ctx, rows = people
    for value in INJECTIONS:
        names, got = query.run_sql(ctx, "SELECT fileid, owner FROM people WHERE owner = :o",
                                   {"o": value})
        assert names == ["fileid", "owner"]
        assert got == [(r["fileid"], value) for r in rows if r["owner"] == value]
    names, got = query.run_sql(ctx, "SELECT count(*) AS n FROM people WHERE age > :a", {"a": "3"})
    assert got == [(sum(1 for r in rows if r["age"] is not None and r["age"] > 3),)]


@pytest.mark.parametrize("params,message", [({}, "no value for :o"),
                                            ({"o": "x", "p": "y"}, "no placeholder :p")])
def test_sql_parameters_must_fit(people, params: dict[str, str], message: str) -> None:
    ctx, _ = people
    with pytest.raises(RepoError, match=message):
        query.run_sql(ctx, "SELECT * FROM people WHERE owner = :o", params)


WRITES = ["INSERT INTO people (fileid, owner) VALUES (99999, 'x')",
          "UPDATE people SET owner = 'x'", "DELETE FROM people", "DROP TABLE people",
          "CREATE TABLE evil (a INTEGER)", "ALTER TABLE people ADD COLUMN evil TEXT",
          "SELECT 1; DELETE FROM people", "COMMIT; DELETE FROM people",
          "COMMIT; SET default_transaction_read_only = off; DELETE FROM people",
          "COMMIT; BEGIN READ WRITE; DELETE FROM people; COMMIT; SELECT 1",
          "WITH gone AS (DELETE FROM people RETURNING fileid) SELECT * FROM gone",
          "PRAGMA query_only = 0", "ATTACH DATABASE '{evil}' AS evil",
          "CREATE TEMP TABLE scratch AS SELECT * FROM people"]


@pytest.mark.parametrize("sql", WRITES)
def test_sql_cannot_write(people, tmp_path: Path, sql: str) -> None:
    ctx, rows = people
    evil = tmp_path / "evil.db"
    before = [tuple(r.values()) for r in query.select_rows(ctx, "people")]
    with pytest.raises(RepoError) as refused:
        query.run_sql(ctx, sql.format(evil=evil), {})
    assert "\n" not in str(refused.value)
    assert [tuple(r.values()) for r in query.select_rows(ctx, "people")] == before
    assert not evil.exists()
    with ctx.engine.connect() as conn:
        assert schema.user_tables(conn) == ["people"]


def test_sql_that_returns_nothing_is_refused(people) -> None:
    ctx, _ = people
    with pytest.raises(RepoError):
        query.run_sql(ctx, "DELETE FROM people WHERE 1 = 0", {})


# --- the command line ------------------------------------------------------------------------

def test_cli_csv_jsonl_table_and_count(people, capsys: pytest.CaptureFixture[str]) -> None:
    ctx, rows = people
    repo = str(ctx.dir)
    status, out, _ = cli(capsys, "repo", "query", repo, "people", "-w", "owner = O'Brien")
    assert status == 0  # not a terminal: CSV
    parsed = list(csv.DictReader(io.StringIO(out)))
    obrien = next(r for r in rows if r["owner"] == "O'Brien")
    assert parsed == [{"fileid": str(obrien["fileid"]), "owner": "O'Brien",
                       "age": str(obrien["age"]), "score": str(obrien["score"]),
                       "thumb": "" if obrien["thumb"] is None else str(obrien["thumb"]),
                       "vpath": f"/bxgrid/fileid/{obrien['fileid']}"}]
    status, out, _ = cli(capsys, "repo", "query", repo, "people", "--null", "thumb",
                         "--columns", "owner", "--format", "jsonl", "--order", "owner")
    lines = [json.loads(line) for line in out.splitlines()]
    nulls = sorted((r for r in rows if r["thumb"] is None),
                   key=lambda r: (r["owner"] is None, r["owner"] or "", r["fileid"]))
    assert lines == [{"fileid": r["fileid"], "owner": r["owner"],
                      "vpath": f"/bxgrid/fileid/{r['fileid']}"} for r in nulls]
    status, out, _ = cli(capsys, "repo", "query", repo, "people", "--null", "thumb", "--count")
    assert (status, out) == (0, f"{len(nulls)}\n")
    status, out, _ = cli(capsys, "repo", "query", repo, "people", "-w", "owner ~ plai_",
                         "--format", "table")
    assert status == 0 and "owner" in out and "vpath" in out and "plain" in out
    assert "Plain" not in out
    status, out, _ = cli(capsys, "repo", "query", repo, "people", "-w", "owner = nobody")
    assert (status, out) == (0, "fileid,owner,age,score,thumb,vpath\n")


def test_cli_sql_with_params(people, capsys: pytest.CaptureFixture[str]) -> None:
    ctx, rows = people
    status, out, _ = cli(capsys, "repo", "query", str(ctx.dir), "--sql",
                         "SELECT owner, age FROM people WHERE owner = :o", "--param", "o=x' OR '1'='1",
                         "--format", "jsonl")
    expected = next(r for r in rows if r["owner"] == "x' OR '1'='1")
    assert (status, [json.loads(line) for line in out.splitlines()]) == \
        (0, [{"owner": "x' OR '1'='1", "age": expected["age"]}])
    status, _, err = cli(capsys, "repo", "query", str(ctx.dir), "--sql", "DELETE FROM people")
    assert status == 1 and err.count("\n") == 1 and "treadle:" in err
    assert _people_count(ctx) == len(rows)


@pytest.mark.parametrize(("args", "message"), [
    (["people", "-w", "owner"], "bad -w"), (["people", "-w", "= 3"], "bad -w"),
    (["people", "-w", "owner is 3"], "takes only NULL"), (["people", "-w", "colour = 3"], "no column"),
    (["nothere"], "no table"), (["people", "--sql", "SELECT 1"], "drop TABLE"),
    ([], "give a TABLE"), (["people", "--param", "a=b"], "--param binds"),
    (["--sql", "SELECT 1", "--param", "novalue"], "NAME=VALUE"),
])
def test_cli_mistakes_are_one_line_exit_1(people, capsys: pytest.CaptureFixture[str],
                                          args: list[str], message: str) -> None:
    ctx, _ = people
    status, out, err = cli(capsys, "repo", "query", str(ctx.dir), *args)
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and message in err


def test_cli_not_a_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = cli(capsys, "repo", "query", str(tmp_path), "people")
    assert status == 1 and "not a repository" in err and err.count("\n") == 1


# --- -w parsing (no database) -----------------------------------------------------------------

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)


@given(column=NAMES, op=st.sampled_from(COMPARISONS),
       value=st.text(max_size=15).map(str.strip), spaces=st.sampled_from(["", " ", "  "]))
def test_where_parses_column_operator_value(column: str, op: str, value: str, spaces: str) -> None:
    gap = spaces or (" " if op[0].isalpha() else "")
    text = f"{spaces}{column}{gap}{op} {value}{spaces}"
    assert parse_where(text) == (column, op, value)


def test_where_takes_the_longest_operator_and_null_words() -> None:
    assert parse_where("size <= 10") == ("size", "<=", "10")
    assert parse_where("size<=10") == ("size", "<=", "10")
    assert parse_where("size < =10") == ("size", "<", "=10")
    assert parse_where("name != a b ") == ("name", "!=", "a b")
    assert parse_where("name = ") == ("name", "=", "")
    assert parse_where("thumb is NULL") == ("thumb", "is", None)
    assert parse_where("thumb is not null") == ("thumb", "is not", None)
    assert parse_where("island = 3") == ("island", "=", "3")
    assert parse_where("note ~ 50\\%") == ("note", "~", "50\\%")
    with pytest.raises(RepoError, match="bad -w"):
        parse_where("thumb isnull")
