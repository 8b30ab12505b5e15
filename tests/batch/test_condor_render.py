"""Submit descriptions for -T condor and the condor factory, checked by HTCondor's own parser.

No pool runs here (docs/batch.md), so every description treadle renders is
handed to ``htcondor2.Submit``: its queue statement, its item data row by row,
each ``request_*`` and ``periodic_*`` key expanded per row, and every
expression parsed by ``classad2.ExprTree``. What HTCondor accepts and what a
job would ask for are what a user would notice.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from treadle.batch.base import BatchJob, Request
from treadle.batch.condor import (
    COLUMNS,
    CondorSystem,
    check_files,
    check_options,
    classify,
    item_row,
    job_script,
    parse_terse,
)
from treadle.errors import UsageError, WorkflowError
from treadle.queue.providers.base import WorkerSpec
from treadle.queue.providers.condor import CondorProvider, quote_arguments

htcondor2 = pytest.importorskip("htcondor2")
classad2 = pytest.importorskip("classad2")

TAG = "5eed1e55"


def job(workdir: Path, handle: int, **request: int) -> BatchJob:
    return BatchJob(tag=TAG, script=str(workdir / "wf.batch" / "jobs" / f"{handle}.sh"), workdir=str(workdir),
                    request=Request(**request), comment=str(handle))


def render(system: CondorSystem, jobs: list[BatchJob], tmp_path: Path) -> tuple[str, Path]:
    """A round's description and its item file, as submit() writes them."""
    items = tmp_path / "items-1.txt"
    items.write_text("".join(item_row(j) + "\n" for j in jobs))
    return system.description(jobs, str(items)), items


def parsed(description: str) -> tuple[object, list[dict[str, str]]]:
    submit = htcondor2.Submit(description)
    return submit, list(submit.itemdata())


def expanded(description: str, row: dict[str, str]) -> dict[str, str]:
    """Every request_*, periodic_* and requirements key of ``description`` for one item row,
    each also parsed as a ClassAd expression (a string that does not parse fails the test)."""
    submit = htcondor2.Submit(description)
    for name, value in row.items():
        submit[name] = value
    out = {}
    for key in submit.keys():
        if key.startswith(("request_", "periodic_")) or key == "requirements":
            out[key] = submit.expand(key)
            classad2.ExprTree(out[key])
    return out


GOLDEN = """\
universe = vanilla
executable = {batch}/condor-task.sh
transfer_executable = true
arguments = $(script)
initialdir = {work}
transfer_input_files = $(inputs)
preserve_relative_paths = true
should_transfer_files = YES
when_to_transfer_output = ON_EXIT
log = {work}/wf.condorlog
batch_name = treadle-5eed1e55
+TreadleHandle = "$(handle)"
output = {batch}/logs/$(Cluster).$(Process).out
error = {batch}/logs/$(Cluster).$(Process).err
request_cpus = $(cpus)
request_memory = $(memory)
request_disk = $(disk)
periodic_hold = $(wall) > 0 && JobStatus == 2 && time() - EnteredCurrentStatus > $(wall)
periodic_hold_reason = "treadle: WALL_TIME exceeded"
periodic_hold_subcode = 42
notification = never
keep_claim_idle = 30
+JobMaxSuspendTime = 0
getenv = true
queue handle, script, cpus, memory, disk, wall, gpus, inputs from {items}
"""


@pytest.fixture
def system(tmp_path: Path) -> CondorSystem:
    return CondorSystem(str(tmp_path / "wf.batch"), str(tmp_path / "wf.condorlog"))


def test_a_plain_rule_renders_the_golden_description_and_htcondor_reads_it(
        system: CondorSystem, tmp_path: Path) -> None:
    text, items = render(system, [job(tmp_path, 1)], tmp_path)
    assert text == GOLDEN.format(batch=tmp_path / "wf.batch", work=tmp_path, items=items)
    submit, rows = parsed(text)
    assert submit.getQArgs() == f"{', '.join(COLUMNS)} from {items}"
    assert rows == [{"handle": "1", "script": "1.sh", "cpus": "1", "memory": "1024", "disk": "1048576",
                     "wall": "0", "gpus": "0", "inputs": str(tmp_path / "wf.batch/jobs/1.sh")}]
    asked = expanded(text, rows[0])
    assert (asked["request_cpus"], asked["request_memory"], asked["request_disk"]) == ("1", "1024", "1048576")


def test_resources_travel_per_row_in_one_description(system: CondorSystem, tmp_path: Path) -> None:
    jobs = [job(tmp_path, 1, cores=4, memory=2000, disk=500), job(tmp_path, 2),
            job(tmp_path, 3, cores=2, wall=90)]
    text, _ = render(system, jobs, tmp_path)
    _, rows = parsed(text)
    asked = [expanded(text, row) for row in rows]
    assert [(a["request_cpus"], a["request_memory"], a["request_disk"]) for a in asked] == [
        ("4", "2000", "512000"), ("1", "1024", "1048576"), ("2", "1024", "1048576")]
    assert [row["handle"] for row in rows] == ["1", "2", "3"]


def test_wall_time_holds_a_job_running_too_long_with_subcode_42(system: CondorSystem, tmp_path: Path) -> None:
    text, _ = render(system, [job(tmp_path, 1, wall=60), job(tmp_path, 2)], tmp_path)
    _, rows = parsed(text)
    limited, unlimited = (expanded(text, row) for row in rows)
    assert limited["periodic_hold"] == "60 > 0 && JobStatus == 2 && time() - EnteredCurrentStatus > 60"
    assert limited["periodic_hold_subcode"] == "42"
    ad = classad2.ClassAd({"JobStatus": 2})
    ad["EnteredCurrentStatus"] = classad2.ExprTree("time() - 120")
    ad["Hold"] = classad2.ExprTree(limited["periodic_hold"])
    ad["NoHold"] = classad2.ExprTree(unlimited["periodic_hold"])
    assert ad.eval("Hold") is True and ad.eval("NoHold") is False


def test_autosize_takes_the_whole_slot_when_it_is_larger(tmp_path: Path) -> None:
    system = CondorSystem(str(tmp_path / "b"), str(tmp_path / "log"), autosize=True)
    text, _ = render(system, [job(tmp_path, 1, cores=2, memory=100)], tmp_path)
    _, rows = parsed(text)
    asked = expanded(text, rows[0])
    assert asked["request_cpus"] == "ifThenElse(2 > TotalSlotCpus, 2, TotalSlotCpus)"
    slot = classad2.ClassAd({"TotalSlotCpus": 8, "TotalSlotMemory": 64})
    slot["Cpus"] = classad2.ExprTree(asked["request_cpus"])
    slot["Memory"] = classad2.ExprTree(asked["request_memory"])
    assert (slot.eval("Cpus"), slot.eval("Memory")) == (8, 100)


def test_gpu_rules_get_request_gpus_and_a_description_of_their_own(system: CondorSystem, tmp_path: Path) -> None:
    text, _ = render(system, [job(tmp_path, 1, gpus=2)], tmp_path)
    _, rows = parsed(text)
    assert expanded(text, rows[0])["request_gpus"] == "2"
    plain, _ = render(system, [job(tmp_path, 2)], tmp_path)
    assert "request_gpus" not in plain


def test_requirements_and_getenv_come_from_the_run_options(tmp_path: Path) -> None:
    system = CondorSystem(str(tmp_path / "b"), str(tmp_path / "log"),
                          requirements='OpSysAndVer == "AlmaLinux9" && Arch == "X86_64"', getenv="PATH, HOME")
    text, _ = render(system, [job(tmp_path, 1)], tmp_path)
    submit, rows = parsed(text)
    assert expanded(text, rows[0])["requirements"] == 'OpSysAndVer == "AlmaLinux9" && Arch == "X86_64"'
    assert submit["getenv"] == "PATH, HOME"
    none = CondorSystem(str(tmp_path / "b"), str(tmp_path / "log"), getenv="none")
    assert htcondor2.Submit(render(none, [job(tmp_path, 1)], tmp_path)[0])["getenv"] == "false"


def test_batch_options_are_lines_before_the_queue_statement(system: CondorSystem, tmp_path: Path) -> None:
    j = job(tmp_path, 1)
    j = BatchJob(tag=j.tag, script=j.script, workdir=j.workdir, comment=j.comment,
                 options=('+ProjectName = "osg.Genomics"', "accounting_group = group_physics.alice",
                          "rank = Memory"))
    text, _ = render(system, [j], tmp_path)
    submit, rows = parsed(text)
    assert submit["MY.ProjectName"] == '"osg.Genomics"'
    assert submit["accounting_group"] == "group_physics.alice"
    assert text.index("rank = Memory") < text.index("\nqueue ")
    assert system.check(list(j.options)) is True


def test_inputs_with_spaces_travel_in_the_last_column(system: CondorSystem, tmp_path: Path) -> None:
    j = job(tmp_path, 4)
    j = BatchJob(tag=j.tag, script=j.script, workdir=j.workdir, comment=j.comment,
                 inputs=("my data.txt", "dir/sub file.csv", "plain"))
    text, _ = render(system, [j], tmp_path)
    _, rows = parsed(text)
    assert rows[0]["inputs"] == f"{j.script},my data.txt,dir/sub file.csv,plain"
    submit = htcondor2.Submit(text)
    submit["inputs"] = rows[0]["inputs"]
    assert submit.expand("transfer_input_files") == rows[0]["inputs"]


def test_a_round_of_many_rules_is_one_item_file_read_row_by_row(system: CondorSystem, tmp_path: Path) -> None:
    jobs = [job(tmp_path, h, cores=1 + h % 3, memory=100 * h, wall=h % 2 * 30) for h in range(1, 51)]
    text, items = render(system, jobs, tmp_path)
    _, rows = parsed(text)
    assert len(rows) == 50 and len(items.read_text().splitlines()) == 50
    for h, row in zip(range(1, 51), rows, strict=True):
        asked = expanded(text, row)
        assert (row["handle"], asked["request_cpus"], asked["request_memory"]) == (
            str(h), str(1 + h % 3), str(100 * h))


def test_the_task_wrapper_runs_the_script_named_by_its_argument(system: CondorSystem, tmp_path: Path) -> None:
    system._prepare()
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    (sandbox / "7.sh").write_text(job_script("echo \"$GREETING\" > out.txt; exit 3",
                                             {"GREETING": "it's \"quoted\" $HOME"}))
    done = subprocess.run([system.wrapper, "7.sh"], cwd=sandbox, env={"PATH": os.defpath})
    assert done.returncode == 3
    assert (sandbox / "out.txt").read_text() == "it's \"quoted\" $HOME\n"


def test_a_job_script_has_no_cd_and_ends_in_the_command() -> None:
    text = job_script("make all", {"A": "1", "B": "two words"})
    assert text.splitlines() == ["#!/bin/sh", "export A=1", "export B='two words'", "exec /bin/sh -c 'make all'"]
    with pytest.raises(ValueError):
        job_script("true", {"not-a-name": "x"})


# --- what a user may get wrong -----------------------------------------------------------------------


@pytest.mark.parametrize("line", ["queue 5", "executable = /bin/true", "Log = other.log", "arguments = x",
                                  "transfer_input_files = a", "batch_name = mine", "  queue"])
def test_options_treadle_owns_are_refused_naming_the_key(line: str) -> None:
    with pytest.raises(UsageError, match="treadle sets"):
        check_options([line])


@pytest.mark.parametrize(("line", "message"), [
    ("foo bar baz", "parse_up_to_q_line"),
    ('+Project = "unterminated', "Unable to parse"),
    ("requirements = (Memory > )", "Unable to parse"),
])
def test_a_malformed_batch_option_fails_with_the_bindings_message(
        system: CondorSystem, line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        system.check([line])


def test_a_malformed_requirement_fails_before_the_run(tmp_path: Path) -> None:
    system = CondorSystem(str(tmp_path / "b"), str(tmp_path / "log"), requirements="Memory >")
    with pytest.raises(UsageError, match="requirements"):
        system.check()


def test_files_htcondor_cannot_move_are_refused_naming_the_rule() -> None:
    check_files("wf:3", ["in put.txt", "dir/a.txt"], ["out.txt"])
    with pytest.raises(WorkflowError, match=r"wf:3: input 'a,b' has a comma"):
        check_files("wf:3", ["a,b"], [])
    with pytest.raises(WorkflowError, match="newline"):
        check_files("wf:3", ["a\nb"], [])
    with pytest.raises(WorkflowError, match=r"wf:4: output 'out/x.txt' is not in the job's top directory"):
        check_files("wf:4", [], ["out/x.txt"])
    with pytest.raises(WorkflowError, match="remote name"):
        check_files("wf:5", ["local.txt->remote.txt"], [])
    with pytest.raises(WorkflowError, match="remote name"):
        check_files("wf:5", [], ["a->b"])


def test_a_job_whose_row_would_split_is_refused_alone(tmp_path: Path) -> None:
    bad = BatchJob(tag=TAG, script=str(tmp_path / "jobs" / "a b.sh"), workdir=str(tmp_path), comment="1")
    with pytest.raises(ValueError, match="space or a comma"):
        item_row(bad)


def test_submitting_without_htcondor_is_a_permanent_error_per_job(tmp_path: Path) -> None:
    system = CondorSystem(str(tmp_path / "b"), str(tmp_path / "log"),
                          runner=lambda argv, cwd: subprocess.run(
                              list(argv), cwd=cwd, capture_output=True, text=True,
                              env={"PATH": str(tmp_path / "nothing-here")}))
    answers = system.submit([job(tmp_path, 1), job(tmp_path, 2)])
    assert all(getattr(a, "kind", None) == "permanent" for a in answers)
    assert "condor_submit not found" in str(answers[0])


def test_terse_output_gives_one_id_per_proc() -> None:
    assert parse_terse("1234.0 - 1234.2\n") == ["1234.0", "1234.1", "1234.2"]
    assert parse_terse("WARNING: something\n77.0 - 77.0\n") == ["77.0"]


def test_scheduler_words_decide_the_error_class() -> None:
    argv = ("condor_submit", "-terse", "x.sub")
    assert classify(argv, 1, "", "ERROR: Can't find address of local schedd\n").kind == "transient"
    assert classify(argv, 1, "", "").kind == "transient"
    assert classify(argv, 1, "", "ERROR: on Line 4 of submit file: \nERROR: Parse error in expression\n").kind \
        == "permanent"
    odd = classify(argv, 1, "", "something new\n")
    assert (odd.kind, odd.stderr, str(odd)) == ("unknown", "something new", "condor_submit failed: something new")


# --- the factory's worker description -----------------------------------------------------------------


def test_quoted_arguments_keep_spaces_and_quotes() -> None:
    assert quote_arguments(["a", "b c", "it's", 'say "hi"']) == """"a 'b c' 'it''s' 'say ""hi""'\""""


def test_the_worker_description_queues_count_workers_sized_by_their_slot(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text("secret\n")
    provider = CondorProvider(str(tmp_path / "factory"), manager_host="manager.example.org")
    spec = WorkerSpec(args=("-t", "60", "-P", str(password), "manager.example.org", "9123"), wall=3600,
                      files=(str(password),), options=('+ProjectName = "osg"',), gpus=1)
    text = provider.description(spec, 5)
    submit = htcondor2.Submit(text)
    assert submit.getQArgs() == "5"
    bundle = Path(submit["executable"])
    assert bundle.read_bytes().startswith(b"#!/usr/bin/env python3\n") and submit["transfer_executable"] == "true"
    assert submit["transfer_input_files"] == str(password)
    assert submit["arguments"] == ('"--cores $$([TARGET.Cpus]) --memory $$([TARGET.Memory]) '
                                   '--disk $$([TARGET.Disk/1024]) --gpus 1 --wall-time 3540 '
                                   '-t 60 -P pw manager.example.org 9123"')
    assert submit["batch_name"] == provider.batch_name
    asked = expanded(text, {})
    assert (asked["request_cpus"], asked["request_memory"], asked["request_disk"], asked["request_gpus"]) == (
        "1", "512", "1048576", "1")
    assert asked["periodic_hold_subcode"] == "42"
    assert "secret" not in text


def test_another_interpreter_runs_the_transferred_bundle(tmp_path: Path) -> None:
    provider = CondorProvider(str(tmp_path / "f"), manager_host="10.1.2.3")
    text = provider.description(WorkerSpec(args=("10.1.2.3", "9123"), python="/opt/py3.12/bin/python3 -I"), 1)
    submit = htcondor2.Submit(text)
    assert (submit["executable"], submit["transfer_executable"]) == ("/usr/bin/env", "false")
    assert submit["arguments"].startswith('"/opt/py3.12/bin/python3 -I treadle-worker.pyz --cores')
    assert submit["transfer_input_files"].endswith("treadle-worker.pyz")


def test_a_loopback_manager_is_refused_unless_allowed(tmp_path: Path) -> None:
    for host in ("127.0.0.1", "localhost", "::1"):
        with pytest.raises(UsageError, match="loopback"):
            CondorProvider(str(tmp_path / "f"), manager_host=host)
    CondorProvider(str(tmp_path / "f"), manager_host="127.0.0.1", allow_loopback=True)


def test_a_worker_option_treadle_owns_is_refused_before_submitting(tmp_path: Path) -> None:
    provider = CondorProvider(str(tmp_path / "f"), manager_host="10.1.2.3")
    with pytest.raises(UsageError, match="treadle sets 'executable'"):
        provider.submit(WorkerSpec(args=("10.1.2.3", "9123"), options=("executable = /bin/sh",)), 2)
    with pytest.raises(UsageError, match="parse_up_to_q_line"):
        provider.submit(WorkerSpec(args=("10.1.2.3", "9123"), options=("not a submit line",)), 2)
