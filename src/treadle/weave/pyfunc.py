"""Generating standalone Python 3 scripts from functions (docs/weaver.md, "Functions").

The generated file imports nothing from treadle and runs on any python3 ≥ 3.8, so a
worker needs no installation. Abstractions with their own calling convention
(MapReduce, Wavefront) add their own main; ``script_source`` builds the common part.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import textwrap
import types
from collections.abc import Callable, Iterable
from typing import Any

from treadle.weave.diagnostics import error, warn

ALWAYS_IMPORTED = ("os", "sys")


def function_source(function: Callable[..., Any]) -> str:
    """The ``def`` of a top-level function, dedented, without its decorators."""
    if not isinstance(function, types.FunctionType):
        raise error(f"{function!r} is not a Python function defined with def")
    if function.__name__ == "<lambda>" or "<locals>" in function.__qualname__:
        raise error(f"cannot ship {function.__qualname__}: define it with def at the top level "
                    f"of the script (lambdas and nested functions have no standalone source)")
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError) as e:
        raise error(f"cannot read the source of {function.__name__}: {e}") from None
    tree = ast.parse(source)
    node = tree.body[0]
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        raise error(f"cannot read the source of {function.__name__}")
    lines = source.splitlines()
    return "\n".join(lines[node.lineno - 1:]).rstrip() + "\n"


def _helper_items(helpers: Any) -> Iterable[tuple[str, Any]]:
    if helpers is None:
        return
    if isinstance(helpers, dict):
        yield from helpers.items()
        return
    if callable(helpers):
        helpers = [helpers]
    for item in helpers:
        if isinstance(item, dict):
            yield from item.items()
        elif isinstance(item, types.FunctionType):
            yield item.__name__, item
        else:
            raise error(f"helpers must be functions or dicts of constants, got {item!r}")


def script_source(function: Callable[..., Any], imports: Iterable[str] | None = None,
                  helpers: Any = None) -> tuple[str, list[str]]:
    """The script up to (not including) its main; also the list of modules imported."""
    body = function_source(function)
    modules = list(ALWAYS_IMPORTED)
    for name in list(imports or []) + list(getattr(function, "func_imports", None) or []):
        if name not in modules:
            modules.append(name)
    parts = ["#!/usr/bin/env python3\n", f"import {', '.join(modules)}\n\n"]
    helper_names: set[str] = set()
    for name, value in _helper_items(helpers):
        helper_names.add(name)
        if isinstance(value, types.FunctionType):
            parts.append(function_source(value) + "\n")
        else:
            parts.append(f"{name} = {value!r}\n")
    parts.append("\n" + body)
    known = set(dir(builtins)) | {m.split(".")[0] for m in modules} | helper_names
    known.add(function.__name__)
    free = sorted(n for n in inspect.getclosurevars(function).globals if n not in known)
    if free:
        warn(f"{function.__name__} uses the global name(s) {', '.join(free)}, which the "
             f"generated script will not have; pass them as helpers= or imports=")
    return "".join(parts), modules


def python_function_script(function: Callable[..., Any], imports: Iterable[str] | None,
                           helpers: Any) -> str:
    """A PythonFunction's script: call with argv[1:], print the result unless None."""
    head, _ = script_source(function, imports, helpers)
    return head + (
        "\n\nif __name__ == '__main__':\n"
        f"    _result = {function.__name__}(*sys.argv[1:])\n"
        "    if _result is not None:\n"
        "        print(_result)\n"
    )
