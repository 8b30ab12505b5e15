"""SQL datasets (spec weaver.md §2.3, R1, R2): bound values, checked names, host lookup."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from treadle.errors import WeaverError
from treadle.weave import context
from treadle.weave.context import Config, Script
from treadle.weave.datasets import Query
from treadle.weave.filters import And, Not, Or
from treadle.weave.nest import CurrentScript, open_script
from treadle.weave.sql import SQLDataSet, SQLDataset

INJECTIONS = ["O'Brien", "x' OR '1'='1", "'; DROP TABLE people; --", "a\"b", "%", "_",
              "Robert'); DROP TABLE people;--", "\\", "\x00", ""]


@pytest.fixture
def db(tmp_path: Path):
    """A SQLite table whose owners are the injection strings, and a fresh compile context."""
    path = tmp_path / "people.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE people(id INTEGER PRIMARY KEY, owner TEXT, colour TEXT, "
                "path TEXT)")
    for i, owner in enumerate(INJECTIONS + ["plain"], 1):
        con.execute("INSERT INTO people VALUES (?, ?, ?, ?)",
                    (i, owner, "blue" if i % 2 else "red", f"files/{i}.dat"))
    con.commit()
    con.close()
    context.reset()
    script = Script(str(tmp_path / "s.py"), [], str(tmp_path / "s.weave"), config=Config())
    (tmp_path / "s.weave").mkdir()
    open_script(script)
    yield path
    for engine in script.sql_engines.values():
        engine.dispose()
    context.reset()


def _owners(files) -> list[str]:
    return [f.owner for f in files]


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_values_match_only_themselves(db: Path, value: str) -> None:
    ds = SQLDataset(str(db), None, "people")
    assert _owners(Query(ds, ds.c.owner == value)) == [value]
    assert value not in _owners(Query(ds, ds.owner != value))
    assert _owners(Query(ds, ds.c.owner | (value, "nobody"))) == [value]
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM people").fetchone()[0] == len(INJECTIONS) + 1


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=30))
def test_any_value_is_bound_not_formatted(db: Path, value: str) -> None:
    ds = SQLDataset(str(db), None, "people")
    expected = [value] if value in INJECTIONS + ["plain"] else []
    assert _owners(Query(ds, ds.c.owner == value)) == expected


@pytest.mark.parametrize("field", ["color; DROP TABLE people", "owner OR 1=1", "owner--",
                                   "1", "people.owner", "*", "owner\x00"])
def test_injection_field_names_are_refused(db: Path, field: str) -> None:
    ds = SQLDataset(str(db), None, "people")
    with pytest.raises(WeaverError, match="has no field .* its fields are id, owner, colour, path"):
        list(Query(ds, getattr(ds.c, field) == "x"))
    with pytest.raises(WeaverError, match="has no field"):
        list(SQLDataset(str(db), None, "people", order_by=field))
    assert sqlite3.connect(db).execute("SELECT count(*) FROM people").fetchone()[0] == 11


def test_unknown_table_is_an_error(db: Path) -> None:
    with pytest.raises(WeaverError, match="has no table 'people; DROP TABLE people'"):
        list(SQLDataset(str(db), None, "people; DROP TABLE people"))


def test_operators_and_combinators(db: Path) -> None:
    ds = SQLDataset(str(db), None, "people")
    assert [f.id for f in Query(ds, ds.colour == "red", limit=2)] == [2, 4]
    assert [f.id for f in Query(ds, And(ds.id >= 3, ds.id < 6))] == [3, 4, 5]
    assert [f.id for f in Query(ds, Or(ds.id <= 1, ds.id > 10))] == [1, 11]
    assert [f.id for f in Query(ds, Not(ds.id > 2))] == [1, 2]
    assert [f.id for f in Query(ds, ds.c.owner % "O'%")] == [1]
    assert len(list(Query(ds, And()))) == 11 and list(Query(ds, Or())) == []
    inner = Query(ds, ds.colour == "blue", limit=3)
    assert [f.id for f in Query(inner, ds.id > 1)] == [3, 5]
    first = next(iter(Query(ds, ds.id == 3)))
    assert first.row["owner"] == first.owner and first.path.endswith("files/3.dat")
    assert Path(first.abspath).parent == db.parent / "files"


def test_path_template_and_callable(db: Path) -> None:
    ds = SQLDataSet(str(db), None, "people", path="/repo/fileid/{id}")
    assert [f.path for f in Query(ds, ds.id < 3)] == ["/repo/fileid/1", "/repo/fileid/2"]
    ds2 = SQLDataset(str(db), None, "people", path=lambda d, row: f"/x/{row['colour']}")
    assert next(iter(ds2)).path == "/x/blue"


def test_boolean_use_of_filters_is_a_type_error(db: Path) -> None:
    ds = SQLDataset(str(db), None, "people")
    with pytest.raises(TypeError, match="And"):
        bool(ds.c.id == 1)
    with pytest.raises(TypeError, match="And"):
        _ = (ds.c.id == 1) and (ds.c.id == 2)
    with pytest.raises(TypeError):
        _ = 1 < ds.c.id < 3


def test_host_resolution(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{db}"
    assert next(iter(SQLDataset(url, None, "people"))).id == 1
    CurrentScript().config.db_aliases["bio"] = url
    assert next(iter(SQLDataset("bio", None, "people"))).id == 1
    monkeypatch.setenv("TREADLE_DB_OTHER", url)
    assert next(iter(SQLDataset("other", None, "people"))).id == 1
    monkeypatch.chdir(tmp_path)
    assert next(iter(SQLDataSet("db", "people", "people"))).id == 1
    with pytest.raises(WeaverError, match="cannot find the database.*--db nowhere=URL"):
        SQLDataSet("nowhere", "absent", "irises")


def test_values_travel_as_parameters_never_as_sql_text(db: Path) -> None:
    """Watch every statement the database receives: values are only in the parameters."""
    from sqlalchemy import event

    ds = SQLDataset(str(db), None, "people")
    ds.connect()
    seen: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append((statement, parameters))

    engine = ds._engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        marker = "x' OR '1'='1 -- marker"
        list(Query(ds, Or(ds.owner == marker, ds.c.colour | (marker, "green")),
                   ds.c.owner % marker, limit=3))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    selects = [(s, p) for s, p in seen if s.lstrip().upper().startswith("SELECT")]
    assert selects
    for statement, _ in selects:
        assert "marker" not in statement and "'1'='1" not in statement
    assert any(marker in map(str, p) for _, p in selects)
