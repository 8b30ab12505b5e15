"""``repo.toml``: what must be known before a repository's database can be opened (docs/repo.md).

The file is small and flat, so it is read with :mod:`tomllib` and written by hand (the standard
library has no TOML writer); every write is atomic, so a crash never leaves half a file.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from treadle.errors import RepoError

FORMAT = 1
CONFIG_NAME = "repo.toml"
SQLITE_PREFIX = "sqlite:///"


@dataclass(frozen=True)
class RepoConfig:
    """The settings of one repository, with the defaults a new one gets."""

    uuid: str
    format: int = FORMAT
    database: str = "sqlite:///metadata.db"
    checksum: str = "sha256"
    replicas: int = 1
    min_replicas: int = 1
    verify_max_age_days: int = 30
    mount: str = "/bxgrid"


def is_repository(path: Path) -> bool:
    """Whether ``path`` is a directory holding ``repo.toml``."""
    return (Path(path) / CONFIG_NAME).is_file()


def load_config(repo_dir: Path) -> RepoConfig:
    """Read and check ``REPO/repo.toml``; RepoError naming the file when it is missing or bad."""
    path = Path(repo_dir) / CONFIG_NAME
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RepoError(f"{repo_dir}: not a repository (no {CONFIG_NAME}; "
                        f"make one with treadle repo init)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise RepoError(f"{path}: cannot read: {e}") from None
    fields = {f.name: f for f in dataclasses.fields(RepoConfig)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RepoError(f"{path}: unknown setting {', '.join(unknown)}")
    if "uuid" not in data:
        raise RepoError(f"{path}: no uuid")
    for name, value in data.items():
        wanted = int if fields[name].type in ("int", int) else str
        if type(value) is not wanted:
            raise RepoError(f"{path}: {name} must be {'an integer' if wanted is int else 'a string'}")
    config = RepoConfig(**data)
    if config.format != FORMAT:
        raise RepoError(f"{path}: format {config.format} is not {FORMAT}, the one this treadle reads")
    if config.checksum != "sha256":
        raise RepoError(f"{path}: checksum {config.checksum!r} is not supported (only sha256)")
    if not 1 <= config.min_replicas <= config.replicas:
        raise RepoError(f"{path}: need 1 <= min_replicas <= replicas "
                        f"(have {config.min_replicas} and {config.replicas})")
    if not config.mount.startswith("/"):
        raise RepoError(f"{path}: mount must be an absolute path, not {config.mount!r}")
    return config


def toml_value(value: int | str) -> str:
    """An int, or a TOML basic string: quote, backslash and control characters escaped."""
    if isinstance(value, int):
        return str(value)
    escaped = "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F
                      else "\\" + c if c in '"\\' else c for c in value)
    return f'"{escaped}"'


def write_text_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves the old file or the new one.

    A temp file (made with ``mode`` from its first byte) is fsynced and renamed over ``path``,
    and the directory is fsynced so that the rename itself survives a power loss.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with open(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_config(repo_dir: Path, config: RepoConfig) -> None:
    """Write ``REPO/repo.toml`` atomically."""
    text = "".join(f"{f.name} = {toml_value(getattr(config, f.name))}\n"
                   for f in dataclasses.fields(RepoConfig))
    write_text_atomically(Path(repo_dir) / CONFIG_NAME, text)


def database_url(repo_dir: Path, config: RepoConfig) -> str:
    """The SQLAlchemy URL of the repository's database, a relative SQLite path resolved against REPO."""
    url = config.database
    if url.startswith(SQLITE_PREFIX):
        path = Path(url[len(SQLITE_PREFIX):])
        if not path.is_absolute():
            return SQLITE_PREFIX + str((Path(repo_dir) / path).resolve())
    return url
