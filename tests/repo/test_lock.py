"""The writer lock: one writer at a time, the refusal naming who holds it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from treadle.errors import RepoError
from treadle.repo.context import init_repository, open_context


def test_second_writer_is_refused_naming_the_holder(repo_dir: Path) -> None:
    with open_context(repo_dir, write=True):
        with pytest.raises(RepoError, match=f"being written by {socket.gethostname()} pid {os.getpid()}"):
            open_context(repo_dir, write=True)
        with open_context(repo_dir) as reader:  # readers never lock
            assert [s.name for s in reader.stores()] == ["a", "b"]
    with open_context(repo_dir, write=True):
        pass


def test_a_writer_waits_for_the_lock(repo_dir: Path) -> None:
    first = open_context(repo_dir, write=True)
    released = threading.Event()

    def release_soon() -> None:
        # the waiter is usually polling by then; if not, it finds the lock free, and still
        # must not have had it before the release
        time.sleep(0.3)
        released.set()
        first.close()

    threading.Thread(target=release_soon).start()
    with open_context(repo_dir, write=True, wait=30):
        assert released.is_set()


@pytest.mark.postgres
def test_hosts_sharing_only_the_database_exclude_each_other(tmp_path: Path, postgres_server: Any) -> None:
    here = tmp_path / "this-host.repo"
    init_repository(here, database=postgres_server.new_database()).close()
    elsewhere = tmp_path / "other-host.repo"  # the same repo.toml and database, another lock file
    shutil.copytree(here, elsewhere)
    with open_context(here, write=True):
        with pytest.raises(RepoError, match=f"being written by {socket.gethostname()} pid {os.getpid()}"):
            open_context(elsewhere, write=True)
    with open_context(elsewhere, write=True):
        pass


def test_a_killed_writer_holds_nothing(repo_dir: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from treadle.repo.context import open_context\n"
         "ctx = open_context(sys.argv[1], write=True)\n"
         "print('locked', flush=True)\n"
         "time.sleep(300)\n", str(repo_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(RepoError, match=f"by {socket.gethostname()} pid {holder.pid};"):
            open_context(repo_dir, write=True)
    finally:
        holder.kill()
        holder.wait()
    # the kernel drops the flock, and PostgreSQL the session's advisory lock, with the process
    with open_context(repo_dir, write=True, wait=20):
        pass
