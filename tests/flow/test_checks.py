"""Cycle and renaming checks (spec §1.3, §4 e)."""

from __future__ import annotations

import pytest

from treadle.errors import ParseError
from treadle.flow.checks import check_renaming, check_workflow, find_cycle
from treadle.flow.parser import parse_text


def wf(text: str):
    return parse_text(text, "c.mf", environ={}, notice=lambda m: None)


def test_self_loop():
    err = find_cycle(wf("x: x\n\ttouch x\n"))
    assert str(err) == "c.mf:1:1: error: dependency cycle: x -> (rule at line 1) -> x"


def test_two_rule_cycle_follows_the_data():
    err = find_cycle(wf("b.dat: a.dat\n\tcp a.dat b.dat\n\n\n\n\na.dat: b.dat\n\tcp b.dat a.dat\n"))
    assert err is not None
    assert err.message == (
        "dependency cycle: a.dat -> (rule at line 1) -> b.dat -> (rule at line 7) -> a.dat"
    )
    assert err.line == 1


def test_longer_cycle_behind_an_acyclic_part():
    text = "top: c\n\tx\nc: b\n\tx\nb: a\n\tx\na: c\n\tx\n"
    err = find_cycle(wf(text))
    assert err is not None
    names = err.message.removeprefix("dependency cycle: ").split(" -> ")
    assert names[0] == names[-1]
    assert set(names[::2]) == {"a", "b", "c"}
    assert "top" not in err.message


def test_acyclic_workflows_pass():
    assert find_cycle(wf("a: in\n\tx\nb: a\n\tx\nc: a b\n\tx\n")) is None
    assert find_cycle(wf("")) is None


def test_a_long_chain_does_not_hit_the_recursion_limit():
    n = 20000
    text = "f0:\n\tx\n" + "".join(f"f{i}: f{i - 1}\n\tx\n" for i in range(1, n))
    assert find_cycle(wf(text)) is None
    err = find_cycle(wf(text + f"f0x: f{n - 1}\n\tx\n".replace("f0x", "g") + "h: g h\n\tx\n"))
    assert err is not None and "h -> (rule at line" in err.message


def test_renaming_is_refused_without_a_sandbox():
    w = wf("\n\nout->o: in\n\tx\n")
    with pytest.raises(ParseError) as info:
        check_renaming(w, sandboxed=False)
    assert info.value.message == (
        "Remote renaming is not supported with -Tlocal or LOCAL execution. Rule 0 (line 3)."
    )
    check_renaming(w, sandboxed=True)


def test_renaming_on_a_local_rule_is_refused_even_with_a_sandbox():
    w = wf("a:\n\tx\nout: in->i\n\tLOCAL cat i\n")
    with pytest.raises(ParseError) as info:
        check_renaming(w, sandboxed=True)
    assert "Rule 1 (line 3)" in info.value.message


def test_check_workflow_runs_both():
    with pytest.raises(ParseError, match="dependency cycle"):
        check_workflow(wf("x: x\n\tx\n"), sandboxed=True)
    with pytest.raises(ParseError, match="Remote renaming"):
        check_workflow(wf("x->y:\n\tx\n"), sandboxed=False)
    check_workflow(wf("x: y\n\tx\n"), sandboxed=False)


def test_cores_that_do_not_split_over_mpi_processes_stop_a_batch_run_at_the_rule():
    text = "CORES=5\nMPI_PROCESSES=2\n\na.txt:\n\ttouch a.txt\n\nb.txt:\n\tLOCAL touch b.txt\n"
    with pytest.raises(ParseError) as e:
        check_workflow(wf(text), sandboxed=False, remote=True)
    assert str(e.value) == "c.mf:4:1: error: CORES=5 cannot be split evenly over MPI_PROCESSES=2 (rule 0)"
    check_workflow(wf(text), sandboxed=False)  # a local run asks no scheduler for processes
    check_workflow(wf(text.replace("CORES=5", "CORES=4")), sandboxed=False, remote=True)
