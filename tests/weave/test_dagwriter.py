"""A DAG as the compiler writes it (spec weaver.md §2.9, R5), read back by the real parser.

The escaping itself is the writer's (tests/flow/test_writer.py); here, every field of
a Weaver task must reach the rule the engine reads, in both formats: names, command,
category, resources, batch options, environment (exported by the header), LOCAL, and
the MAKEFLOW rule that runs a sub-DAG.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from treadle.flow.parser import parse_file
from treadle.weave.dagwriter import DagWriter
from treadle.weave.task import Task

TRICKY = ["a b", "it's", 'say "hi"', "$HOME", "#tag", "a:b", "x=y", "back\\slash", "-dash",
          "a->b", "  lead", "trail  ", "ünïcode"]

strings = st.sampled_from(TRICKY) | st.text(st.sampled_from("ab $#:='\"\\-> \t"), min_size=1,
                                             max_size=8)
sizes = st.one_of(st.none(), st.integers(1, 4096))
tasks = st.builds(
    lambda outs, ins, command, local, cores, memory, batch, env, sub: Task(
        outputs=outs, inputs=ins, command="" if sub else command, cores=cores, memory=memory,
        local=local, batch=batch, environment=env, workflow="sub/Makeflow" if sub else None),
    st.lists(strings, min_size=1, max_size=3, unique=True), st.lists(strings, max_size=3, unique=True),
    strings.filter(lambda c: c.strip(" \t")), st.booleans(), sizes, sizes,
    st.one_of(st.none(), strings.filter(lambda v: v.strip(" \t") == v)),
    st.dictionaries(st.sampled_from(["A", "B_2", "ZZ"]), strings, max_size=2),
    st.booleans())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(tasks, min_size=1, max_size=4), st.sampled_from(["make", "json"]))
def test_every_field_of_a_task_reaches_the_parsed_rule(specs: list[Task], fmt: str) -> None:
    made: set[str] = set()
    written = []
    for i, task in enumerate(specs):
        task.outputs = [f"{o}{i}" for o in task.outputs]
        task.inputs = [n for n in task.inputs if n not in task.outputs]
        task.category = f"Map{i}"
        made.update(task.outputs)
        written.append(task)
    with tempfile.TemporaryDirectory() as tmp:
        writer = DagWriter(str(Path(tmp) / "Makeflow"), "Makeflow", fmt, "test")
        for task in written:
            writer.add(task)
        wf = parse_file(writer.finish(), fmt=fmt, environ={})
    assert len(wf.rules) == len(written)
    for rule, task in zip(wf.rules, written, strict=True):
        assert list(rule.targets) == task.outputs
        if task.workflow is not None:  # the sub-DAG's file is a source of the rule that runs it
            assert rule.workflow == task.workflow
            assert list(rule.sources) == [*task.inputs, task.workflow]
        else:
            assert list(rule.sources) == task.inputs
            assert rule.command == task.command
            assert rule.local == task.local
        assert rule.category == task.category
        resources = wf.resources_of(rule)
        assert (resources.cores, resources.memory) == (task.cores, task.memory)
        for k, v in task.environment.items():
            assert rule.environment[k] == v
        if fmt == "make":
            assert rule.batch_options == task.batch
