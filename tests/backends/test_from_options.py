"""Each backend builds itself from a run's configuration (``from_options``): nothing in flow or the CLI does it."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from treadle.backends import registry
from treadle.backends.base import Backend, BackendConfig, Job
from treadle.backends.dryrun import DryRunBackend
from treadle.backends.local import LocalBackend
from treadle.backends.workqueue import WorkQueueBackend
from treadle.errors import UsageError


@pytest.mark.parametrize("name", sorted(registry.BACKENDS))
def test_every_registered_backend_states_its_contract(name):
    cls = registry.backend_class(name)
    assert cls.name == name
    assert isinstance(cls.runs_in_place, bool) and isinstance(cls.sandboxed, bool)
    assert cls.default_max_remote >= 1 and cls.log_suffix
    assert callable(cls.from_options)
    assert cls.options_type is None or dataclasses.is_dataclass(cls.options_type)


def test_local_from_options_runs_jobs_in_place(tmp_path: Path):
    b = LocalBackend.from_options(BackendConfig(workdir=str(tmp_path), log_path=str(tmp_path / "x.batchlog")))
    try:
        assert isinstance(b, Backend) and b.runs_in_place and b.greeting() is None
    finally:
        b.close()


def test_dryrun_from_options_writes_its_script_to_the_batch_log(tmp_path: Path):
    script = tmp_path / "wf.mf.sh"
    b = DryRunBackend.from_options(BackendConfig(workdir=str(tmp_path), log_path=str(script)))
    assert isinstance(b, Backend) and not b.runs_in_place
    job_id = b.submit(Job(0, "echo hi > out"))
    assert b.wait(0.0).job_id == job_id
    b.close()
    assert "echo hi > out" in script.read_text()
    assert not (tmp_path / "out").exists()


def test_workqueue_from_options_takes_its_own_settings_and_ignores_others(tmp_path: Path):
    port_file = tmp_path / "port"
    config = BackendConfig(
        workdir=str(tmp_path),
        log_path=str(tmp_path / "wf.mf.wqlog"),
        send_environment=True,
        settings={"port": 0, "bind": "127.0.0.1", "port_file": str(port_file), "keepalive_interval": 7,
                  "keepalive_timeout": 9, "fast_abort": 2.0, "queue": "not wq's"},
    )
    b = WorkQueueBackend.from_options(config)
    try:
        assert isinstance(b, Backend) and b.sandboxed and not b.runs_in_place
        assert b.port != 0 and int(port_file.read_text()) == b.port
        assert b.manager.host == "127.0.0.1"
        assert (b.manager.keepalive_interval, b.manager.keepalive_timeout) == (7, 9)
        assert b.send_environment and b.workdir == str(tmp_path)
        assert f"port {b.port}" in (b.greeting() or "") and "127.0.0.1 only" in (b.greeting() or "")
        assert os.path.exists(tmp_path / "wf.mf.wqlog")
    finally:
        b.close()


def test_a_name_becomes_a_backend_with_its_registry_line_only(monkeypatch):
    """``-T NAME`` is refused until the registry names a module for it; then it is that class."""
    with pytest.raises(UsageError, match="-T pbs is not a treadle batch type"):
        registry.check_batch_type("pbs")
    monkeypatch.setitem(registry.BACKENDS, "pbs", "treadle.backends.local:LocalBackend")
    registry.check_batch_type("pbs")
    assert registry.backend_class("pbs") is LocalBackend
