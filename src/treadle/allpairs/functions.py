"""Resolving F: a built-in, a Python callable (object, FILE.py:NAME or MODULE:NAME) or an
executable, into a runner ``Function`` plus the identity that goes into the fingerprint."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from treadle.allpairs.runner import BITWISE, Function, load_callable
from treadle.errors import AllPairsError

BUILTINS = (BITWISE,)


@dataclass
class Resolved:
    """F ready to run: the runner's form, a description for messages, its identity, and
    the files a worker needs for it (the executable or the callable's source file)."""

    function: Function
    label: str
    identity: str
    ship: tuple[str, ...]


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_module_level(obj: Callable, label: str) -> None:
    qualname = getattr(obj, "__qualname__", "")
    if not callable(obj):
        raise AllPairsError(f"F {label} is not callable")
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise AllPairsError(
            f"F {label} is a lambda or a nested function; define it with def at the top level "
            "of a module, because pool processes and workers import it again")


def _from_object(obj: Callable, batched: bool, takes_bytes: bool, label: str,
                 source: str, name: str, module: bool) -> Resolved:
    _check_module_level(obj, label)
    batched = batched or bool(getattr(obj, "treadle_batched", False))
    takes_bytes = takes_bytes or bool(getattr(obj, "treadle_takes_bytes", False))
    fn = Function("callable", source=source, name=name, module=module, batched=batched,
                  takes_bytes=takes_bytes, call=obj)
    origin = source
    if module:
        spec = importlib.util.find_spec(source.split(".")[0])
        origin = getattr(spec, "origin", None) or source
        found = inspect.getmodule(obj)
        try:
            origin = (found and inspect.getsourcefile(found)) or origin
        except TypeError:  # a built-in module has no source file
            pass
    digest = file_sha256(origin) if origin and os.path.isfile(origin) else ""
    ship = (origin,) if origin and os.path.isfile(origin) else ()
    flags = f"batched={batched} bytes={takes_bytes}"
    return Resolved(fn, label, f"callable {source}:{name} {digest} {flags}", ship)


def resolve(function: object, extra_args: Sequence[str] = (), batched: bool = False,
            takes_bytes: bool = False, exec_each: bool = False) -> Resolved:
    """Resolve F, first match wins: built-in, FILE:NAME, MODULE:NAME, executable.

    ``exec_each`` (executables only) starts F afresh for every pair instead of
    running a ``#!/bin/sh`` F in a reused shell; results are the same either
    way, so it is not part of F's identity and a run may resume with or without it.
    """
    resolved = _resolve(function, extra_args, batched, takes_bytes)
    if exec_each:
        if resolved.function.kind != "exec":
            raise AllPairsError(f"--exec-each applies to an executable F, not {resolved.label}")
        resolved.function.exec_each = True
    return resolved


def _resolve(function: object, extra_args: Sequence[str], batched: bool,
             takes_bytes: bool) -> Resolved:
    if callable(function) and not isinstance(function, str):
        module = getattr(function, "__module__", "") or ""
        name = getattr(function, "__qualname__", getattr(function, "__name__", ""))
        label = f"{module}.{name}"
        _check_module_level(function, label)
        source = ""
        try:
            source = inspect.getsourcefile(function) or ""
        except TypeError:
            pass
        if module == "__main__" or not module:
            return _from_object(function, batched, takes_bytes, label, source, name, False)
        return _from_object(function, batched, takes_bytes, label, module, name, True)
    if not isinstance(function, (str, os.PathLike)):
        raise AllPairsError(f"F must be a name, a path or a callable, not {type(function).__name__}")
    text = os.fspath(function)
    if text in BUILTINS:
        if batched:
            raise AllPairsError(f"{text} is a built-in; --batched does not apply")
        fn = Function("builtin", name=text)
        return Resolved(fn, text, f"builtin {text}", ())
    if ":" in text:
        where, _, name = text.rpartition(":")
        candidates = [where] if where.endswith(".py") else [where, where + ".py"]
        for path in candidates:
            if os.path.isfile(path):
                try:
                    obj = load_callable(path, name, module=False)
                except AttributeError:
                    raise AllPairsError(f"F {text}: {path} defines no {name}") from None
                except Exception as e:
                    raise AllPairsError(f"F {text}: importing {path} failed: "
                                        f"{type(e).__name__}: {e}") from None
                return _from_object(obj, batched, takes_bytes, text, os.path.abspath(path),
                                    name, False)
        obj = _import_from_module(where, name, text)
        if obj is not None:
            return _from_object(obj, batched, takes_bytes, text, where, name, True)
    found = text if os.sep in text and os.path.isfile(text) else shutil.which(text)
    if found is None and os.path.isfile(text):
        found = os.path.join(".", text)
    if found is not None and os.access(found, os.X_OK) and os.path.isfile(found):
        path = os.path.abspath(found)
        fn = Function("exec", executable=path, args=list(extra_args), batched=batched)
        identity = f"exec {path} {file_sha256(path)} batched={batched}"
        return Resolved(fn, text, identity, (path,))
    if found is not None and os.path.isfile(found):
        raise AllPairsError(f"F {text} is a file but not executable (chmod +x it)")
    raise AllPairsError(f"F {text} is neither an executable, a Python callable nor a built-in "
                        f"({', '.join(BUILTINS)})")


def _import_from_module(module: str, name: str, text: str):
    if not module or not all(part.isidentifier() for part in module.split(".")):
        return None
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    try:
        mod = importlib.import_module(module)
    except Exception as e:
        raise AllPairsError(f"F {text}: importing {module} failed: {type(e).__name__}: {e}") from None
    value = mod
    for part in name.split("."):
        if not hasattr(value, part):
            raise AllPairsError(f"F {text}: module {module} defines no {name}")
        value = getattr(value, part)
    return value


def pair_error(names_a: Sequence[str], names_b: Sequence[str], i: int, j: int, message: str,
               stderr: str = "", attempts: int = 1) -> AllPairsError:
    """The one-line error for a pair whose F failed, naming the pair and F's stderr tail."""
    where = f"pair ({i}, {j}) {names_a[i]!r} {names_b[j]!r}" if i >= 0 and j >= 0 else "a block"
    tail = " ".join(stderr.strip().split("\n")[-5:]) if stderr.strip() else ""
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    text = f"F failed on {where}{tries}: {message}"
    if tail:
        text += f"; stderr: {tail}"
    return AllPairsError(text)
