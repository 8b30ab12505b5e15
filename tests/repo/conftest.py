"""Shared fixtures of the repository tests: a real PostgreSQL server, the `database_url`
parameter that runs a test on SQLite and on PostgreSQL, a two-store repository, and files.

The server is Debian's `postgresql` (installed by `make system-packages` when the suite runs
as root): one server per test run, a fresh database per test, Unix socket only, fsync off
(test data only), stopped at the end of the run.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def _postgres_binaries() -> Path | None:
    """The directory holding initdb and pg_ctl: Debian keeps them off PATH, per version."""
    versions = Path("/usr/lib/postgresql")
    if versions.is_dir():
        for version in sorted(versions.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0,
                              reverse=True):
            if (version / "bin" / "initdb").exists() and (version / "bin" / "pg_ctl").exists():
                return version / "bin"
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class PostgresServer:
    """One PostgreSQL server in a directory of its own, reachable only through its Unix socket."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        # directly under /tmp: pytest's temp root is root-only, and the server runs as `postgres`
        self.dir = Path(tempfile.mkdtemp(prefix="treadle-pg-", dir="/tmp"))
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self._names = itertools.count(1)

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def start(self) -> None:
        data = self.dir / "data"
        self._run(str(self.bin_dir / "initdb"), "-D", str(data), "-U", "treadle", "-A", "trust")
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(self.dir / "log"),
                  "-o", f"-k {self.dir} -h '' -F", "start")

    def stop(self) -> None:
        try:
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate",
                      "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def new_database(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(f"host={self.dir} user=treadle dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://treadle@/{name}?host={self.dir}"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The run's PostgreSQL server, started on first use; without the package, skip saying why."""
    bin_dir = _postgres_binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql; make system-packages)")
    server = PostgresServer(bin_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Runs a test on both databases: None (the embedded SQLite default) or a fresh PostgreSQL URL."""
    if request.param == "sqlite":
        return None
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_database()


@pytest.fixture
def repo_dir(tmp_path: Path, database_url: str | None) -> Path:
    """A fresh repository with two dir stores, `a` and `b`, two replicas wanted, one required."""
    from treadle.repo.context import init_repository

    path = tmp_path / "test.repo"
    ctx = init_repository(path, database=database_url,
                          stores=[("a", "dir:stores/a"), ("b", "dir:stores/b")],
                          replicas=2, min_replicas=1)
    ctx.close()
    return path


@pytest.fixture
def make_files(tmp_path: Path) -> Callable[..., list[Path]]:
    """Write ``n`` files of distinct bytes under ``tmp_path/<prefix>``; return their paths."""
    counter = itertools.count()

    def make(n: int, size: int = 1000, prefix: str = "src", suffix: str = ".dat") -> list[Path]:
        where = tmp_path / prefix
        where.mkdir(parents=True, exist_ok=True)
        paths = []
        for _ in range(n):
            i = next(counter)
            seed = f"file {i} of {prefix}\n".encode()
            path = where / f"f{i:06d}{suffix}"
            path.write_bytes((seed * (size // len(seed) + 1))[:size])
            paths.append(path)
        return paths

    return make
