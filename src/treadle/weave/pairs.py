"""AllPairs and Wavefront: a native engine call when eligible, else expansion (docs/weaver.md, "AllPairs")."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from treadle.weave.abstractions import Abstraction, Merge
from treadle.weave.diagnostics import error
from treadle.weave.functions import Function, ParseFunction, PythonFunction, output_path
from treadle.weave.generated import BITWISE, CELL_MAIN, WAVEFRONT_ASSEMBLER
from treadle.weave.nest import File, file_list
from treadle.weave.pyfunc import script_source
from treadle.weave.templates import format_output, is_template, join_words, quote

log = logging.getLogger("treadle.weave.abstraction")

_NATIVE_SETTINGS = {"auto": "auto", "always": True, "never": False, True: True, False: False}


class _Engine:
    """How F is run: the word(s) before the pair, and files it needs."""

    def __init__(self, word: str, args: list[str], shipped: list[File], function: Function | None,
                 writes_out: bool = False):
        self.word = word  # native command line form (path, PATH.py:NAME or BITWISE)
        self.args = args
        self.shipped = shipped
        self.function = function  # for expansion
        self.writes_out = writes_out


class _Paired(Abstraction):
    """Common parts: choosing native or expanded, and describing F."""

    native_kind = ""

    def _setting(self) -> Any:
        forced = self.script.config.native
        value = forced if forced is not None else self.native
        if value not in _NATIVE_SETTINGS:
            raise error(f"native must be 'auto', True or False, not {value!r}")
        return _NATIVE_SETTINGS[value]

    def _decide(self, reason: str | None) -> bool:
        """Record and return the choice; ``reason`` is why native is impossible, or None."""
        setting = self._setting()
        if setting is False:
            self.mode, self.reason = "expanded", "native=False" if self.script.config.native \
                is None else "--native never"
            return False
        if reason is None:
            self.mode, self.reason = "native", "eligible"
            return True
        if setting is True:
            raise error(f"{self.id} cannot run natively (native=True): {reason}")
        self.mode, self.reason = "expanded", reason
        log.info("%s (%s): expanded, because %s", self.id, self.site, reason)
        return False

    def _describe_function(self, callable_main: str | None) -> tuple[_Engine | None, str | None]:
        """(engine description, reason it is not native or None)."""
        f = self.function
        if isinstance(f, str) and f == "BITWISE" and self.native_kind == "allpairs":
            helper = self._helper(BITWISE)
            return _Engine("BITWISE", [], [], helper), None
        if isinstance(f, PythonFunction):
            fn = f if callable_main is None else self._cell_wrapper(f.function, f.imports,
                                                                    f.helpers, callable_main)
            return _Engine(f.entry, [], f.shipped, fn), None
        if callable(f) and not isinstance(f, Function):
            pf = PythonFunction(f)
            fn = pf if callable_main is None else self._cell_wrapper(f, None, None, callable_main)
            return _Engine(pf.entry, [], pf.shipped, fn), None
        function = ParseFunction(f)
        form = function.native_form()
        if form is None:
            kind = "a Pipeline" if type(function).__name__ == "Pipeline" else \
                f"its command {function.cmd_format!r} is not 'EXE [args] {{IN}} > {{OUT}}'"
            return _Engine("", [], function.shipped, function,
                           writes_out="{OUT}" in function.cmd_format
                           or "{outputs}" in function.cmd_format), \
                f"F is {kind}"
        word, args = form
        return _Engine(word, args, function.shipped, function), None

    def _cell_wrapper(self, fn: Callable[..., Any], imports: Any, helpers: Any,
                      main: str) -> Function:
        head, _ = script_source(fn, imports, helpers)
        return self._helper(head + main.format(name=fn.__name__))

    def _native_options(self, command: list[str], port: Any, project: Any) -> list[str]:
        if port is not None:
            command += ["-p", str(port)]
        if project is not None:
            command += ["-N", quote(str(project))]
        return command


class AllPairs(_Paired):
    """Compare every item of A with every item of B (docs/weaver.md, "AllPairs")."""

    DEFAULT_PORT = 9098
    native_kind = "allpairs"

    def __init__(self, function: Any, inputs_a: Any, inputs_b: Any, outputs: Any = None,
                 includes: Any = None, native: Any = "auto", group: int | None = None,
                 collect: bool = False, local: bool = False, port: int | None = None,
                 project: str | None = None, symmetric: bool = False,
                 environment: dict[str, Any] | None = None, output: Any = None):
        if output is not None and outputs is not None:
            raise error("give output= or outputs=, not both")
        super().__init__(function, None, outputs if outputs is not None else output, includes,
                         native, group, collect, local, environment)
        self.inputs_a = inputs_a
        self.inputs_b = inputs_b
        self.port = port
        self.project = project
        self.symmetric = symmetric

    def _generate(self) -> Iterator[File]:
        a = file_list(self.inputs_a)
        b = file_list(self.inputs_b)
        names_a = [f.dag for f in a]
        names_b = [f.dag for f in b]
        if self.symmetric and names_a != names_b:
            raise error(f"{self.id}: symmetric=True needs A and B to be the same list")
        engine, reason = self._describe_function(None)
        outputs = self.outputs
        if reason is None and outputs is not None and (
                not isinstance(outputs, str | os.PathLike) or is_template(outputs)):
            reason = "the output is not one matrix file (a per-pair template or a list)"
        includes = file_list(self.includes)
        list_a = self._write_list(a)
        list_b = list_a if names_a == names_b else self._write_list(b)
        if self._decide(reason):
            assert engine is not None
            out = (output_path(os.fspath(outputs), self.nest) if outputs is not None
                   else self._stash_file())
            command = ["treadle", "allpairs", quote(list_a.dag), quote(list_b.dag),
                       quote(engine.word), "-o", quote(out.dag)]
            if engine.args:
                command += ["-e", quote(" ".join(engine.args))]
            for inc in includes:
                command += ["-f", quote(inc.dag)]
            if self.symmetric:
                command.append("--symmetric")
            cpu = self.task_options.cpu
            if cpu is not None:
                command += ["-c", str(cpu)]
            self._native_options(command, self.port, self.project)
            inputs = [list_a.dag, list_b.dag, *names_a, *names_b,
                      *[f.dag for f in engine.shipped], *[f.dag for f in includes]]
            self._raw(inputs, [out.dag], " ".join(command), local=True, cores=cpu)
            yield out
            return
        yield from self._expand(a, b, engine, outputs, includes, list_a, list_b)

    def _expand(self, a: list[File], b: list[File], engine: _Engine | None, outputs: Any,
                includes: list[File], list_a: File, list_b: File) -> Iterator[File]:
        assert engine is not None and engine.function is not None
        function = engine.function
        nest = self.nest
        template = outputs if is_template(outputs) else None
        tables: list[File] = []
        index = 0
        for i, fa in enumerate(a):
            for j, fb in enumerate(b):
                if self.symmetric and j < i:
                    continue
                if template is not None:
                    pair = f"{os.path.basename(fa.dag)}_{os.path.basename(fb.dag)}"
                    out = output_path(format_output(template, pair, index, nest.stash.next), nest)
                else:
                    out = self._stash_file()
                index += 1
                qa, qb, qo = quote(fa.dag), quote(fb.dag), quote(out.dag)
                triple = f"printf '%s\\t%s\\t%s\\n' {qa} {qb}"
                if engine.writes_out:
                    raw = File(out.abspath + ".raw", nest)
                    run = function.command_format([fa, fb], [raw])
                    command = (f"{run} && {triple} \"$(cat {quote(raw.dag)})\" > {qo} && "
                               f"rm -f {quote(raw.dag)}")
                else:
                    args = " ".join(quote(x) for x in engine.args)
                    run = " ".join(w for w in (function.exe_word, args, qa, qb) if w)
                    command = f"r=$({run}) && {triple} \"$r\" > {qo}"
                self._run(function, [fa, fb], [out], None, includes, command=command)
                tables.append(out)
        if outputs is None or template is not None:
            yield from tables
            return
        name = os.fspath(outputs)
        if not name.endswith(".npy") and not self.symmetric:
            yield from Merge(tables, name, _register=False)
            return
        merged = self._stash_file()
        list(Merge(tables, merged.abspath, _register=False))
        out = output_path(name, nest)
        argv = ["treadle", "allpairs", quote(list_a.dag), quote(list_b.dag), "--from",
                quote(merged.dag)]
        if self.symmetric:
            argv.append("--symmetric")
        argv += ["-o", quote(out.dag)]
        self._raw([list_a.dag, list_b.dag, merged.dag], [out.dag], " ".join(argv), local=True)
        yield out


class Wavefront(_Paired):
    """R[x][y] = F(R[x-1][y], R[x][y-1], R[x-1][y-1]) over a grid (docs/allpairs.md, "Wavefront")."""

    native_kind = "wavefront"

    def __init__(self, function: Any, boundary: Any, xsize: int, ysize: int, outputs: Any = None,
                 includes: Any = None, native: Any = "auto", group: int | None = None,
                 collect: bool = False, local: bool = False, port: int | None = None,
                 project: str | None = None, environment: dict[str, Any] | None = None):
        super().__init__(function, None, outputs, includes, native, group, collect, local,
                         environment)
        if not isinstance(xsize, int) or not isinstance(ysize, int) or xsize < 1 or ysize < 1:
            raise error("xsize and ysize must be whole numbers >= 1")
        self.boundary = boundary
        self.xsize = xsize
        self.ysize = ysize
        self.port = port
        self.project = project

    def _boundary_values(self) -> dict[tuple[int, int], str]:
        if isinstance(self.boundary, dict):
            values = {(int(x), int(y)): str(v) for (x, y), v in self.boundary.items()}
        else:
            path = file_list(self.boundary)
            if len(path) != 1:
                raise error("a Wavefront boundary is one file or a dict")
            values = {}
            try:
                with open(path[0].abspath, encoding="utf-8") as f:
                    for line in f:
                        parts = line.split(None, 2)
                        if len(parts) == 3:
                            values[(int(parts[0]), int(parts[1]))] = parts[2].rstrip("\n")
            except OSError as e:
                raise error(f"cannot read the boundary {path[0].path}: {e.strerror}") from None
        missing = [(x, 0) for x in range(self.xsize + 1) if (x, 0) not in values]
        missing += [(0, y) for y in range(1, self.ysize + 1) if (0, y) not in values]
        if missing:
            raise error(f"{self.id}: the boundary lacks cells {missing[:5]}")
        return values

    def _generate(self) -> Iterator[File]:
        engine, reason = self._describe_function(CELL_MAIN)
        if reason is None and self.outputs is not None and (
                not isinstance(self.outputs, str | os.PathLike) or is_template(self.outputs)):
            reason = "the output is not one file"
        if engine is not None and engine.word == "BITWISE":
            raise error("BITWISE is an AllPairs function, not a Wavefront one")
        values = self._boundary_values()
        nest = self.nest
        out = (output_path(os.fspath(self.outputs), nest) if self.outputs is not None
               else self._stash_file())
        includes = file_list(self.includes)
        if self._decide(reason):
            assert engine is not None
            if isinstance(self.boundary, dict):
                boundary = self._stash_file()
                with open(boundary.abspath, "w", encoding="utf-8") as fh:
                    for (x, y), v in sorted(values.items()):
                        fh.write(f"{x} {y} {v}\n")
            else:
                boundary = file_list(self.boundary)[0]
            argv = ["treadle", "wavefront", quote(engine.word), str(self.xsize),
                    str(self.ysize), quote(boundary.dag), quote(out.dag)]
            if engine.args:
                argv[2:2] = ["-e", quote(" ".join(engine.args))]
            self._native_options(argv, self.port, self.project)
            inputs = [boundary.dag, *[f.dag for f in engine.shipped], *[f.dag for f in includes]]
            self._raw(inputs, [out.dag], " ".join(argv), local=True)
            yield out
            return
        assert engine is not None and engine.function is not None
        function = engine.function
        cells: dict[tuple[int, int], File] = {}
        for (x, y), v in sorted(values.items()):
            if x == 0 or y == 0:
                f = self._stash_file()
                with open(f.abspath, "w", encoding="utf-8") as fh:
                    fh.write(f"{v}\n")
                cells[(x, y)] = f
        args = " ".join(quote(a) for a in engine.args)
        for x in range(1, self.xsize + 1):
            for y in range(1, self.ysize + 1):
                r = self._stash_file()
                ns = [cells[(x - 1, y)], cells[(x, y - 1)], cells[(x - 1, y - 1)]]
                word = " ".join(w for w in (function.exe_word, args) if w)
                command = f"{word} {x} {y} {join_words(ns)} > {quote(r.dag)}"
                self._run(function, ns, [r], None, includes, command=command)
                cells[(x, y)] = r
        listing = self._stash_file()
        computed = [(x, y) for x in range(1, self.xsize + 1) for y in range(1, self.ysize + 1)]
        with open(listing.abspath, "w", encoding="utf-8") as fh:
            for x, y in computed:
                fh.write(f"{x}\t{y}\t{cells[(x, y)].dag}\n")
        assembler = self._helper(WAVEFRONT_ASSEMBLER)
        command = f"{assembler.exe_word} {quote(listing.dag)} {quote(out.dag)}"
        self._raw([assembler.exe_word, listing.dag, *[cells[c].dag for c in computed]],
                  [out.dag], command, local=True)
        yield out
