"""Suite-wide settings: the reference tools' environment, the `reference`, `slurm` and `condor` markers,
the one-node Slurm cluster, a small disk, and a real PostgreSQL server with the `database_url`
parameter that runs a test on SQLite and on PostgreSQL.

The PostgreSQL server is Debian's `postgresql` (installed by `make system-packages` when the suite
runs as root): one server per test run, a fresh database per test, Unix socket only, fsync off (test
data only), stopped at the end of the run.
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

# The Debian build of cctools links Open MPI, which refuses to start as root
# unless told that this is intended (spec workqueue.md §6).
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")

HAVE_REFERENCE = shutil.which("makeflow") is not None and shutil.which("work_queue_worker") is not None
HAVE_CONDOR = shutil.which("condor_submit") is not None
ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `reference` need cctools, tests marked `condor` a real HTCondor pool:
    skip them, saying why, where it is absent."""
    skips = []
    if not HAVE_REFERENCE:
        skips.append(("reference", "reference cctools (Debian coop-computing-tools) not installed"))
    if not HAVE_CONDOR:
        skips.append(("condor", "HTCondor's condor_submit is not on PATH (no pool here; see docs/batch.md)"))
    for item in items:
        for marker, reason in skips:
            # the marker itself, not a keyword: a parameter named "condor" is no such test
            if item.get_closest_marker(marker) is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


def _cluster_answers() -> bool:
    """The test cluster's node is up and takes jobs."""
    if shutil.which("sinfo") is None:
        return False
    r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return r.returncode == 0 and any(s.strip("*~#") in ("idle", "mixed", "allocated")
                                     for s in r.stdout.split())


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[None]:
    """The one-node Slurm cluster of ci/slurm-up.sh: reused when it runs, else started (as root) and,
    only then, stopped at the end of the test run. Without root and without a cluster, skip."""
    if _cluster_answers():
        yield
        return
    if os.geteuid() != 0:
        pytest.skip("no Slurm cluster answers and starting one needs root (make slurm-up)")
    up = subprocess.run(["bash", str(ROOT / "ci" / "slurm-up.sh")], capture_output=True, text=True)
    if up.returncode != 0:
        pytest.fail(f"ci/slurm-up.sh failed:\n{up.stdout}{up.stderr}")
    try:
        yield
    finally:
        subprocess.run(["bash", str(ROOT / "ci" / "slurm-down.sh")], capture_output=True)


@pytest.fixture(autouse=True)
def _slurm_marker_needs_the_cluster(request: pytest.FixtureRequest) -> None:
    """A test marked `slurm` gets the cluster (started once per test run) or is skipped with the reason."""
    if request.node.get_closest_marker("slurm") is not None:
        request.getfixturevalue("slurm_cluster")


@pytest.fixture
def small_disk() -> Iterator[Callable[..., Path]]:
    """Mounts small tmpfs filesystems where asked, so a test fills a disk for real (ENOSPC).

    ``small_disk(where, size="256k")`` returns ``where``; every mount is undone at teardown.
    Mounting needs root: elsewhere the test is skipped, saying why.
    """
    mounted: list[Path] = []

    def mount(where: Path, size: str = "256k") -> Path:
        where.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
        mounted.append(where)
        return where

    try:
        yield mount
    finally:
        for where in reversed(mounted):
            if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(where)], capture_output=True)


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
        # the C locale: text sorts by code point, whatever the machine's own locale
        self._run(str(self.bin_dir / "initdb"), "-D", str(data), "-U", "treadle", "-A", "trust",
                  "-E", "UTF8", "--locale=C")
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
