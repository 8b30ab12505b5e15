"""The Python API of docs/repo.md: the calls a program makes, on both databases."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from treadle.errors import FileAbsent, RepoError
from treadle.repo import Repository


def _manifest(tmp_path: Path, make_files) -> Path:
    images = make_files(4, size=3000, prefix="images", suffix=".jpg")
    manifest = tmp_path / "images.csv"
    with manifest.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["path", "recording", "colour"])
        for i, path in enumerate(images):
            out.writerow([path.relative_to(tmp_path), f"r{i}", "blue" if i % 2 else "brown"])
    return manifest


def test_ingest_query_read_and_copy_out(tmp_path: Path, repo_dir: Path, make_files) -> None:
    manifest = _manifest(tmp_path, make_files)
    with Repository.open(repo_dir, write=True) as repo:
        result = repo.ingest(manifest, table="images", key="recording", types={"thumb": "fileid"})
    assert result.added == 4 and len(result.fileids) == 4

    repo = Repository.open(repo_dir)
    try:
        blue = list(repo.query("images", where=[("colour", "=", "blue"), ("thumb", "is", None)]))
        assert [row["recording"] for row in blue] == ["r1", "r3"]
        assert blue[0]["vpath"] == f"/bxgrid/fileid/{blue[0]['fileid']}"
        assert repo.count("images", where=[("thumb", "is", None)]) == 4

        first = result.fileids[0]
        with repo.open_file(first) as f:
            assert f.read() == (tmp_path / "images" / "f000000.jpg").read_bytes()
        copies = repo.get(result.fileids[:2], tmp_path / "out")
        assert [p.name for p in copies] == [f"{i}.jpg" for i in result.fileids[:2]]
        assert copies[1].read_bytes() == (tmp_path / "images" / "f000001.jpg").read_bytes()

        with pytest.raises(FileAbsent):
            repo.open_file(max(result.fileids) + 100)
        with pytest.raises(RepoError, match="write=True"):
            repo.ingest(manifest, table="images", key="recording")
    finally:
        repo.close()


def test_init_makes_a_repository_that_opens(tmp_path: Path) -> None:
    with Repository.init(tmp_path / "new.repo", replicas=1) as repo:
        assert repo.path == tmp_path / "new.repo"
    with Repository.open(tmp_path / "new.repo") as again:
        assert again.context.config.replicas == 1
