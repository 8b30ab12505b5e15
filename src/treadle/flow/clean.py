"""``-c`` / ``--clean``: delete what a workflow made (see docs/makeflow.md, 'Cleaning').

Original inputs and ``MAKEFLOW_INPUTS`` are never deleted. Every deletion
says ``deleted X`` (also for a file that is already gone) and is journalled,
so a later run knows the file is gone.
"""

from __future__ import annotations

import subprocess

from treadle.flow.engine import Engine
from treadle.flow.recovery import History


def clean(engine: Engine, history: History, mode: str, log_path: str, batch_log: str) -> bool:
    """Delete according to ``mode``; return True when the log itself was deleted (mode ``all``)."""
    wf = engine.wf
    g = engine.graph
    keep = set(g.original_inputs)
    keep.update(wf.inputs or ())
    if mode == "cache":
        return False
    final = set(wf.final_outputs())
    for rule in wf.rules:
        if rule.workflow is not None and mode == "all":
            _clean_nested(engine, rule)
    names: list[str] = []
    for outs in g.outputs:
        for name in outs:
            if name in keep:
                continue
            if mode == "all" or (mode == "outputs") == (name in final):
                names.append(name)
    if mode == "all":
        consumed = g.consumers
        for name in sorted(history.files):
            if name not in g.producer and name not in consumed and name not in keep and name not in (log_path, batch_log):
                names.append(name)
    seen: set[str] = set()
    for name in names:
        if name not in seen:
            seen.add(name)
            engine.delete_file(name)
    if mode == "outputs":
        # Without their outputs these rules are no longer done; the next run makes them again.
        # (Cleaned intermediates are like collected garbage: the outputs made from them stand.)
        for name in final:
            rid = g.producer.get(name)
            if rid is not None:
                engine.forget(rid)
    engine.journal.flush()
    if mode != "all":
        return False
    for name in (engine.logs_dir, batch_log, log_path):  # the rules' stdout/stderr logs go with the log
        engine.delete_file(name)
    return True


def _clean_nested(engine: Engine, rule) -> None:
    """A sub-workflow cleans itself: its command with ``--clean`` appended."""
    command = engine.command_of(rule, extra=("--clean",))
    engine.out.flush()
    subprocess.run(command, shell=True, check=False)
