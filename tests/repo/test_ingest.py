"""treadle repo ingest on both databases: manifests, types, links, resume, replace, stores, provenance."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from treadle.cli import main
from treadle.errors import RepoError, StoreUnreachable
from treadle.repo import schema
from treadle.repo.checksums import hash_file, object_relpath
from treadle.repo.config import load_config, write_config
from treadle.repo.context import RepoContext, open_context
from treadle.repo.db import utcnow
from treadle.repo.ingest import BATCH_ROWS, ingest

MakeFiles = Callable[..., list[Path]]


def write_manifest(path: Path, rows: Sequence[Mapping[str, object]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``treadle ARGV`` in-process: (exit status, stdout, stderr)."""
    try:
        main(argv)
        status = 0
    except SystemExit as e:
        status = int(e.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def rows_of(repo: Path, sql: str) -> list[tuple[object, ...]]:
    with open_context(repo) as ctx, ctx.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def count(repo: Path, table: str) -> int:
    return int(rows_of(repo, f"SELECT count(*) FROM {table}")[0][0])  # type: ignore[call-overload]  # an int


def replica_files(repo: Path) -> list[tuple[Path, str]]:
    """(object path, checksum) of every OK replica the database names."""
    with open_context(repo) as ctx, ctx.engine.connect() as conn:
        stores = {row.storeid: row for row in ctx.stores()}
        found = []
        for checksum, storeid in conn.execute(select(schema.replicas.c.checksum, schema.replicas.c.storeid)
                                              .where(schema.replicas.c.state == "OK")):
            root = repo / stores[storeid].url[len("dir:"):]
            found.append((root / object_relpath(checksum), checksum))
    return found


def assert_every_replica_has_its_bytes(repo: Path) -> None:
    for path, checksum in replica_files(repo):
        assert hash_file(path)[0] == checksum, path


@pytest.fixture
def writer(repo_dir: Path) -> Iterator[RepoContext]:
    """The repository opened for writing, as the Python API's users do."""
    ctx = open_context(repo_dir, write=True)
    yield ctx
    ctx.close()


def test_a_csv_manifest_becomes_typed_rows_with_replicas_in_both_stores(
        repo_dir: Path, make_files: MakeFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = make_files(3, size=5000, suffix=".JPG")
    manifest = write_manifest(tmp_path / "photos.csv", [
        {"path": f"src/{p.name}", "recording": 100 + i, "subject": f"{i}", "score": f"{i}.5",
         "camera": "" if i == 2 else "nikon"} for i, p in enumerate(paths)])
    status, out, err = run(["repo", "ingest", str(repo_dir), str(manifest), "--table", "images",
                            "--key", "recording", "--json"], capsys)
    assert status == 0, err
    result = json.loads(out)
    assert result["added"] == 3 and result["skipped"] == 0 and result["bytes"] == 15000
    assert result["table"] == "images" and result["warnings"] == []
    fileids = result["fileids"]
    assert len(fileids) == 3 and fileids == sorted(fileids)
    assert rows_of(repo_dir, "SELECT fileid, recording, subject, score, camera FROM images ORDER BY fileid") == [
        (fileids[0], 100, 0, 0.5, "nikon"), (fileids[1], 101, 1, 1.5, "nikon"), (fileids[2], 102, 2, 2.5, None)]
    files = rows_of(repo_dir, "SELECT fileid, checksum, size, extension, media_type, state, source, ingest_id "
                              "FROM files ORDER BY fileid")
    assert [f[0] for f in files] == fileids
    for (_, checksum, size, extension, media_type, state, source, ingest_id), path in zip(files, paths, strict=True):
        assert (checksum, size) == hash_file(path)
        assert (extension, media_type, state, source) == ("jpg", "image/jpeg", "OK", f"src/{path.name}")
        assert ingest_id == result["ingest_id"]
    replicas = rows_of(repo_dir, "SELECT checksum, storeid, state, lastcheck, check_stat FROM replicas")
    assert len(replicas) == 6 and {r[2] for r in replicas} == {"OK"}
    assert all(r[3] is not None and json.loads(str(r[4]))["size"] == 5000 for r in replicas)
    assert_every_replica_has_its_bytes(repo_dir)
    assert len(replica_files(repo_dir)) == 6


def test_json_lines_a_json_array_and_files_with_a_regex(
        repo_dir: Path, make_files: MakeFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = make_files(2)
    (tmp_path / "rows.jsonl").write_text(json.dumps({"path": f"src/{a.name}", "n": 1}) + "\n")
    (tmp_path / "rows.json").write_text(json.dumps([{"path": f"src/{b.name}", "label": "x"}]))
    for name, table in (("rows.jsonl", "lines"), ("rows.json", "arr")):
        status, _, err = run(["repo", "ingest", str(repo_dir), str(tmp_path / name), "--table", table], capsys)
        assert status == 0, err
    assert rows_of(repo_dir, "SELECT n FROM lines") == [(1,)]
    assert rows_of(repo_dir, "SELECT label FROM arr") == [("x",)]
    thumbs = make_files(2, prefix="thumbs", suffix=".png")
    status, out, err = run(["repo", "ingest", str(repo_dir), "--files", *map(str, thumbs), "--table", "thumbs",
                            "--name-regex", r"f(?P<number>[0-9]+)[.]png$", "--json"], capsys)
    assert status == 0, err
    fileids = json.loads(out)["fileids"]
    assert rows_of(repo_dir, "SELECT fileid, number FROM thumbs ORDER BY fileid") == [
        (fileids[0], int(thumbs[0].stem[1:])), (fileids[1], int(thumbs[1].stem[1:]))]
    assert rows_of(repo_dir, f"SELECT source FROM files WHERE fileid = {fileids[0]}") == [(str(thumbs[0]),)]


def test_types_fix_a_type_and_add_a_link_column(
        repo_dir: Path, make_files: MakeFiles, tmp_path: Path, writer: RepoContext) -> None:
    (path,) = make_files(1)
    manifest = write_manifest(tmp_path / "m.csv", [{"path": f"src/{path.name}", "subject": "007"}])
    ingest(writer, manifest, table="images", types={"subject": "text", "thumb": "fileid"})
    assert rows_of(repo_dir, "SELECT subject, thumb FROM images") == [("007", None)]
    with writer.engine.connect() as conn:
        table = schema.reflect_user_table(conn, "images")
        assert schema.column_kind(table.c.thumb) == "fileid"
        assert schema.column_kind(table.c.subject) == "text"


def test_index_makes_an_index(repo_dir: Path, make_files: MakeFiles, tmp_path: Path, writer: RepoContext) -> None:
    (path,) = make_files(1)
    manifest = write_manifest(tmp_path / "m.csv", [{"path": f"src/{path.name}", "camera": "x", "lens": "y"}])
    ingest(writer, manifest, table="images", index=["camera"])
    ingest(writer, manifest, table="images", index=["lens"])  # on a table that exists
    with writer.engine.connect() as conn:
        indexed = {tuple(c.name for c in ix.columns) for ix in schema.reflect_user_table(conn, "images").indexes}
    assert {("camera",), ("lens",)} <= indexed


def _bad_batch(tmp_path: Path, make_files: MakeFiles, bad: dict[str, object]) -> tuple[Path, int]:
    """A manifest of BATCH_ROWS + 10 rows whose row BATCH_ROWS + 5 (in the second batch) is ``bad``."""
    paths = make_files(BATCH_ROWS + 10, size=100)
    rows: list[dict[str, object]] = [{"path": f"src/{p.name}", "n": i} for i, p in enumerate(paths)]
    rows[BATCH_ROWS + 5] = {**rows[BATCH_ROWS + 5], **bad}
    return write_manifest(tmp_path / "m.csv", rows), BATCH_ROWS + 5 + 2  # its line: header is line 1


@pytest.mark.parametrize(("bad", "reason"), [
    ({"n": "seven"}, "column 'n': 'seven' is not an integer"),
    ({"path": "src/missing.dat"}, "cannot read src/missing.dat: No such file or directory"),
])
def test_a_bad_row_names_manifest_line_and_reason_and_commits_nothing_of_its_batch(
        repo_dir: Path, make_files: MakeFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        bad: dict[str, object], reason: str) -> None:
    manifest, line = _bad_batch(tmp_path, make_files, bad)
    status, _, err = run(["repo", "ingest", str(repo_dir), str(manifest), "--table", "t"], capsys)
    assert status == 1
    assert f"treadle: {manifest}:{line}: {reason}; nothing of this batch was added" in err
    assert count(repo_dir, "t") == BATCH_ROWS  # the first batch stays
    assert count(repo_dir, "files") == BATCH_ROWS
    assert rows_of(repo_dir, "SELECT state, rows FROM ingests") == [("failed", BATCH_ROWS)]


def test_skip_bad_reports_bad_rows_and_goes_on(
        repo_dir: Path, make_files: MakeFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest, line = _bad_batch(tmp_path, make_files, {"n": "seven"})
    status, out, err = run(["repo", "ingest", str(repo_dir), str(manifest), "--table", "t", "--skip-bad",
                            "--json"], capsys)
    assert status == 0, err
    result = json.loads(out)
    assert result["added"] == BATCH_ROWS + 9 and result["skipped"] == 1
    assert result["warnings"] == [f"skipped {manifest}:{line}: column 'n': 'seven' is not an integer"]
    assert f"warning: skipped {manifest}:{line}" in err
    assert count(repo_dir, "t") == BATCH_ROWS + 9


def test_a_first_batch_of_only_bad_rows_leaves_the_table_to_the_next(
        repo_dir: Path, make_files: MakeFiles, tmp_path: Path, writer: RepoContext) -> None:
    paths = make_files(BATCH_ROWS + 2, size=10)
    rows = [{"path": f"src/{p.name}", "n": i if i >= BATCH_ROWS else "", "label": ""} for i, p in enumerate(paths)]
    for row in rows[:BATCH_ROWS]:
        row["path"] = "src/missing.dat"
    result = ingest(writer, write_manifest(tmp_path / "m.csv", rows), table="t", skip_bad=True)
    assert (result.added, result.skipped, len(result.warnings)) == (2, BATCH_ROWS, BATCH_ROWS)
    # the types come from the batch that made the table: n is int there
    assert rows_of(repo_dir, "SELECT n FROM t ORDER BY n") == [(BATCH_ROWS,), (BATCH_ROWS + 1,)]


def test_a_key_repeated_in_the_manifest_is_a_bad_value(
        repo_dir: Path, make_files: MakeFiles, tmp_path: Path, writer: RepoContext) -> None:
    a, b = make_files(2)
    manifest = write_manifest(tmp_path / "m.csv", [{"path": f"src/{a.name}", "k": 1}, {"path": f"src/{b.name}", "k": 1}])
    with pytest.raises(RepoError, match=r"m.csv:3: column 'k': the key 1 appears earlier in the manifest"):
        ingest(writer, manifest, table="t", key="k")
    assert count(repo_dir, "files") == 0


def test_rerunning_resumes_by_key(repo_dir: Path, make_files: MakeFiles, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    paths = make_files(4)
    rows = [{"path": f"src/{p.name}", "k": f"r{i}"} for i, p in enumerate(paths)]
    write_manifest(tmp_path / "m.csv", rows[:2])
    argv = ["repo", "ingest", str(repo_dir), str(tmp_path / "m.csv"), "--table", "t", "--key", "k", "--json"]
    assert run(argv, capsys)[0] == 0
    write_manifest(tmp_path / "m.csv", rows)
    status, out, err = run(argv, capsys)
    assert status == 0, err
    assert "resuming: 2 of 4 rows already present" in err
    assert (json.loads(out)["added"], json.loads(out)["skipped"]) == (2, 2)
    assert rows_of(repo_dir, "SELECT k FROM t ORDER BY fileid") == [("r0",), ("r1",), ("r2",), ("r3",)]
    assert count(repo_dir, "files") == 4


def test_rerunning_without_a_key_resumes_by_source_and_bytes(
        repo_dir: Path, make_files: MakeFiles, writer: RepoContext) -> None:
    paths = make_files(3)
    files = [str(p) for p in paths]
    assert ingest(writer, None, files=files[:2], table="t").added == 2
    paths[1].write_bytes(b"changed")
    lines: list[str] = []
    result = ingest(writer, None, files=files, table="t", progress=lines.append)
    assert "resuming: 2 of 3 rows already present" in lines
    # the unchanged file is present; the changed one and the new one are added
    assert (result.added, result.skipped) == (2, 1)
    assert count(repo_dir, "t") == 4


def test_a_changed_source_is_an_error_unless_replace(
        repo_dir: Path, make_files: MakeFiles, tmp_path: Path, writer: RepoContext) -> None:
    (path,) = make_files(1)
    manifest = write_manifest(tmp_path / "m.csv", [{"path": f"src/{path.name}", "k": 1, "note": "old"}])
    (old,) = ingest(writer, manifest, table="t", key="k").fileids
    path.write_bytes(b"new bytes")
    write_manifest(manifest, [{"path": f"src/{path.name}", "k": 1, "note": "new"}])
    with pytest.raises(RepoError, match=rf"m.csv:2: src/{path.name} has changed since fileid {old} was ingested"):
        ingest(writer, manifest, table="t", key="k")
    (new,) = ingest(writer, manifest, table="t", key="k", replace=True).fileids
    assert rows_of(repo_dir, "SELECT fileid, note FROM t") == [(new, "new")]
    assert rows_of(repo_dir, f"SELECT state FROM files WHERE fileid = {old}") == [("OK",)]  # the old one stays
    assert_every_replica_has_its_bytes(repo_dir)


def test_skip_existing_does_not_read_present_keys(
        repo_dir: Path, make_files: MakeFiles, tmp_path: Path, writer: RepoContext) -> None:
    a, b = make_files(2)
    manifest = write_manifest(tmp_path / "m.csv", [{"path": f"src/{a.name}", "k": 1}, {"path": f"src/{b.name}", "k": 2}])
    ingest(writer, manifest, table="t", key="k")
    a.unlink()
    result = ingest(writer, manifest, table="t", key="k", skip_existing=True)
    assert (result.added, result.skipped) == (0, 2)
    with pytest.raises(RepoError, match="No such file"):
        ingest(writer, manifest, table="t", key="k")  # without it, the source is read and hashed


def test_link_ties_new_files_to_existing_rows(
        repo_dir: Path, make_files: MakeFiles, tmp_path: Path, writer: RepoContext,
        capsys: pytest.CaptureFixture[str]) -> None:
    images = make_files(3, prefix="images")
    manifest = write_manifest(tmp_path / "images.csv", [
        {"path": f"images/{p.name}", "recording": 10 + i} for i, p in enumerate(images)])
    image_ids = ingest(writer, manifest, table="images", key="recording").fileids
    writer.close()
    thumbs = make_files(2, prefix="thumbs")
    argv = ["repo", "ingest", str(repo_dir), "--files", str(thumbs[0]), str(thumbs[1]), "--table", "thumbs",
            "--name-regex", r"f(?P<rec>[0-9]+)", "--link", "images.thumb=rec:recording", "--json"]
    # the thumbs' numbers (3, 4) name no recording: a dangling link, nothing added
    status, _, err = run(argv, capsys)
    assert status == 1 and "--link images.thumb=rec:recording: no row of images has recording = 3" in err
    assert count(repo_dir, "files") == 3
    for i, thumb in enumerate(thumbs):
        thumb.rename(thumb.with_name(f"f{10 + i}.dat"))
    argv[4:6] = [str(thumbs[0].with_name("f10.dat")), str(thumbs[1].with_name("f11.dat"))]
    status, out, err = run(argv, capsys)
    assert status == 0, err
    thumb_ids = json.loads(out)["fileids"]
    assert rows_of(repo_dir, "SELECT fileid, thumb FROM images ORDER BY fileid") == [
        (image_ids[0], thumb_ids[0]), (image_ids[1], thumb_ids[1]), (image_ids[2], None)]
    # linking again (a new table of the same files) is refused: the rows are linked elsewhere
    argv[argv.index("thumbs")] = "thumbs2"
    status, _, err = run(argv, capsys)
    assert status == 1 and f"already linked to fileid {thumb_ids[0]} (--replace" in err
    status, out, err = run([*argv, "--replace"], capsys)
    assert status == 0, err
    again = json.loads(out)["fileids"]
    assert rows_of(repo_dir, "SELECT thumb FROM images ORDER BY fileid") == [(again[0],), (again[1],), (None,)]


def test_a_second_writer_is_refused_naming_the_first(
        repo_dir: Path, make_files: MakeFiles, capsys: pytest.CaptureFixture[str]) -> None:
    (path,) = make_files(1)
    with open_context(repo_dir, write=True):
        status, _, err = run(["repo", "ingest", str(repo_dir), "--files", str(path), "--table", "t"], capsys)
    assert status == 1
    assert f"the repository is being written by {socket.gethostname()} pid {os.getpid()}" in err
    assert run(["repo", "ingest", str(repo_dir), "--files", str(path), "--table", "t"], capsys)[0] == 0


def _move_store_b_away(repo: Path) -> Path:
    away = repo / "b-away"
    (repo / "stores" / "b").rename(away)
    return away


def test_an_unreachable_store_is_skipped_while_min_replicas_can_be_met(
        repo_dir: Path, make_files: MakeFiles, capsys: pytest.CaptureFixture[str]) -> None:
    paths = make_files(2)
    _move_store_b_away(repo_dir)
    status, out, err = run(["repo", "ingest", str(repo_dir), "--files", *map(str, paths), "--table", "t",
                            "--json"], capsys)
    assert status == 0, err
    warnings = json.loads(out)["warnings"]
    assert len(warnings) == 1 and "store b is unreachable" in warnings[0] and "fsck --repair" in warnings[0]
    assert count(repo_dir, "t") == 2
    assert rows_of(repo_dir, "SELECT DISTINCT s.name FROM replicas r JOIN stores s ON r.storeid = s.storeid") == [("a",)]


def test_too_few_usable_stores_fail_the_batch_before_its_transaction(
        repo_dir: Path, make_files: MakeFiles, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(repo_dir, dataclasses.replace(load_config(repo_dir), min_replicas=2))
    paths = make_files(2)
    away = _move_store_b_away(repo_dir)
    status, _, err = run(["repo", "ingest", str(repo_dir), "--files", *map(str, paths), "--table", "t"], capsys)
    assert status == 2
    assert "treadle: only 1 of min_replicas=2 stores is usable: b is unreachable" in err
    assert count(repo_dir, "files") == 0 and count(repo_dir, "objects") == 0
    away.rename(repo_dir / "stores" / "b")
    assert run(["repo", "ingest", str(repo_dir), "--files", *map(str, paths), "--table", "t"], capsys)[0] == 0
    assert count(repo_dir, "replicas") == 4


def test_a_store_failing_in_the_middle_of_a_batch_counts_against_min_replicas(
        repo_dir: Path, make_files: MakeFiles, writer: RepoContext) -> None:
    paths = make_files(6)
    # b answers its check but cannot take objects: its objects/ is a file
    objects = repo_dir / "stores" / "b" / "objects"
    shutil.rmtree(objects)
    objects.write_text("not a directory")
    result = ingest(writer, None, files=[str(p) for p in paths[:3]], table="t")
    assert result.added == 3
    assert len(result.warnings) == 1 and result.warnings[0].startswith("store b did not take ")
    assert count(repo_dir, "replicas") == 3
    write_config(repo_dir, dataclasses.replace(load_config(repo_dir), min_replicas=2))
    writer.config = load_config(repo_dir)
    with pytest.raises(StoreUnreachable, match="only 1 of min_replicas=2 stores is usable for"):
        ingest(writer, None, files=[str(p) for p in paths[3:]], table="t")
    assert count(repo_dir, "files") == 3


def test_a_lost_object_is_restored_by_ingesting_its_bytes_again(
        repo_dir: Path, make_files: MakeFiles, tmp_path: Path, writer: RepoContext) -> None:
    (path,) = make_files(1)
    (fileid,) = ingest(writer, None, files=[str(path)], table="t").fileids
    checksum = hash_file(path)[0]
    for object_path, _ in replica_files(repo_dir):
        object_path.unlink()
    with writer.engine.begin() as conn:  # what fsck records for missing replicas
        conn.execute(schema.replicas.update().values(state="BAD"))
    copy = tmp_path / "copy-of-it.dat"
    shutil.copy(path, copy)
    result = ingest(writer, None, files=[str(copy)], table="t")
    assert result.added == 1
    assert rows_of(repo_dir, f"SELECT state FROM replicas WHERE checksum = '{checksum}'") == [("OK",), ("OK",)]
    assert_every_replica_has_its_bytes(repo_dir)
    assert len(replica_files(repo_dir)) == 2
    assert rows_of(repo_dir, f"SELECT checksum FROM files WHERE fileid = {fileid}") == [(checksum,)]


def test_ingests_record_provenance_and_dead_runs_become_interrupted(
        repo_dir: Path, make_files: MakeFiles, writer: RepoContext) -> None:
    with writer.engine.begin() as conn:
        conn.execute(schema.ingests.insert().values(
            table_name="t", source="old.csv", command="treadle repo ingest ...", host="elsewhere", pid=1,
            started_at=utcnow(), state="running", rows=0, bytes=0))
    paths = make_files(2, size=10)
    result = ingest(writer, None, files=[str(p) for p in paths], table="t", command="treadle repo ingest X")
    rows = rows_of(repo_dir, "SELECT ingest_id, state, command, host, pid, rows, bytes, source, "
                             "finished_at IS NOT NULL FROM ingests ORDER BY ingest_id")
    assert rows[0][1] == "interrupted"
    assert rows[1] == (result.ingest_id, "done", "treadle repo ingest X", socket.gethostname(), os.getpid(),
                       2, 20, "--files", True)


def test_equal_bytes_share_one_object(repo_dir: Path, tmp_path: Path, writer: RepoContext) -> None:
    (tmp_path / "one.dat").write_bytes(b"same")
    (tmp_path / "two.dat").write_bytes(b"same")
    rows = [{"path": name, "k": i} for i in range(3) for name in ("one.dat", "two.dat")]
    for i, row in enumerate(rows):
        row["k"] = i
    manifest = write_manifest(tmp_path / "m.csv", rows)
    assert ingest(writer, manifest, table="t", key="k").added == 6
    assert (count(repo_dir, "files"), count(repo_dir, "objects"), count(repo_dir, "replicas")) == (6, 1, 2)


def test_extension_is_the_last_suffix_of_the_name_lower_case(repo_dir: Path, tmp_path: Path,
                                                            writer: RepoContext) -> None:
    names = ["x.tar.GZ", ".hidden", "..two.Txt", "plain", "ends.", "d.ir/file", "d.ir/.dot.PNG"]
    for name in names:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
    manifest = write_manifest(tmp_path / "m.csv", [{"path": name} for name in names])
    assert ingest(writer, manifest, table="t").added == len(names)
    assert rows_of(repo_dir, "SELECT source, extension, media_type FROM files ORDER BY fileid") == [
        ("x.tar.GZ", "gz", None), (".hidden", "", None), ("..two.Txt", "txt", "text/plain"),
        ("plain", "", None), ("ends.", "", None), ("d.ir/file", "", None), ("d.ir/.dot.PNG", "png", "image/png")]


def test_refused_names_and_options(repo_dir: Path, make_files: MakeFiles, tmp_path: Path,
                                   writer: RepoContext, capsys: pytest.CaptureFixture[str]) -> None:
    (path,) = make_files(1)
    for table in ("files", "x; DROP TABLE files", "vpath"):
        with pytest.raises(RepoError, match="bad table"):
            ingest(writer, None, files=[str(path)], table=table)
    manifest = write_manifest(tmp_path / "m.csv", [{"path": f"src/{path.name}", "bad name": 1}])
    with pytest.raises(RepoError, match="bad column 'bad name'"):
        ingest(writer, manifest, table="t")
    with pytest.raises(RepoError, match="--key nope: the manifest has no such column"):
        ingest(writer, None, files=[str(path)], table="t", key="nope")
    with pytest.raises(RepoError, match="--skip-existing needs --key"):
        ingest(writer, None, files=[str(path)], table="t", skip_existing=True)
    with pytest.raises(RepoError, match="write TABLE.COLUMN=FIELD"):
        ingest(writer, None, files=[str(path)], table="t", links=["images=thumb"])
    writer.close()
    status, _, err = run(["repo", "ingest", str(repo_dir), "a.csv", "b.csv", "--table", "t"], capsys)
    assert status == 1 and "give one MANIFEST, or --files PATH..." in err
    status, _, err = run(["repo", "ingest", str(repo_dir), "--files", "--table", "t"], capsys)
    assert status == 1 and "--files needs at least one PATH" in err
    assert count(repo_dir, "files") == 0
    with open_context(repo_dir) as ctx, ctx.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.files)).scalar_one() == 0
