"""What the providers tell a worker and a batch system, checked without a cluster."""

from __future__ import annotations

import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from treadle.errors import UsageError
from treadle.queue.factory import FactoryConfig, batch_options_for
from treadle.queue.providers import PROVIDERS, get_provider
from treadle.queue.providers.base import WorkerSpec, resource_options
from treadle.queue.providers.slurm import CORES, check_reachable, render_worker_script


def test_resource_options_say_what_the_worker_offers() -> None:
    spec = WorkerSpec(args=("h", "1"), cores=4, memory=8000, disk=2000, gpus=1, wall=3600)
    assert resource_options(spec) == ["--cores", "4", "--memory", "8000", "--disk", "2000", "--gpus", "1",
                                      "--wall-time", "3540"]
    assert resource_options(spec, cores=CORES)[:2] == ["--cores", CORES]
    assert resource_options(WorkerSpec(args=(), wall=30)) == ["--wall-time", "1"]
    assert resource_options(WorkerSpec(args=())) == []


def test_the_config_gives_workers_the_manager_last_and_resources_apart() -> None:
    c = FactoryConfig("mgr", 9123, manager_host="login1", cores=2, memory=100, worker_timeout=30,
                      password_file="pw.txt", options=("--partition=p",))
    spec = c.spec()
    assert spec.args[-2:] == ("login1", "9123") and spec.args[:2] == ("-t", "30")
    assert spec.files == (str(Path("pw.txt").absolute()),) and spec.args[3] == spec.files[0]
    assert (spec.cores, spec.memory, spec.options) == (2, 100, ("--partition=p",))
    catalog = FactoryConfig(project="proj.*", catalog="cat:9097").spec()
    assert catalog.args[-4:] == ("-M", "proj.*", "-C", "cat:9097")


def test_the_batch_script_carries_the_bundle_and_quotes_every_word_but_the_cores() -> None:
    spec = WorkerSpec(args=("-t", "60", "-s", "/scratch/my dir", "host", "9123"), cores=2, memory=500,
                      python="env -i PATH=/usr/bin:/bin python3 -I")
    text = render_worker_script(spec, spec.args, "QUJD\nREVG\n")
    assert text.startswith("#!/bin/sh\n")
    assert "base64 -d > worker.pyz <<'TREADLE_WORKER_BUNDLE'\nQUJD\nREVG\nTREADLE_WORKER_BUNDLE\n" in text
    last = text.splitlines()[-1]
    assert last == ("env -i PATH=/usr/bin:/bin python3 -I worker.pyz --cores ${SLURM_CPUS_PER_TASK:-1} "
                    "--memory 500 -t 60 -s '/scratch/my dir' host 9123")
    other = render_worker_script(WorkerSpec(args=("h", "1"), command="work_queue_worker"), ("h", "1"), None)
    assert "base64" not in other and other.splitlines()[-1] == (
        "work_queue_worker --cores ${SLURM_CPUS_PER_TASK:-1} h 1")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                        min_size=1), min_size=1, max_size=6))
def test_any_argument_reaches_the_worker_as_it_was(args: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "job.sh"
        script.write_text(render_worker_script(WorkerSpec(args=tuple(args), command="printf '%s\\0'"), args, None))
        done = subprocess.run(["/bin/sh", str(script)], capture_output=True, check=True,
                              env={"PATH": "/usr/bin:/bin", "TMPDIR": tmp, "SLURM_CPUS_PER_TASK": "2"})
    assert done.stdout.decode().split("\0")[:-1] == ["--cores", "2", *args]


def test_the_batch_script_runs_in_a_scratch_directory_it_removes(tmp_path: Path) -> None:
    spec = WorkerSpec(args=("a b", "c"), command="sh -c 'pwd; echo \"$@\"' sh")
    script = tmp_path / "job.sh"
    script.write_text(render_worker_script(spec, spec.args, None))
    done = subprocess.run(["/bin/sh", str(script)], capture_output=True, text=True, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "SLURM_CPUS_PER_TASK": "3"},
                          check=True)
    scratch, said = done.stdout.splitlines()
    assert Path(scratch).parent == tmp_path and Path(scratch).name.startswith("treadle-worker.")
    assert said == "--cores 3 a b c"
    assert not Path(scratch).exists()


def test_a_loopback_manager_needs_a_cluster_of_this_host_only() -> None:
    here = socket.gethostname()
    check_reachable("127.0.0.1", [here])
    check_reachable("localhost", [here.split(".")[0]])
    check_reachable("192.0.2.1", ["node1", "node2"])  # not loopback: the nodes may reach it
    with pytest.raises(UsageError, match="node1 cannot reach a manager at 127.0.0.1.*--allow-loopback"):
        check_reachable("127.0.0.1", [here, "node1"])


def test_batch_options_are_split_in_each_systems_words() -> None:
    assert batch_options_for("slurm", "--partition=debug --begin='now + 1hour'") == (
        "--partition=debug", "--begin=now + 1hour")
    assert batch_options_for("condor", r"+Group = \"x\"\nrequirements = Memory > 2") == (
        r'+Group = \"x\"', "requirements = Memory > 2")
    assert batch_options_for("local", None) == ()
    with pytest.raises(UsageError, match="--array"):
        batch_options_for("slurm", "--array=0-3")


def test_every_registered_provider_is_importable_and_unknown_kinds_are_refused() -> None:
    for spec in PROVIDERS.values():
        module, _, name = spec.partition(":")
        assert hasattr(__import__(module, fromlist=[name]), name)
    with pytest.raises(UsageError, match="unknown batch type 'pbs'.*local, slurm, condor"):
        get_provider("pbs")
