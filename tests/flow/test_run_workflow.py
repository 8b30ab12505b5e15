"""``run_workflow`` as an API: a workflow run from Python, no command line, real processes."""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from treadle.backends import registry
from treadle.backends.base import BackendConfig, Job, own_options
from treadle.backends.local import LocalBackend
from treadle.errors import TreadleError
from treadle.flow.engine import Out
from treadle.flow.options import RunOptions
from treadle.flow.run import run_workflow

CHAIN = "a:\n\techo one > a\n\nb: a\n\tcat a a > b\n"


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(**fields: object) -> tuple[int, str, str]:
    """(exit status, stdout lines, stderr lines) of one run of wf.mf with these options."""
    stdout, stderr = io.StringIO(), io.StringIO()
    status = run_workflow(RunOptions(dagfile="wf.mf", progress=False, **fields), Out(stdout, stderr))  # type: ignore[arg-type]  # fields are RunOptions'
    return status, stdout.getvalue(), stderr.getvalue()


def test_a_workflow_runs_from_python_and_returns_0(in_tmp):
    (in_tmp / "wf.mf").write_text(CHAIN)
    status, out, err = run()
    assert status == 0, err
    assert (in_tmp / "b").read_text() == "one\none\n"
    assert "nothing left to do." in out
    assert "# COMPLETED" in (in_tmp / "wf.mf.makeflowlog").read_text()


def test_a_failed_rule_is_status_1_and_a_second_call_resumes(in_tmp):
    """The API keeps the journal's promise: the second call runs only what did not finish."""
    (in_tmp / "wf.mf").write_text("a:\n\techo x >> runs_a; echo one > a\n\nb: a\n\ttest -e fixed && cp a b\n")
    status, _, err = run()
    assert status == 1
    assert "workflow failed." in err
    (in_tmp / "fixed").touch()
    status, _, err = run()
    assert status == 0, err
    assert (in_tmp / "runs_a").read_text() == "x\n"  # rule a did not run again
    assert (in_tmp / "b").read_text() == "one\n"


def test_a_user_mistake_is_an_exception_not_an_exit(in_tmp):
    (in_tmp / "wf.mf").write_text("a:\n\ttrue\nthis line is not makeflow\n")
    with pytest.raises(TreadleError, match="wf.mf:3"):
        run()
    (in_tmp / "wf.mf").write_text(CHAIN)
    with pytest.raises(TreadleError, match="unknown batch queue type"):
        run(batch_type="nosuch")


def test_dry_run_and_clean_through_the_api(in_tmp):
    (in_tmp / "wf.mf").write_text(CHAIN)
    assert run(batch_type="dryrun")[0] == 0
    assert not (in_tmp / "a").exists()
    assert "cat a a > b" in (in_tmp / "wf.mf.sh").read_text()
    assert run()[0] == 0 and (in_tmp / "b").exists()
    assert run(clean="all")[0] == 0
    assert not (in_tmp / "a").exists() and not (in_tmp / "b").exists()


def test_a_run_from_a_thread_other_than_main(in_tmp):
    """Signal handlers can only be installed in the main thread; an API caller's thread runs anyway."""
    (in_tmp / "wf.mf").write_text(CHAIN)
    statuses: list[int] = []
    t = threading.Thread(target=lambda: statuses.append(run()[0]))
    t.start()
    t.join(60)
    assert statuses == [0]
    assert (in_tmp / "b").exists()


# --- a new backend: one module plus one registry line -------------------------------------


@dataclass(frozen=True)
class QueueOptions:
    """A backend's own options, declared where the backend is (as WorkQueueOptions is)."""

    queue: str = "normal"


class RecordingBackend(LocalBackend):
    """A stand-in for a batch system's module: jobs go through ``from_options`` and arrive whole.

    It runs each job here (as LocalBackend does) and records what the engine
    handed it, which is what a Slurm module would turn into a submission.
    """

    name = "recording"
    sandboxed = False
    runs_in_place = False
    default_max_remote = 7
    log_suffix = "recordinglog"
    options_type = QueueOptions
    built: list[tuple[BackendConfig, str]] = []
    jobs: list[Job] = []

    @classmethod
    def from_options(cls, config: BackendConfig) -> RecordingBackend:
        cls.built.append((config, own_options(QueueOptions, config.settings).queue))
        return cls()

    def submit(self, job: Job) -> int:
        RecordingBackend.jobs.append(job)
        return super().submit(job)


def test_a_backend_is_one_module_plus_one_registry_line(in_tmp, monkeypatch):
    """Registering the class by name is all it takes: no change to flow, the engine or the options."""
    monkeypatch.setitem(registry.BACKENDS, "recording", f"{__name__}:RecordingBackend")
    RecordingBackend.built.clear()
    RecordingBackend.jobs.clear()
    (in_tmp / "wf.mf").write_text(CHAIN)
    status, out, err = run(batch_type="recording", backend_settings={"queue": "short", "port": 0})
    assert status == 0, err
    assert (in_tmp / "b").read_text() == "one\none\n"
    (config, queue), = RecordingBackend.built
    assert queue == "short"  # its own setting reached it; Work Queue's port was left alone
    assert config.log_path == "wf.mf.recordinglog" and config.workdir == str(in_tmp)
    assert "max running remote jobs: 7" in out
    by_rule = {j.rule_id: j for j in RecordingBackend.jobs}
    assert [f.dag_name for f in by_rule[1].inputs] == ["a"]  # a remote backend gets whole jobs
    assert [f.dag_name for f in by_rule[1].outputs] == ["b"]
