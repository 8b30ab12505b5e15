"""Abstractions: patterns that generate many tasks (docs/weaver.md, "Abstractions").

Creating an abstraction registers it as a future of the current nest; it
generates its tasks when the nest compiles, or earlier when something iterates
it. It records the options in force at creation, because generation happens
after the script's ``with Options(...)`` blocks have closed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from treadle.errors import WeaverError
from treadle.weave import context
from treadle.weave.dagwriter import Grouper
from treadle.weave.datasets import Dataset
from treadle.weave.diagnostics import error, user_site
from treadle.weave.functions import (
    Function,
    ParseFunction,
    PythonFunction,
    ScriptFunction,
    output_path,
)
from treadle.weave.generated import MAPPER_MAIN, PARTITIONER, REDUCER_MAIN
from treadle.weave.nest import CurrentScript, File, MakeFile, file_list, flatten
from treadle.weave.options import CurrentOptions, Options
from treadle.weave.pyfunc import script_source
from treadle.weave.task import Task
from treadle.weave.templates import format_output, is_template, join_words, quote

log = logging.getLogger("treadle.weave.abstraction")


class Abstraction(Dataset):
    """The base of every abstraction; subclasses implement ``_generate``."""

    inline_group = True  # whether ``group=`` means "tasks per inline sub-DAG"

    def __init__(self, function: Any, inputs: Any = None, outputs: Any = None,
                 includes: Any = None, native: Any = False, group: int | None = None,
                 collect: bool = False, local: bool = False,
                 environment: dict[str, Any] | None = None, _register: bool = True):
        super().__init__()
        script = CurrentScript()
        self.script = script
        self.id = script.next_id(type(self).__name__)
        self.site = user_site()
        self.function = function
        self.inputs = inputs
        self.outputs = outputs
        self.includes = includes
        self.native = native
        if group is not None and (not isinstance(group, int) or group < 1):
            raise error(f"group must be a whole number >= 1, got {group!r}")
        self.group = group
        self.collect = collect
        self.local = local
        self.environment = {str(k): str(v) for k, v in (environment or {}).items()}
        self.options = Options(local=local or None, collect=collect or None)
        self.task_options = CurrentOptions()
        self.sink: Any = None
        self.fixed_parts: dict[int, Any] = {}
        self.mode = "expanded"
        self.reason = ""
        self.tasks = 0
        self.generated = False
        self._outputs: list[str] | None = None
        self._registered = _register
        if _register:
            self.nest.futures.append(self)
            script.abstractions.append(self)

    @property
    def line(self) -> int:
        tail = self.site.rsplit(":", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    def compile(self) -> None:
        """Generate the tasks, once."""
        if self.generated:
            return
        self.generated = True
        script = self.script
        context.NESTS.append(self.nest)
        context.ABSTRACTIONS.append(self)
        try:
            own_dag = (self._registered and script.config.nest_abstractions
                       and sum(isinstance(f, Abstraction) for f in self.nest.futures) > 1)
            size = self.group if (self.inline_group and self.group) else script.config.inline
            self.sink = self.nest.open_sink(self.id, size if size > 1 else None, own_dag)
            outputs = [f.abspath for f in self._generate()]
            self.sink.close()
            self._outputs = outputs
        except WeaverError as e:
            if getattr(e, "site", None) is None:
                e.site = self.site  # type: ignore[attr-defined]  # see diagnostics.error
            raise
        finally:
            context.ABSTRACTIONS.remove(self)
            context.NESTS.remove(self.nest)
        log.debug("%s (%s): %d tasks, %s", self.id, self.site, self.tasks, self.mode)

    def __iter__(self) -> Iterator[File]:
        self.compile()
        if self._outputs is None:
            raise error(f"{self.id} is being generated and cannot be read from inside itself")
        nest = self.nest
        for p in self._outputs:
            yield MakeFile(p, nest)

    def _generate(self) -> Iterator[File]:
        raise NotImplementedError

    @property
    def cache_path(self) -> str:
        """A stash list of this abstraction's outputs, written on first use."""
        if self._cache_path is None:
            self.compile()
            path = self.nest.stash.next()
            with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
                for p in self._outputs or []:
                    f.write(self.nest.dag_name(p, p) + "\n")
            self._cache_path = path
        return self._cache_path

    # --- helpers for subclasses -------------------------------------------------------------
    def _function(self) -> Function:
        return ParseFunction(self.function)

    def _default_outputs(self, function: Function) -> str:
        if self.outputs is not None:
            return self.outputs
        return f"{{basename_woext}}.{function.outsuffix}" if function.outsuffix else "{stash}"

    def _run(self, function: Function, ins: list[File], outs: list[File], arguments: Any = None,
             includes: list[File] | None = None, command: str | None = None) -> list[File]:
        return function.schedule(ins, outs, arguments, includes or [], None, None, None,
                                 self.site, command=command)

    def _raw(self, inputs: list[str], outputs: list[str], command: str, local: bool = False,
             cores: int | None = None) -> None:
        """Schedule a task that no Function describes (native calls, helpers)."""
        opts = self.task_options
        forced = self.script.options
        is_local = local or self.local or bool(opts.local)
        if forced is not None and forced.local is not None:
            is_local = forced.local
        env = {str(k): str(v) for k, v in opts.environment.items()} | self.environment
        task = Task(outputs=outputs, inputs=list(dict.fromkeys(inputs)), command=command,
                    category=self.id, cores=cores if cores is not None else opts.cpu,
                    memory=opts.memory_mb, disk=opts.disk_mb, batch=opts.batch,
                    local=is_local, environment=env)
        self.tasks += 1
        sink = self.sink
        if isinstance(sink, Grouper):  # groups hold tasks of one function only
            sink.barrier()
            self.sink = sink.parent
        try:
            self.nest.schedule(task, self.site)
        finally:
            self.sink = sink

    def _stash_file(self, suffix: str = "") -> File:
        return MakeFile(self.nest.stash.next(suffix), self.nest)

    def _write_list(self, files: list[File]) -> File:
        """A stash list file of DAG names, one per line."""
        f = self._stash_file()
        with open(f.abspath, "w", encoding="utf-8", errors="surrogateescape") as out:
            for m in files:
                out.write(m.dag + "\n")
        return f

    def _helper(self, source: str, suffix: str = ".py") -> Function:
        """A generated helper program in the stash, shipped with its tasks."""
        path = self.nest.stash.next(suffix)
        return ScriptFunction(source, executable=path)

    def __repr__(self) -> str:
        return f"<{self.id} at {self.site}>"


class Map(Abstraction):
    """One task per input: ``function(input, output)``."""

    def __init__(self, function: Any, inputs: Any, outputs: Any = None, includes: Any = None,
                 native: Any = False, group: int | None = None, collect: bool = False,
                 local: bool = False, environment: dict[str, Any] | None = None):
        super().__init__(function, inputs, outputs, includes, native, group, collect, local,
                         environment)
        if native is True:
            raise error("Map has no native form (native=True)")

    def _generate(self) -> Iterator[File]:
        function = self._function()
        outputs = self._default_outputs(function)
        includes = file_list(self.includes)
        nest = self.nest
        if is_template(outputs):
            new_stash = nest.stash.next
            for i, f in enumerate(flatten(self.inputs)):
                out = output_path(format_output(outputs, f.dag, i, new_stash), nest)
                yield from self._run(function, [f], [out], None, includes)
            return
        ins = file_list(self.inputs)
        names = [outputs] * len(ins) if isinstance(outputs, str | File) else list(outputs)
        if len(names) != len(ins):
            raise error(f"{self.id}: {len(ins)} inputs but {len(names)} output names "
                        f"(a list of outputs needs one name per input)")
        for f, name in zip(ins, names, strict=True):
            out = name if isinstance(name, File) else output_path(os.fspath(name), nest)
            yield from self._run(function, [f], [out], None, includes)


class Iterate(Abstraction):
    """One task per value: ``{ARG}`` is the value, ``{IN}`` the includes."""

    def _generate(self) -> Iterator[File]:
        function = self._function()
        outputs = self.outputs if self.outputs is not None else "{stash}"
        values = range(self.inputs) if isinstance(self.inputs, int) else self.inputs
        if values is None:
            raise error("Iterate needs an int or an iterable of values")
        includes = file_list(self.includes)
        nest = self.nest
        names = None if is_template(outputs) else (
            [outputs] if isinstance(outputs, str) else list(outputs))
        values = list(values) if names is not None else values
        if names is not None and len(names) != len(values):
            raise error(f"{self.id}: {len(values)} values but {len(names)} output names")
        for i, v in enumerate(values):
            if names is None:
                out = output_path(format_output(outputs, str(v), i, nest.stash.next), nest)
            else:
                out = output_path(os.fspath(names[i]), nest)
            yield from self._run(function, includes, [out], v)


class Merge(Abstraction):
    """A tree of merges with fan-in ``group`` that keeps the inputs' order."""

    inline_group = False
    FAN_IN = 16

    def __init__(self, inputs: Any, outputs: Any, function: Any = None, includes: Any = None,
                 native: Any = False, group: int | None = None, collect: bool = False,
                 local: bool = True, environment: dict[str, Any] | None = None,
                 _register: bool = True):
        super().__init__(function or "cat {IN} > {OUT}", inputs, outputs, includes, native,
                         group, collect, local, environment, _register=_register)
        if native is True:
            raise error("Merge has no native form (native=True)")
        if not isinstance(outputs, str | os.PathLike) or is_template(outputs):
            raise error("Merge needs one output name")
        if group is not None and group < 2:
            raise error("a Merge's group (its fan-in) must be at least 2")

    def _generate(self) -> Iterator[File]:
        function = self._function()
        fan_in = self.group or self.FAN_IN
        includes = file_list(self.includes)
        files = file_list(self.inputs)
        while len(files) > fan_in:
            merged = []
            for start in range(0, len(files), fan_in):
                out = self._stash_file()
                self._run(function, files[start:start + fan_in], [out], None, includes)
                merged.append(out)
            files = merged
        yield from self._run(function, files, [output_path(os.fspath(self.outputs), self.nest)],
                             None, includes)


class MapReduce(Abstraction):
    """Map, partition, sort and reduce, then merge (the original Weaver generated only the map phase)."""

    inline_group = False
    MAPPER_SIZE = 16
    REDUCERS = 4

    def __init__(self, mapper: Any, reducer: Any, inputs: Any, outputs: Any = None,
                 includes: Any = None, native: Any = False, group: int | None = None,
                 collect: bool = False, local: bool = False, reducers: int | None = None,
                 environment: dict[str, Any] | None = None):
        super().__init__(mapper, inputs, outputs, includes, native, group, collect, local,
                         environment)
        if native is True:
            raise error("MapReduce has no native form (native=True)")
        self.mapper = mapper
        self.reducer = reducer
        self.reducers = reducers if reducers is not None else self.REDUCERS
        if not isinstance(self.reducers, int) or self.reducers < 1:
            raise error(f"reducers must be a whole number >= 1, got {reducers!r}")

    def _wrapped(self, f: Any, main: str) -> Function:
        """A callable (or PythonFunction) as a script with MapReduce's calling convention."""
        if isinstance(f, PythonFunction):
            head, _ = script_source(f.function, f.imports, f.helpers)
            name = f.function.__name__
        elif callable(f) and not isinstance(f, Function):
            head, _ = script_source(f)
            name = f.__name__
        else:
            return ParseFunction(f)
        return self._helper(head + main.format(name=name))

    def _generate(self) -> Iterator[File]:
        mapper = self._wrapped(self.mapper, MAPPER_MAIN)
        reducer = self._wrapped(self.reducer, REDUCER_MAIN)
        partitioner = self._helper(PARTITIONER)
        includes = file_list(self.includes)
        files = file_list(self.inputs)
        size = self.group or self.MAPPER_SIZE
        r = self.reducers
        parts: list[list[File]] = [[] for _ in range(r)]
        for start in range(0, len(files), size):
            group = files[start:start + size]
            outs = [self._stash_file() for _ in range(r)]
            tmp = MakeFile(outs[0].abspath + ".map", self.nest)
            command = (f"{mapper.command_format(group, [tmp])} && "
                       f"{partitioner.exe_word} {quote(tmp.dag)} {r} {join_words(outs)}")
            self._run(mapper, group, outs, None, includes + partitioner.shipped,
                      command=command)
            for k in range(r):
                parts[k].append(outs[k])
        nest = self.nest
        if is_template(self.outputs):
            reduced = [output_path(format_output(self.outputs, str(k), k, nest.stash.next), nest)
                       for k in range(r)]
        elif isinstance(self.outputs, list | tuple):
            if len(self.outputs) != r:
                raise error(f"{self.id}: {len(self.outputs)} output names for {r} reducers")
            reduced = [output_path(os.fspath(n), nest) for n in self.outputs]
        else:
            reduced = [self._stash_file() for _ in range(r)]
        for k in range(r):
            sorted_tmp = MakeFile(reduced[k].abspath + ".sorted", self.nest)
            command = (f"LC_ALL=C sort -s -t \"$(printf '\\t')\" -k1,1 {join_words(parts[k])} "
                       f"> {quote(sorted_tmp.dag)} && "
                       f"{reducer.command_format([sorted_tmp], [reduced[k]])} && "
                       f"rm -f {quote(sorted_tmp.dag)}")
            self._run(reducer, parts[k], [reduced[k]], None, includes, command=command)
        if isinstance(self.outputs, str | os.PathLike) and not is_template(self.outputs):
            yield from Merge(reduced, self.outputs, _register=False)
        else:
            yield from reduced
