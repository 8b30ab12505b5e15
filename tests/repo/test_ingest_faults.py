"""Ingest under faults, with real processes and real signals: Ctrl-C once and twice, SIGKILL at
random moments, readers during an ingest (docs/repo.md, "Ingest" and the README's promises)."""

from __future__ import annotations

import random
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError, ProgrammingError
from tests._wait import wait_for
from tests.repo.test_ingest import (
    assert_every_replica_has_its_bytes,
    count,
    rows_of,
    write_manifest,
)

from treadle.repo.context import init_repository, open_context
from treadle.repo.fsck import fsck

TREADLE = [sys.executable, "-m", "treadle"]
MakeFiles = Callable[..., list[Path]]


class Ingest:
    """``treadle repo ingest`` in a process of its own, its stderr collected line by line."""

    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen([*TREADLE, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def saw(self, start: str) -> bool:
        return any(line.startswith(start) for line in self.lines)

    def wait(self, timeout: float = 120) -> int:
        status = self.process.wait(timeout)
        self._reader.join(timeout)
        return status

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)


def ingest_argv(repo: Path, manifest: Path, *extra: str) -> list[str]:
    return ["repo", "ingest", str(repo), str(manifest), "--table", "images", "--key", "k", *extra]


def manifest_of(tmp_path: Path, paths: list[Path]) -> Path:
    return write_manifest(tmp_path / "images.csv",
                          [{"path": f"src/{p.name}", "k": i, "n": i % 7} for i, p in enumerate(paths)])


def resume_argv(stderr: str) -> list[str]:
    """The command the interrupted ingest said resumes it, as argv for this Python."""
    command = stderr.rsplit("Resume with: ", 1)[1].splitlines()[0]
    argv = shlex.split(command)
    assert argv[:3] == ["treadle", "repo", "ingest"]
    return argv[1:]


def ingest_states(repo: Path) -> list[str]:
    return [str(r[0]) for r in rows_of(repo, "SELECT state FROM ingests ORDER BY ingest_id")]


@pytest.mark.slow
def test_ctrl_c_once_commits_the_current_batch_and_says_how_to_resume(
        repo_dir: Path, make_files: MakeFiles, tmp_path: Path) -> None:
    manifest = manifest_of(tmp_path, make_files(2000, size=20_000))
    run = Ingest(ingest_argv(repo_dir, manifest, "--jobs", "1"))
    wait_for(lambda: run.saw("batch 1:") or run.process.poll() is not None, 60, "the first batch to commit")
    run.process.send_signal(signal.SIGINT)
    assert run.wait() == 130, run.stderr
    assert "stopping after the current batch commits" in run.stderr
    assert "every batch so far is in. Resume with: treadle repo ingest" in run.stderr
    done = count(repo_dir, "images")
    # every batch the command reported is in, whole, and the signal stopped it early: a signal
    # between two batches starts no new one, one during a batch lets that batch commit
    reported = sum(line.startswith("batch ") for line in run.lines)
    assert 500 <= done == 500 * reported < 2000, run.stderr
    assert ingest_states(repo_dir) == ["interrupted"]

    again = Ingest(resume_argv(run.stderr))
    assert again.wait() == 0, again.stderr
    assert f"resuming: {done:,} of 2,000 rows already present" in again.stderr
    assert count(repo_dir, "images") == 2000
    assert ingest_states(repo_dir) == ["interrupted", "done"]


def test_a_second_ctrl_c_abandons_the_batch(repo_dir: Path, make_files: MakeFiles, tmp_path: Path) -> None:
    manifest = manifest_of(tmp_path, make_files(500, size=50_000))
    objects = repo_dir / "stores" / "a" / "objects"
    run = Ingest(ingest_argv(repo_dir, manifest, "--jobs", "1"))
    wait_for(lambda: any(p.is_file() for p in objects.rglob("*")), 60, "the first copies")
    run.process.send_signal(signal.SIGINT)
    wait_for(lambda: run.saw("treadle: stopping after"), 10, "the first signal to be taken")
    run.process.send_signal(signal.SIGINT)
    assert run.wait() == 130, run.stderr
    assert "the current batch was abandoned" in run.stderr
    assert "Traceback" not in run.stderr
    assert count(repo_dir, "files") == 0 and count(repo_dir, "objects") == 0
    assert ingest_states(repo_dir) == ["interrupted"]
    again = Ingest(resume_argv(run.stderr))
    assert again.wait() == 0, again.stderr
    assert count(repo_dir, "images") == 500


def rows_by_key(repo: Path) -> list[tuple[object, ...]]:
    return rows_of(repo, "SELECT i.k, i.n, f.checksum, f.size, f.source FROM images i "
                         "JOIN files f ON f.fileid = i.fileid ORDER BY i.k")


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_and_a_rerun_completes(
        repo_dir: Path, make_files: MakeFiles, tmp_path: Path) -> None:
    manifest = manifest_of(tmp_path, make_files(2000, size=3000))
    reference = tmp_path / "reference.repo"
    init_repository(reference, stores=[("a", "dir:stores/a"), ("b", "dir:stores/b")], replicas=2).close()
    assert Ingest(ingest_argv(reference, manifest)).wait() == 0

    rng = random.Random(13)
    for _ in range(4):
        run = Ingest(ingest_argv(repo_dir, manifest, "--jobs", "2"))
        time.sleep(rng.uniform(0.3, 2.5))  # no condition to poll: a random moment is the point
        run.process.kill()
        run.wait()
        assert_every_replica_has_its_bytes(repo_dir)  # whatever is committed is whole
    final = Ingest(ingest_argv(repo_dir, manifest))
    assert final.wait() == 0, final.stderr

    assert rows_by_key(repo_dir) == rows_by_key(reference)
    assert_every_replica_has_its_bytes(repo_dir)
    assert rows_of(repo_dir, "SELECT count(*) FROM replicas WHERE state = 'OK'") == [(2 * count(repo_dir, "objects"),)]
    states = ingest_states(repo_dir)
    assert states[-1] == "done" and all(s in ("interrupted", "done") for s in states[:-1])
    assert "interrupted" in states  # a kill did land in the middle of an ingest
    findings: list[str] = []
    with open_context(repo_dir) as ctx:
        result = fsck(ctx, full=True, report=findings.append)
    assert {f.kind for f in result.findings} <= {"orphan"}, findings
    assert result.exit_status == 0 and result.lost == []


def _counts(repo: Path) -> Iterator[tuple[int, int]]:
    """(rows of images, rows of files) read in one statement, so from one snapshot."""
    with open_context(repo) as ctx:
        while True:
            try:
                with ctx.engine.connect() as conn:
                    yield tuple(conn.execute(text(  # type: ignore[misc]  # a two-column row
                        "SELECT (SELECT count(*) FROM images), (SELECT count(*) FROM files)")).one())
            except (OperationalError, ProgrammingError):
                yield (0, 0)  # the table is made with the first batch


@pytest.mark.slow
def test_readers_during_an_ingest_see_whole_batches(repo_dir: Path, make_files: MakeFiles, tmp_path: Path) -> None:
    manifest = manifest_of(tmp_path, make_files(2000, size=5000))
    run = Ingest(ingest_argv(repo_dir, manifest, "--jobs", "1"))
    seen = set()
    for images, files in _counts(repo_dir):
        seen.add(images)
        assert images == files and images % 500 == 0, (images, files)
        if run.process.poll() is not None:
            break
    assert run.wait() == 0, run.stderr
    assert count(repo_dir, "images") == 2000
    assert seen <= {0, 500, 1000, 1500, 2000}
    assert len(seen - {0, 2000}) >= 1, seen  # the ingest was watched in the middle
