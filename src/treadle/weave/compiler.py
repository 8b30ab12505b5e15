"""Running a Weaver script and writing its sandbox (docs/weaver.md, "A first script").

The script is compiled under its real file name so that tracebacks and
``inspect.getsource`` work; errors are reported at the script's line.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass

from treadle import __version__
from treadle import weave as api
from treadle.errors import WeaverError
from treadle.weave import context
from treadle.weave.context import Config, Script
from treadle.weave.nest import abort, commit, engine_command, engine_environment, open_script
from treadle.weave.options import Options

log = logging.getLogger("treadle.weave.script")
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ScriptFailed(Exception):
    """A script or compile failed; ``message`` is the one line for the user."""

    def __init__(self, message: str, original: BaseException):
        super().__init__(message)
        self.message = message
        self.original = original


@dataclass
class Compiled:
    """What a compile produced, for the CLI's summary and for tests."""

    script: Script
    sandbox: str
    dag: str
    rules: dict[str, int]
    seconds: float

    @property
    def collects(self) -> bool:
        return any(w.collected for w in self.script.writers)


def prepare_sandbox(directory: str, force: bool) -> str:
    """Create the sandbox; refuse a non-empty directory that is not one (R9)."""
    directory = os.path.abspath(directory)
    if os.path.isdir(directory) and os.listdir(directory) and not force:
        if not os.path.exists(os.path.join(directory, "weave.json")):
            raise WeaverError(f"{directory} is not empty and holds no weave.json; "
                              f"give --force to compile into it anyway")
    os.makedirs(directory, exist_ok=True)
    return directory


def compile_script(path: str, arguments: list[str], output: str | None, config: Config,
                   options: Options | None = None, builtins_on: bool = True,
                   force: bool = False) -> Compiled:
    """Run the script, compile the root nest, write every DAG and weave.json."""
    started = time.perf_counter()
    if not os.path.isfile(path):
        raise WeaverError(f"{path}: no such script")
    stem = os.path.splitext(os.path.basename(path))[0]
    sandbox = prepare_sandbox(output or f"{stem}.weave", force)
    context.reset()
    script = Script(path, arguments, sandbox, options, config)
    script.display = path
    root = open_script(script)
    namespace: dict[str, object] = {"__name__": "__main__", "__file__": script.path,
                                    "__builtins__": builtins}
    if builtins_on:
        namespace.update({name: getattr(api, name) for name in api.__all__})
    with open(path, encoding="utf-8") as f:
        source = f.read()
    script_dir = script.directory
    sys.path.insert(0, script_dir)
    try:
        try:
            code = compile(source, script.path, "exec")
        except SyntaxError as e:
            raise ScriptFailed(f"{path}:{e.lineno}:{e.offset or 0}: syntax error: {e.msg}",
                               e) from None
        try:
            exec(code, namespace)
            root.compile()
        except SystemExit:
            raise
        except Exception as e:
            raise ScriptFailed(describe(e, script), e) from e
    except BaseException:
        abort(script)
        raise
    finally:
        if sys.path and sys.path[0] == script_dir:
            sys.path.pop(0)
        for engine in script.sql_engines.values():
            engine.dispose()
    commit(script)
    rules = {w.dag_name: w.count for w in script.writers if w.finished}
    compiled = Compiled(script, sandbox, root.writer.dag_name, rules,
                        time.perf_counter() - started)
    write_manifest(compiled)
    return compiled


def describe(e: BaseException, script: Script) -> str:
    """``script.py:LINE: message`` for an exception raised by or inside a user's script."""
    site = getattr(e, "site", None)
    message = str(e) if isinstance(e, WeaverError) else f"{type(e).__name__}: {e}"
    if site:
        return f"{site}: {message}"
    frames = traceback.extract_tb(e.__traceback__)
    for frame in reversed(frames):
        if not frame.filename.startswith(_PACKAGE_DIR) and not frame.filename.startswith("<"):
            name = script.display if frame.filename == script.path else frame.filename
            return f"{name}:{frame.lineno}: {message}"
    return f"{script.display}: {message}"


def write_manifest(compiled: Compiled) -> None:
    """weave.json: what was compiled, with what, and how each abstraction was emitted."""
    script = compiled.script
    manifest = {
        "script": script.display,
        "arguments": script.arguments,
        "options": str(script.options) if script.options is not None else None,
        "version": __version__,
        "compiled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "compile_seconds": round(compiled.seconds, 3),
        "format": script.config.fmt,
        "dag": compiled.dag,
        "rules": compiled.rules,
        "abstractions": [
            {"kind": type(a).__name__, "id": a.id, "line": a.line, "site": a.site,
             "tasks": a.tasks, "mode": a.mode, "reason": a.reason}
            for a in script.abstractions
        ],
    }
    path = os.path.join(compiled.sandbox, "weave.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)


def summary(compiled: Compiled) -> list[str]:
    """The compile summary: rules per DAG and the native/expanded choices."""
    total = sum(compiled.rules.values())
    lines = [f"compiled {compiled.script.display}: {total} rules in {len(compiled.rules)} "
             f"DAG(s) under {compiled.sandbox} ({compiled.seconds:.2f} s)"]
    for a in compiled.script.abstractions:
        if type(a).__name__ in ("AllPairs", "Wavefront"):
            lines.append(f"{a.site}: {a.id}: {a.mode} ({a.reason})")
    return lines


def engine_arguments(compiled: Compiled, engine_args: str) -> list[str]:
    """The ``treadle run`` options of ``--run``: the user's, plus ``-g ref_cnt`` when the script collects."""
    args = shlex.split(engine_args)
    if compiled.collects and not any(a == "-g" or a.startswith(("-g", "--gc")) for a in args):
        args = ["-g", "ref_cnt", *args]
    return args


def run_engine(compiled: Compiled, engine_args: str, wrapper: str | None) -> int:
    """``treadle run`` on the root DAG from the sandbox root; the exit status is the run's."""
    argv = engine_command(compiled.dag, engine_arguments(compiled, engine_args), wrapper, compiled.script.config.fmt)
    logging.getLogger("treadle.weave.engine").info("running %s", shlex.join(argv))
    return subprocess.call(argv, cwd=compiled.sandbox, env=engine_environment())
