"""A repository as a Weaver database (docs/repo.md, "Weaver"): how a host resolves to one, vpath
members, repo: aliases, and a compile that cannot write the repository's database.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError

# the repository tests' fixtures, so that these run on both databases too
from tests.repo.test_query import insert_rows

from treadle.errors import WeaverError
from treadle.repo.context import init_repository
from treadle.weave import context
from treadle.weave.context import Config, Script
from treadle.weave.datasets import Query
from treadle.weave.nest import open_script
from treadle.weave.sql import SQLDataSet

IMAGES = [{"colour": "blue", "subject": 4}, {"colour": "O'Brien", "subject": 7},
          {"colour": "blue", "subject": None}, {"colour": "red", "subject": 4}]


def make_repository(path: Path, database: str | None, mount: str = "/bxgrid") -> list[int]:
    """A repository with a user table ``images`` (IMAGES) and ``scans``, whose rows have a
    ``path`` column; the fileids of ``images``."""
    with init_repository(path, database=database, mount=mount) as ctx:
        fileids = insert_rows(ctx, "images", {"colour": "text", "subject": "int"}, IMAGES)
        insert_rows(ctx, "scans", {"path": "text"},
                    [{"path": "scans/1.raw"}, {"path": "/abs/2.raw"}])
    return fileids


@pytest.fixture
def script(tmp_path: Path) -> Iterator[Script]:
    """A fresh compile context, its SQL engines disposed at the end."""
    context.reset()
    made = Script(str(tmp_path / "s.py"), [], str(tmp_path / "s.weave"), config=Config())
    (tmp_path / "s.weave").mkdir()
    open_script(made)
    yield made
    for engine in made.sql_engines.values():
        engine.dispose()
    context.reset()


@pytest.fixture
def repo(tmp_path: Path, database_url: str | None,
         script: Script) -> tuple[Path, list[int]]:
    """A repository made on each database, and the fileids of its ``images``."""
    path = tmp_path / "thumbs.repo"
    return path, make_repository(path, database_url)


def test_a_repository_directory_gives_vpath_members_in_fileid_order(repo) -> None:
    path, fileids = repo
    members = list(SQLDataSet(str(path), None, "images"))
    assert [f.path for f in members] == [f"/bxgrid/fileid/{i}" for i in fileids]
    assert [f.vpath for f in members] == [f.path for f in members]
    assert [f.row["vpath"] for f in members] == [f.path for f in members]
    assert [(f.fileid, f.colour, f.subject) for f in members] == \
        [(i, r["colour"], r["subject"]) for i, r in zip(fileids, IMAGES, strict=True)]


def test_repo_prefix_ignores_the_name_and_filters_stay_bound(repo) -> None:
    path, fileids = repo
    ds = SQLDataSet(f"repo:{path}", "whatever", "images")
    assert [f.fileid for f in Query(ds, ds.colour == "O'Brien")] == [fileids[1]]
    assert [f.fileid for f in Query(ds, ds.colour == "x' OR '1'='1")] == []
    blue = Query(ds, ds.colour == "blue", fields=["subject"])
    assert [(f.path, f.row) for f in blue] == [
        (f"/bxgrid/fileid/{fileids[i]}",
         {"subject": IMAGES[i]["subject"], "fileid": fileids[i],
          "vpath": f"/bxgrid/fileid/{fileids[i]}"}) for i in (0, 2)]


@pytest.mark.parametrize("target", ["repo:{path}", "{path}"])
def test_aliases_can_name_a_repository(repo, script: Script, monkeypatch: pytest.MonkeyPatch,
                                       target: str) -> None:
    path, fileids = repo
    script.config.db_aliases["thumbs"] = target.format(path=path)
    monkeypatch.setenv("TREADLE_DB_PICS", target.format(path=path))
    expected = [f"/bxgrid/fileid/{i}" for i in fileids]
    assert [f.path for f in SQLDataSet("thumbs", None, "images")] == expected
    assert [f.path for f in SQLDataSet("pics", "biometrics", "images")] == expected


def test_path_templates_see_vpath_and_a_path_column_is_used(repo) -> None:
    path, fileids = repo
    ds = SQLDataSet(str(path), None, "images", path="{vpath}.{colour}")
    assert [f.path for f in ds][0] == f"/bxgrid/fileid/{fileids[0]}.blue"
    relative = SQLDataSet(str(path), None, "images", path="data/{fileid}")
    assert [f.path for f in relative][0] == str(path.absolute() / "data" / str(fileids[0]))
    scans = list(SQLDataSet(str(path), None, "scans"))
    assert [f.path for f in scans] == [str(path.absolute() / "scans" / "1.raw"), "/abs/2.raw"]
    assert [f.vpath for f in scans] == [f"/bxgrid/fileid/{f.fileid}" for f in scans]


def test_a_table_with_neither_path_nor_fileid_is_an_error(repo) -> None:
    path, _ = repo
    with pytest.raises(WeaverError, match=r"no 'path' nor a 'fileid' column; .* its fields are "
                                          r"storeid, name, url, host, state, priority, uuid"):
        list(SQLDataSet(str(path), None, "stores"))


def test_vpath_is_not_a_column(repo) -> None:
    path, _ = repo
    ds = SQLDataSet(str(path), None, "images")
    with pytest.raises(WeaverError, match="no field 'vpath' .vpath is computed from fileid"):
        list(Query(ds, ds.c.vpath == "/bxgrid/fileid/1"))


def test_the_mount_comes_from_repo_toml(tmp_path: Path, script: Script) -> None:
    fileids = make_repository(tmp_path / "r", None, mount="/data")
    assert [f.path for f in SQLDataSet(f"repo:{tmp_path / 'r'}", None, "images")] == \
        [f"/data/fileid/{i}" for i in fileids]


def test_not_a_repository_is_an_error_naming_it(tmp_path: Path, script: Script) -> None:
    with pytest.raises(WeaverError, match=f"{tmp_path / 'nothing'}: not a repository"):
        SQLDataSet(f"repo:{tmp_path / 'nothing'}", None, "images")


def test_the_compile_cannot_write(repo) -> None:
    path, _ = repo
    ds = SQLDataSet(str(path), None, "images")
    list(ds)
    with pytest.raises(SQLAlchemyError, match="read-?only"):
        with ds.connect().begin() as conn:
            conn.execute(insert(ds._table).values(fileid=10**6, colour="evil"))


def test_a_whole_compile_leaves_the_database_as_it_was(tmp_path: Path, tw) -> None:
    path = tmp_path / "thumbs.repo"
    fileids = make_repository(path, None)
    database, wal = path / "metadata.db", path / "metadata.db-wal"
    before = (database.read_bytes(), database.stat().st_mtime_ns)
    wal_before = wal.read_bytes() if wal.exists() else b""
    (tmp_path / "thumbs.py").write_text(
        "imgs = SQLDataSet('pics', None, 'images')\n"
        "Map(SimpleFunction('cat'), Query(imgs, imgs.colour == 'blue'), '{basename}.txt')\n")
    sandbox, _ = tw.weave(tmp_path, "--db", f"pics=repo:{path}", "thumbs.py")
    dag = sandbox.dag()
    assert f"/bxgrid/fileid/{fileids[0]}" in dag and f"/bxgrid/fileid/{fileids[2]}" in dag
    assert f"/bxgrid/fileid/{fileids[1]}" not in dag
    assert (database.read_bytes(), database.stat().st_mtime_ns) == before
    # a WAL reader may leave an empty -wal file behind, never a frame of its own
    assert (wal.read_bytes() if wal.exists() else b"") == wal_before
    assert os.access(database, os.W_OK)  # the repository stays writable for its owner
