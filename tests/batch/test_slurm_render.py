"""What treadle asks of sbatch, and what the scripts it writes do on a node.

The argv goldens need no cluster. The scripts are run for real with /bin/sh
(dash on Debian, as on the nodes), with the variables Slurm would set, so the
status file a job leaves is checked as the engine will read it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from tests._wait import wait_for

from treadle.batch.base import Request
from treadle.batch.slurm import (
    SLURM_OWNED,
    SlurmSettings,
    SlurmSystem,
    check_options,
    render_job_script,
    render_wrapper,
    resource_args,
    split_options,
)
from treadle.batch.slurm_args import sbatch_argv
from treadle.errors import UsageError

HEAD = ["sbatch", "--parsable", "--job-name=treadle-0badc0de", "--comment=7", "--export=ALL",
        "-D", "/wf"]
PLAIN_LOG = "--output=/wf/b/logs/%j.out"
TARGET = ["/wf/b/wrapper.sh", "/wf/b/jobs/7.sh"]


def argv(request: Request = Request(), settings: SlurmSettings = SlurmSettings(),
         options: tuple[str, ...] = (), elements: int = 1,
         output: str = "/wf/b/logs/%j.out") -> list[str]:
    return sbatch_argv(tag="0badc0de", comment="7", workdir="/wf", output=output, request=request,
                       options=options, settings=settings, elements=elements, target=TARGET)


@pytest.mark.parametrize(("request_", "settings", "resources"), [
    pytest.param(Request(), SlurmSettings(), [], id="nothing-declared"),
    pytest.param(Request(cores=4, memory=2000, wall=61), SlurmSettings(),
                 ["--nodes=1", "--ntasks=1", "--cpus-per-task=4", "--mem=2000M", "--time=2"],
                 id="cores-memory-wall"),
    pytest.param(Request(cores=8, procs=4), SlurmSettings(),
                 ["--nodes=1", "--ntasks=4", "--cpus-per-task=2"], id="mpi-procs"),
    pytest.param(Request(procs=3), SlurmSettings(), ["--nodes=1", "--ntasks=3"], id="mpi-no-cores"),
    pytest.param(Request(gpus=2), SlurmSettings(), ["--gres=gpu:2"], id="gpus-gres"),
    pytest.param(Request(gpus=2), SlurmSettings(gpu_flag="gpus"), ["--gpus=2"], id="gpus-gpus"),
    pytest.param(Request(disk=5000), SlurmSettings(), [], id="disk-not-sent"),
    pytest.param(Request(disk=5000), SlurmSettings(disk="tmp"), ["--tmp=5000M"], id="disk-tmp"),
    pytest.param(Request(cores=2, memory=100, disk=10, gpus=1, wall=60),
                 SlurmSettings(safe_submit=True, disk="tmp"), [], id="safe-submit"),
    pytest.param(Request(cores=2, memory=100), SlurmSettings(ignore_memory=True),
                 ["--nodes=1", "--ntasks=1", "--cpus-per-task=2"], id="ignore-memory"),
    pytest.param(Request(cores=0, memory=0, gpus=0, wall=0), SlurmSettings(), [],
                 id="zero-is-not-asked"),
])
def test_resources_become_these_sbatch_options(request_: Request, settings: SlurmSettings,
                                               resources: list[str]) -> None:
    assert resource_args(request_, settings) == resources
    assert argv(request_, settings) == HEAD + [PLAIN_LOG] + resources + TARGET


def test_cores_that_do_not_split_over_the_mpi_processes_are_refused() -> None:
    with pytest.raises(UsageError, match="6 cores do not split evenly over 4 MPI processes"):
        resource_args(Request(cores=6, procs=4), SlurmSettings())


def test_an_array_names_its_elements_logs_by_array_and_index() -> None:
    assert argv(Request(cores=1), elements=5, output="/wf/b/logs/%A_%a.out") == HEAD + [
        "--array=0-4", "--output=/wf/b/logs/%A_%a.out", "--nodes=1", "--ntasks=1",
        "--cpus-per-task=1"] + TARGET


def test_batch_option_text_with_quotes_reaches_sbatch_as_words_without_a_shell() -> None:
    options = split_options("""--partition debug --constraint "a&b|c" --mail-user='x y' -Q""")
    assert options == ("--partition", "debug", "--constraint", "a&b|c", "--mail-user=x y", "-Q")
    check_options(options)
    assert argv(Request(memory=10), options=options) == HEAD + [
        PLAIN_LOG, "--mem=10M", "--partition", "debug", "--constraint", "a&b|c",
        "--mail-user=x y", "-Q"] + TARGET


def test_no_options_is_no_words() -> None:
    assert split_options(None) == ()
    assert split_options("") == ()


def test_unbalanced_quotes_are_a_usage_error_naming_the_text() -> None:
    with pytest.raises(UsageError, match="cannot split batch options '--comment \"x'"):
        split_options('--comment "x')


@pytest.mark.parametrize("text", [
    "-J x", "-Jx", "--job-name=x", "--job-name x", "--job=x", "-vJ x", "-o f", "--output=f",
    "--out=f", "-e f", "--error=f", "-a 1-3", "--array=1-3", "-D /x", "--chdir=/x", "--wrap=true",
    "--comment=c", "--parsable", "--pars",
])
def test_options_treadle_sets_itself_are_refused_naming_the_option(text: str) -> None:
    with pytest.raises(UsageError, match="is set by treadle itself") as refused:
        check_options(split_options(text))
    assert repr(split_options(text)[0]) in str(refused.value)


@pytest.mark.parametrize("text", [
    "-p debug", "--partition=debug", "-pJobs", "--export=ALL,X=1", "--exclusive", "-t 5",
    "--time=5", "--constraint=a", "--nodes=1", "--mem=10G", "-Q -v", "--begin=now+3600",
])
def test_other_options_pass(text: str) -> None:
    check_options(split_options(text))


def test_every_owned_option_is_refused() -> None:
    for option in SLURM_OWNED:
        with pytest.raises(UsageError):
            check_options([option])


@pytest.mark.parametrize(("field", "value"), [
    ("array", "0"), ("array", "many"), ("disk", "scratch"), ("gpu_flag", "gpu"), ("status", "db"),
])
def test_settings_refuse_values_no_option_takes(field: str, value: str) -> None:
    with pytest.raises(UsageError, match=value):
        SlurmSettings(**{field: value})  # type: ignore[arg-type]  # one str field at a time


@pytest.mark.parametrize(("array", "max_array_size", "limit"), [
    ("auto", 1001, 1000), ("auto", 101, 100), ("off", 1001, 1), ("50", 1001, 50), ("5000", 1001, 1000),
])
def test_chunks_stay_within_the_choice_and_the_cluster(array: str, max_array_size: int,
                                                       limit: int) -> None:
    assert SlurmSettings(array=array).chunk_limit(max_array_size) == limit


def test_job_script_golden() -> None:
    text = render_job_script(workdir="/work/my flow", command="echo \"$A\" > out.txt",
                             environment={"A": "x 'y'", "B": ""}, handle="7",
                             rule="Makeflow:3", attempt=2, cores=4, stdout="logs/7.out",
                             stderr="logs/7.err")
    assert text == (
        "#!/bin/sh\n"
        "TREADLE_HANDLE=7\n"
        "TREADLE_RULE=Makeflow:3\n"
        "TREADLE_ATTEMPT=2\n"
        "export TREADLE_HANDLE TREADLE_RULE TREADLE_ATTEMPT\n"
        "# treadle job script (docs/batch.md)\n"
        "cd '/work/my flow' || exit 1\n"
        "export A='x '\"'\"'y'\"'\"''\n"
        "export B=''\n"
        "export CORES=4 OMP_NUM_THREADS=4\n"
        "exec /bin/sh -c 'echo \"$A\" > out.txt' >logs/7.out 2>logs/7.err\n"
    )


def test_a_variable_no_shell_can_export_is_refused() -> None:
    with pytest.raises(UsageError, match="'A-B'"):
        render_job_script(workdir="/", command="true", environment={"A-B": "1"}, handle="1",
                          rule="r", attempt=1, cores=None, stdout=None, stderr=None)


# -- the scripts, run -----------------------------------------------------------------------------

class Node:
    """A batch directory and the environment Slurm gives a job, to run the wrapper as a node does.

    The wrapper is written as SlurmSystem writes it, so a system may share the directory.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.status = root / "status"
        self.status.mkdir(exist_ok=True)
        (root / "jobs").mkdir(exist_ok=True)
        self.wrapper = root / "wrapper.sh"
        self.wrapper.write_text(render_wrapper(str(self.status)))

    def script(self, handle: str, command: str, *, rule: str = "Makeflow:1",
               environment: dict[str, str] | None = None, cores: int | None = None,
               stdout: str | None = None, stderr: str | None = None) -> Path:
        path = self.root / "jobs" / f"{handle}.sh"
        path.write_text(render_job_script(
            workdir=str(self.root), command=command, environment=environment or {}, handle=handle,
            rule=rule, attempt=1, cores=cores, stdout=stdout, stderr=stderr))
        return path

    def start(self, target: Path, **slurm: str) -> subprocess.Popen[str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM")}
        env.update(SLURMD_NODENAME="node7", **slurm)
        return subprocess.Popen(["/bin/sh", str(self.wrapper), str(target)], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                cwd=self.root)

    def run(self, target: Path, **slurm: str) -> int:
        process = self.start(target, **slurm)
        process.communicate(timeout=30)
        return process.returncode

    def read(self, handle: str) -> dict[str, object]:
        (path,) = self.status.glob(f"{handle}.*json")  # <handle>.<job id>.json, or <handle>.json outside Slurm
        status: dict[str, object] = json.loads(path.read_text())
        return status


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


def test_a_job_that_fails_leaves_its_status_and_the_wrapper_exits_the_same(node: Node) -> None:
    script = node.script("3", "echo out; echo err >&2; exit 3", rule='say "hi"\\ twice\nagain',
                         stdout="3.out", stderr="3.err")
    assert node.run(script, SLURM_JOB_ID="1234") == 3
    status = node.read("3")
    assert {key: status[key] for key in ("handle", "rule", "attempt", "native", "host", "exit",
                                         "signal", "restarts")} == {
        "handle": "3", "rule": 'say "hi"\\ twice again', "attempt": 1, "native": "1234",
        "host": "node7", "exit": 3, "signal": None, "restarts": 0}
    assert isinstance(status["start"], float) and isinstance(status["end"], float)
    assert status["start"] <= status["end"]
    assert (node.root / "3.out").read_text() == "out\n"
    assert (node.root / "3.err").read_text() == "err\n"
    assert sorted(os.listdir(node.status)) == ["3.1234.json"]  # no temporary file left behind


def test_a_job_killed_by_a_signal_is_recorded_with_that_signal(node: Node) -> None:
    script = node.script("4", "kill -9 $$")
    assert node.run(script, SLURM_JOB_ID="1235", SLURM_RESTART_COUNT="2") == 128 + 9
    status = node.read("4")
    assert (status["exit"], status["signal"], status["restarts"]) == (137, 9, 2)


def test_sigterm_to_the_wrapper_reaches_the_job_and_is_recorded(node: Node) -> None:
    script = node.script("5", "touch started; exec sleep 60")
    wrapper = node.start(script, SLURM_JOB_ID="1236")
    wait_for(lambda: (node.root / "started").exists(), what="the job to start")
    wrapper.send_signal(signal.SIGTERM)
    wrapper.communicate(timeout=30)
    assert wrapper.returncode == 128 + 15
    assert (node.read("5")["exit"], node.read("5")["signal"]) == (143, 15)


def test_cpu_time_is_the_jobs_own(node: Node) -> None:
    script = node.script("6", "i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done")
    assert node.run(script, SLURM_JOB_ID="1237") == 0
    cpu = node.read("6")["cpu"]
    assert isinstance(cpu, float) and cpu > 0.05


def test_an_array_element_runs_its_own_script_from_the_chunk(node: Node) -> None:
    chunk = node.root / "jobs" / "c1"
    chunk.mkdir()
    for i, handle in enumerate(["10", "11"]):
        (chunk / f"{i}.sh").symlink_to(node.script(handle, f"echo {handle} > {handle}.txt"))
    assert node.run(chunk, SLURM_JOB_ID="1300", SLURM_ARRAY_JOB_ID="1299",
                    SLURM_ARRAY_TASK_ID="1") == 0
    assert node.read("11")["native"] == "1299_1"
    assert (node.root / "11.txt").read_text() == "11\n"
    assert not (node.root / "10.txt").exists()


def test_variables_cores_and_shared_log_reach_the_command(node: Node) -> None:
    value = """it's "quoted" $HOME `x` \\ and\nnewline"""
    script = node.script("8", 'printf "%s|%s|%s|%s" "$V" "$CORES" "$OMP_NUM_THREADS" '
                              '"$TREADLE_HANDLE"; echo oops >&2',
                         environment={"V": value}, cores=3, stdout="8.log", stderr="8.log")
    assert node.run(script, SLURM_JOB_ID="1238") == 0
    assert (node.root / "8.log").read_text() == f"{value}|3|3|8oops\n"


def test_without_a_writable_status_directory_the_job_still_runs_and_exits(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.wrapper.write_text(render_wrapper(str(tmp_path / "missing")))
    script = node.script("9", "echo ran > ran.txt; exit 4")
    assert node.run(script, SLURM_JOB_ID="1239") == 4
    assert (tmp_path / "ran.txt").read_text() == "ran\n"


def test_harvest_reads_what_the_wrapper_wrote_once_and_skips_half_written_files(
        tmp_path: Path) -> None:
    system = SlurmSystem(str(tmp_path / "batch"))
    node = Node(tmp_path / "batch")  # the system's own batch directory and status/
    (node.status / ".12.4242").write_text('{"native": "half')
    assert node.run(node.script("12", "exit 2", rule="r"), SLURM_JOB_ID="77") == 2
    (observation,) = system.harvest()
    assert (observation.native, observation.label, observation.exit, observation.host) == (
        "77", "12", 2, "node7")
    assert system.harvest() == []
    assert sorted(os.listdir(node.status)) == [".12.4242", "seen"]
    assert system.commands == {}  # no Slurm command for any of it
