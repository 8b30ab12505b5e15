"""The engine on workflows built directly from Rule objects, with real processes."""

from __future__ import annotations

import io

import pytest

from treadle.backends.dryrun import DryRunBackend
from treadle.backends.local import LocalBackend
from treadle.flow import journal as jr
from treadle.flow.engine import Engine, LocalCapacity, Out, job_environment
from treadle.flow.model import Resources, Rule, Workflow
from treadle.flow.options import RunOptions


def make_engine(rules, *, jobs=1, retries=0, backend="local", script=None):
    wf = Workflow(path="wf.mf", rules=rules)
    opts = RunOptions(dagfile="wf.mf", max_local=jobs, retries=retries, progress=False)
    journal = jr.Journal("wf.mf.makeflowlog") if backend == "local" else jr.NullJournal()
    journal.open()
    journal.start_segment("wf.mf.batchlog", "test")
    out = Out(io.StringIO(), io.StringIO())
    local = LocalBackend() if backend == "local" else DryRunBackend(script_path=script)
    eng = Engine(wf, opts, journal, jr.rule_identities(rules), bytearray(len(rules)), out=out,
                 local=local, check_outputs=backend == "local", capacity=LocalCapacity(jobs, 64, 1 << 20, 1 << 20))
    eng.prepare()
    return eng


def finish(eng):
    eng.run()
    eng.local.close()
    eng.journal.close()
    return eng


def rule(i, targets, sources, command, **kw):
    return Rule(i, tuple(targets), tuple(sources), command, file="wf.mf", line=i + 1, **kw)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_ready_rules_go_highest_id_first(in_tmp):
    rules = [rule(i, [f"o{i}"], [], f"echo {i} >> order; touch o{i}") for i in range(6)]
    eng = finish(make_engine(rules))
    assert (in_tmp / "order").read_text().split() == ["5", "4", "3", "2", "1", "0"]
    assert eng.counts == [0, 0, 6, 0, 0]


def test_dependencies_are_respected(in_tmp):
    rules = [
        rule(0, ["d"], ["b", "c"], "cat b c > d"),
        rule(1, ["b"], ["a"], "sed s/a/b/ a > b"),
        rule(2, ["c"], ["a"], "sed s/a/c/ a > c"),
        rule(3, ["a"], [], "echo a > a"),
    ]
    finish(make_engine(rules, jobs=2))
    assert (in_tmp / "d").read_text() == "b\nc\n"


def test_journal_records_follow_the_reference_order(in_tmp):
    rules = [rule(0, ["in.txt"], [], "echo abc > in.txt"), rule(1, ["out.txt"], ["in.txt"], "cat in.txt > out.txt")]
    finish(make_engine(rules))
    lines = [line.split() for line in (in_tmp / "wf.mf.makeflowlog").read_text().splitlines()]
    shape = [(x[1], x[3], x[4]) if x[0] == "#" and x[1] == "FILE" else (x[1],) if x[0] == "#" else ("rule", x[1], x[2]) for x in lines]
    assert shape == [
        ("FILE", "wf.mf.batchlog", "1"), ("STARTED",), ("TREADLE",),
        ("FILE", "in.txt", "1"), ("RULE",), ("rule", "0", "1"),
        ("FILE", "in.txt", "2"), ("rule", "0", "2"),
        ("FILE", "out.txt", "1"), ("RULE",), ("rule", "1", "1"),
        ("FILE", "out.txt", "2"), ("FILE", "in.txt", "3"), ("rule", "1", "2"),
    ]
    rule_lines = [x for x in lines if x[0] != "#"]
    assert [x[4:] for x in rule_lines] == [
        ["1", "1", "0", "0", "0", "2"], ["1", "0", "1", "0", "0", "2"],
        ["0", "1", "1", "0", "0", "2"], ["0", "0", "2", "0", "0", "2"],
    ]


def test_a_failure_stops_its_dependents_only(in_tmp):
    rules = [
        rule(0, ["x"], [], "touch x"),
        rule(1, ["bad"], [], "exit 4"),
        rule(2, ["after"], ["bad"], "touch after"),
        rule(3, ["y"], ["x"], "touch y"),
    ]
    eng = finish(make_engine(rules, jobs=2))
    assert (in_tmp / "y").exists() and not (in_tmp / "after").exists()
    assert [f.rule.id for f in eng.failures] == [1] and eng.failures[0].exit_code == 4
    assert eng.counts == [1, 0, 2, 1, 0] and eng.not_run == 1
    assert (in_tmp / "makeflow.failed.1" / "INFO.json").exists()


def test_retries_are_counted_per_rule(in_tmp):
    rules = [rule(0, ["t"], [], "echo x >> n; exit 1")]
    eng = finish(make_engine(rules, retries=2))
    assert len((in_tmp / "n").read_text().split()) == 3
    assert eng.failures[0].attempts == 3


def test_job_environment_defaults():
    assert job_environment({}) == {"CORES": "1", "OMP_NUM_THREADS": "1"}
    assert job_environment({"CORES": "4"}) == {"CORES": "4", "OMP_NUM_THREADS": "4"}
    assert job_environment({"OMP_NUM_THREADS": "3", "CORES": "8"})["CORES"] == "3"
    assert job_environment({"X": '"a b"'})["X"] == '"a b"'


def test_exported_variables_reach_the_job(in_tmp):
    rules = [rule(0, ["e"], [], "printenv MYVAR CORES > e", environment={"MYVAR": "v1"})]
    finish(make_engine(rules))
    assert (in_tmp / "e").read_text() == "v1\n1\n"


def test_resource_packing_never_overcommits(in_tmp):
    rules = [
        rule(i, [f"o{i}"], [], f"echo s >> trace; sleep 0.2; echo e >> trace; touch o{i}", resources=Resources(cores=2))
        for i in range(3)
    ]
    eng = make_engine(rules, jobs=3)
    eng.capacity = LocalCapacity(3, 3, 1 << 20, 1 << 20)
    finish(eng)
    assert (in_tmp / "trace").read_text().split() == ["s", "e"] * 3


class CountingEngine(Engine):
    fits_calls = 0

    def _fits(self, key):
        CountingEngine.fits_calls += 1
        return super()._fits(key)


def test_scheduling_work_is_linear_in_the_rules(in_tmp):
    """Per dispatch pass, work is proportional to what is submitted, never to all rules."""
    n = 20000
    rules = [rule(i, [f"o{i}"], [f"o{i - 1}"] if i % 2 else [], f"touch o{i}") for i in range(n)]
    wf = Workflow(path="wf.mf", rules=rules)
    opts = RunOptions(dagfile="wf.mf", max_local=2, progress=False)
    eng = CountingEngine(wf, opts, jr.NullJournal(), jr.rule_identities(rules), bytearray(n),
                         out=Out(io.StringIO(), io.StringIO()), local=DryRunBackend(script_path=str(in_tmp / "wf.sh")),
                         check_outputs=False, capacity=LocalCapacity(2, 2, 1, 1))
    eng.prepare()
    CountingEngine.fits_calls = 0
    finish(eng)
    assert eng.counts[2] == n
    assert CountingEngine.fits_calls <= 2 * n + 10
    script = (in_tmp / "wf.sh").read_text().splitlines()
    assert sum(1 for x in script if x.startswith("env ")) == n
