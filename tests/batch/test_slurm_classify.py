"""Reading Slurm's answers: errors into classes, and squeue, sacct, sbatch and scontrol text.

The stderr lines are Slurm 22.05's own words, recorded on the test cluster
(sbatch with a bad partition, GPUs on a node without any, impossible memory,
a bad --time, an unknown option) or quoted from Slurm's error table for those
a one-node cluster cannot provoke (timeouts, an unreachable controller,
submit limits, accounts and QOS without accounting).
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from treadle.batch.base import State
from treadle.batch.slurm import classify
from treadle.batch.slurm_answers import (
    job_id,
    parse_accounting,
    parse_config,
    parse_queue,
    status_observation,
)

SBATCH = ("sbatch", "--parsable", "wrapper.sh")


@pytest.mark.parametrize(("stderr", "kind", "message"), [
    ("sbatch: error: Batch job submission failed: Socket timed out on send/recv operation\n",
     "transient", "Batch job submission failed: Socket timed out on send/recv operation"),
    ("sbatch: error: Batch job submission failed: Unable to contact slurm controller "
     "(connect failure)\n", "transient", None),
    ("sbatch: error: Batch job submission failed: Unexpected message received\n", "transient", None),
    ("sbatch: error: Batch job submission failed: Resource temporarily unavailable\n",
     "transient", None),
    ("sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit "
     "limit, user's size and/or time limits)\n", "transient", None),
    ("sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying\n",
     "transient", None),
    ("sbatch: error: Batch job submission failed: Zero Bytes were transmitted or received\n",
     "transient", None),
    ("sbatch: error: invalid partition specified: nope\n"
     "sbatch: error: Batch job submission failed: Invalid partition name specified\n",
     "permanent", "Batch job submission failed: Invalid partition name specified"),
    ("sbatch: error: Batch job submission failed: Invalid account or account/partition "
     "combination specified\n", "permanent", None),
    ("sbatch: error: Batch job submission failed: Requested node configuration is not available\n",
     "permanent", None),
    ("sbatch: error: Batch job submission failed: Invalid qos specification\n", "permanent", None),
    ("sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or "
     "exceeds some limit)\n", "permanent", None),
    ("sbatch: error: Invalid generic resource (gres) specification\n", "permanent", None),
    ("sbatch: error: Memory specification can not be satisfied\n"
     "sbatch: error: Batch job submission failed: Requested node configuration is not available\n",
     "permanent", None),
    ("sbatch: error: Temporary disk specification can not be satisfied\n", "permanent", None),
    ("sbatch: error: Batch job submission failed: Invalid feature specification\n", "permanent",
     None),
    ("sbatch: error: Invalid --time specification\n", "permanent",
     "Invalid --time specification"),
    ("sbatch: unrecognized option '--bogus'\nTry \"sbatch --help\" for more information\n",
     "permanent", "unrecognized option '--bogus'"),
    ("sbatch: error: Unable to open file /nowhere/wrapper.sh\n", "unknown",
     "Unable to open file /nowhere/wrapper.sh"),
    ("", "transient", "no message"),
    ("  \n\n", "transient", "no message"),
])
def test_recorded_sbatch_errors_are_classified(stderr: str, kind: str, message: str | None) -> None:
    error = classify(stderr, 1, SBATCH)
    assert error.kind == kind
    assert error.stderr == stderr
    assert error.command == SBATCH
    assert error.returncode == 1
    assert str(error).startswith("sbatch failed (exit 1): ")
    if message is not None:
        assert str(error) == f"sbatch failed (exit 1): {message}"


def test_query_errors_name_the_query() -> None:
    error = classify("squeue: error: slurm_load_jobs error: Unable to contact slurm controller "
                     "(connect failure)\n", 1, ["/usr/bin/squeue", "--me"])
    assert error.transient
    assert str(error) == ("squeue failed (exit 1): slurm_load_jobs error: Unable to contact "
                          "slurm controller (connect failure)")
    assert classify("Slurm accounting storage is disabled\n", 1, ["sacct"]).kind == "permanent"


@given(st.text(), st.integers(), st.lists(st.text(), max_size=3))
def test_classify_never_raises(stderr: str, returncode: int, command: list[str]) -> None:
    error = classify(stderr, returncode, command)
    assert error.kind in ("transient", "permanent", "unknown")
    assert str(error)


@given(st.text(alphabet=" \t\n\r"), st.integers().filter(lambda rc: rc != 0))
def test_any_failure_without_a_message_is_transient(stderr: str, returncode: int) -> None:
    assert classify(stderr, returncode, SBATCH).kind == "transient"


# -- answers --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("stdout", "native"), [
    ("1234\n", "1234"), ("1234;cluster2\n", "1234"), ("", None), ("Submitted batch job 12\n", None),
])
def test_the_job_id_is_what_parsable_answers_before_any_cluster(stdout: str,
                                                                native: str | None) -> None:
    assert job_id(stdout) == native


# Recorded on the test cluster: a plain job that ran, an array with elements pending
# (one held by an administrator), cancelled and failed jobs, a comment holding '|'.
QUEUE = """\
3|COMPLETED|None|vm|plain
2_0|PENDING|BeginTime||c 1|x
2_2|PENDING|JobHeldAdmin||c 1|x
7|RUNNING|None|vm|12
8|CANCELLED|BeginTime||(null)
6_3|FAILED|NonZeroExitCode|vm|c1
9|COMPLETING|None|vm|13
10|REQUEUED|BeginTime||14
"""


def test_squeue_lines_become_observations() -> None:
    seen = {o.native: o for o in parse_queue(QUEUE)}
    assert (seen["3"].state, seen["3"].word, seen["3"].host, seen["3"].reason,
            seen["3"].label) == (State.ENDED, "COMPLETED", "vm", "", "plain")
    assert (seen["2_0"].state, seen["2_0"].reason, seen["2_0"].host,
            seen["2_0"].label) == (State.PENDING, "BeginTime", "", "c 1|x")
    assert (seen["2_2"].state, seen["2_2"].reason) == (State.HELD, "JobHeldAdmin")
    assert seen["7"].state is State.RUNNING and seen["9"].state is State.RUNNING
    assert (seen["8"].state, seen["8"].word, seen["8"].label) == (State.ENDED, "CANCELLED", "")
    assert (seen["6_3"].state, seen["6_3"].reason) == (State.ENDED, "NonZeroExitCode")
    assert (seen["10"].state, seen["10"].word) == (State.PENDING, "REQUEUED")


@given(st.text())
def test_squeue_text_never_breaks_the_reader(text: str) -> None:
    for observation in parse_queue(text):
        assert observation.native


words = st.text(alphabet=st.characters(blacklist_characters="|\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
                min_size=1).filter(lambda w: w.strip() == w)


@given(words, st.sampled_from(["PENDING", "RUNNING", "COMPLETED", "TIMEOUT", "NODE_FAIL"]),
       words, words, st.text(alphabet=st.characters(blacklist_characters="\n\r\x0b\x0c\x1c\x1d"
                                                                         "\x1e\x85\u2028\u2029")))
def test_a_queue_line_reads_back_field_by_field(native: str, word: str, reason: str, host: str,
                                               comment: str) -> None:
    (observation,) = parse_queue(f"{native}|{word}|{reason}|{host}|{comment}\n")
    assert (observation.native, observation.word) == (native, word)
    assert observation.label == ("" if comment in ("None", "(null)", "Unknown") else comment)


# sacct -n -P -o JobID,State,ExitCode,Start,End,TotalCPU,MaxRSS,NodeList, in the documented
# form (the test cluster keeps no accounting): job rows, then .batch and .extern steps.
ACCOUNTING = """\
41|COMPLETED|0:0|2026-12-07T18:20:30|2026-12-07T18:20:32|00:01.500||vm
41.batch|COMPLETED|0:0|2026-12-07T18:20:30|2026-12-07T18:20:32|00:01.250|2048K|vm
41.extern|COMPLETED|0:0|2026-12-07T18:20:30|2026-12-07T18:20:32|00:00:00|0|vm
42_3|TIMEOUT|0:15|2026-12-07T18:00:00|2026-12-07T19:00:01|1-02:03:04||vm
42_3.batch|CANCELLED|0:15|2026-12-07T18:00:00|2026-12-07T19:00:01|59:58.5|1.5G|vm
43|CANCELLED by 0|0:0|Unknown|2026-12-07T18:21:00|00:00:00||None assigned
44|FAILED|3:0|2026-12-07T18:20:30|2026-12-07T18:20:31|00:00.010|10M|vm
"""


def test_sacct_rows_give_state_exit_and_the_batch_steps_usage() -> None:
    seen = {o.native: o for o in parse_accounting(ACCOUNTING, ["41", "42_3", "43"])}
    assert set(seen) == {"41", "42_3", "43"}
    assert (seen["41"].state, seen["41"].exit, seen["41"].signal) == (State.ENDED, 0, None)
    assert seen["41"].usage == {"cpu": 1.25, "rss": 2.0}
    assert seen["41"].start == time.mktime((2026, 12, 7, 18, 20, 30, 0, 0, -1))
    assert seen["41"].end is not None and seen["41"].end - seen["41"].start == 2
    assert (seen["42_3"].word, seen["42_3"].signal) == ("TIMEOUT", 15)
    assert seen["42_3"].usage == {"cpu": 59 * 60 + 58.5, "rss": 1536.0}
    assert (seen["43"].word, seen["43"].start, seen["43"].usage) == ("CANCELLED", None,
                                                                     {"cpu": 0.0})


def test_sacct_usage_falls_back_to_the_jobs_row() -> None:
    (seen,) = parse_accounting(ACCOUNTING, ["44"])
    assert (seen.exit, seen.usage) == (3, {"cpu": 0.01, "rss": 10.0})


@given(st.text(), st.lists(st.text(max_size=5), max_size=3))
def test_sacct_text_never_breaks_the_reader(text: str, wanted: list[str]) -> None:
    for observation in parse_accounting(text, wanted):
        assert observation.native in wanted


def test_scontrol_config_is_read_as_keys_and_values() -> None:
    text = ("Configuration data as of 2026-12-07T18:20:00\nAccountingStorageType   = "
            "accounting_storage/none\nMaxArraySize            = 1001\nMinJobAge               = "
            "600 sec\nSLURM_VERSION           = 22.05.8\n")
    assert parse_config(text) == {"AccountingStorageType": "accounting_storage/none",
                                  "MaxArraySize": "1001", "MinJobAge": "600 sec",
                                  "SLURM_VERSION": "22.05.8"}


def test_a_status_file_is_an_ending_with_its_label_and_cpu() -> None:
    observation = status_observation({"handle": "3", "rule": "r", "attempt": 1, "native": "12_4",
                                      "host": "vm", "start": 10.5, "end": 12, "exit": 137,
                                      "signal": 9, "cpu": 0.25, "restarts": 0})
    assert observation is not None
    assert (observation.native, observation.state, observation.word, observation.label,
            observation.host, observation.exit, observation.signal, observation.start,
            observation.end, observation.usage) == (
        "12_4", State.ENDED, "STATUS", "3", "vm", 137, 9, 10.5, 12.0, {"cpu": 0.25})
    assert status_observation({"handle": "3"}) is None
