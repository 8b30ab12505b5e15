"""repo.toml and checksums: what a repository is, read back as written, refused when wrong."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from treadle.errors import RepoError
from treadle.repo.checksums import (
    Hasher,
    format_checksum,
    hash_file,
    object_relpath,
    parse_checksum,
)
from treadle.repo.config import RepoConfig, database_url, is_repository, load_config, write_config


def test_config_round_trips(tmp_path: Path) -> None:
    config = RepoConfig(uuid="0f6b3a8e-6f43-4b43-9b8c-9a0e0b0e1a11", replicas=3, min_replicas=2,
                        mount='/data "x"', database="postgresql+psycopg://u@/db?host=/tmp/s")
    write_config(tmp_path, config)
    assert is_repository(tmp_path)
    assert load_config(tmp_path) == config
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temp file


def test_missing_and_bad_config_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(RepoError, match="not a repository"):
        load_config(tmp_path)
    (tmp_path / "repo.toml").write_text('uuid = "u"\nreplicas = "two"\n')
    with pytest.raises(RepoError, match=r"repo\.toml: replicas must be an integer"):
        load_config(tmp_path)
    (tmp_path / "repo.toml").write_text('uuid = "u"\nreplicas = 1\nmin_replicas = 2\n')
    with pytest.raises(RepoError, match="min_replicas"):
        load_config(tmp_path)
    (tmp_path / "repo.toml").write_text('uuid = "u"\ncolour = "blue"\n')
    with pytest.raises(RepoError, match="unknown setting colour"):
        load_config(tmp_path)
    (tmp_path / "repo.toml").write_text("uuid = \n")
    with pytest.raises(RepoError, match="cannot read"):
        load_config(tmp_path)


def test_relative_sqlite_path_is_relative_to_the_repository(tmp_path: Path) -> None:
    config = RepoConfig(uuid="u")
    assert database_url(tmp_path, config) == f"sqlite:///{tmp_path.resolve()}/metadata.db"
    other = RepoConfig(uuid="u", database="sqlite:////abs/x.db")
    assert database_url(tmp_path, other) == "sqlite:////abs/x.db"


def test_hash_file_matches_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # crosses the 1 MiB chunk boundary
    path = tmp_path / "f"
    path.write_bytes(data)
    assert hash_file(path) == (format_checksum(hashlib.sha256(data).hexdigest()), len(data))


@given(st.lists(st.binary(max_size=300), max_size=8))
def test_hasher_is_incremental(chunks: list[bytes]) -> None:
    hasher = Hasher()
    for chunk in chunks:
        hasher.update(chunk)
    whole = b"".join(chunks)
    assert hasher.checksum == "sha256:" + hashlib.sha256(whole).hexdigest()
    assert hasher.size == len(whole)


@given(st.text(max_size=80))
def test_parse_checksum_accepts_only_the_canonical_form(text: str) -> None:
    canonical = len(text) == 71 and text.startswith("sha256:") and all(c in "0123456789abcdef" for c in text[7:])
    if canonical:
        assert parse_checksum(text) == text[7:]
    else:
        with pytest.raises(RepoError):
            parse_checksum(text)


def test_object_path_spreads_by_leading_digits() -> None:
    hexdigest = "ab" + "cd" + "0" * 60
    assert str(object_relpath("sha256:" + hexdigest)) == f"objects/sha256/ab/cd/{hexdigest}"
    for bad in ("sha256:" + hexdigest.upper(), "md5:" + hexdigest[:32], "sha256:../" + hexdigest[3:]):
        with pytest.raises(RepoError):
            object_relpath(bad)


@given(st.text(max_size=40), st.text(max_size=40))
def test_any_text_setting_round_trips(mount: str, database: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = RepoConfig(uuid="u", mount="/" + mount, database=database)
        write_config(Path(tmp), config)
        assert load_config(Path(tmp)) == config
