"""The writer lock: one writer at a time, the refusal naming who holds it."""

from __future__ import annotations

import os
import shutil
import socket
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
        time.sleep(0.3)  # the waiter must be polling by then; how long it polls is what is tested
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
