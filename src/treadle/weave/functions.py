"""Functions: command templates bound to executables (docs/weaver.md, "Functions").

Calling a function schedules one task in the current nest and returns its output
files. Executables found only in system directories are written by their bare
name (workers have their own); every other executable is an input of the task.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
from collections.abc import Callable
from typing import Any

from treadle.weave import context
from treadle.weave.diagnostics import error, user_site
from treadle.weave.nest import CurrentNest, CurrentScript, File, MakeFile, file_list, flatten
from treadle.weave.options import CurrentOptions
from treadle.weave.pyfunc import python_function_script
from treadle.weave.task import Task
from treadle.weave.templates import format_command, format_output, is_template, join_words, quote

log = logging.getLogger("treadle.weave.function")

DEFAULT_FORMAT = "{executable} {arguments} {inputs} > {outputs}"
SYSTEM_DIRS = ("/bin", "/usr/bin", "/sbin", "/usr/sbin", "/usr/local/bin")
SHELLS = ("sh", "ksh", "bash", "csh", "tcsh")
_NATIVE_FORM = re.compile(
    r"\s*\{(?:executable|EXE)\}(?P<args>.*?)\s*\{(?:inputs|IN)\}\s*>\s*\{(?:outputs|OUT)\}\s*\Z")
_SHELL_META = re.compile(r"[|;&<>$`(){}\\\n]")


class Function:
    """A command template bound to an executable; calling it schedules one task."""

    outsuffix: str | None = None

    def __init__(self, executable: str | File | None, cmd_format: str | None = None,
                 find_dirs: list[str] | None = None, environment: dict[str, Any] | None = None):
        self.cmd_format = cmd_format or DEFAULT_FORMAT
        self.environment = {str(k): str(v) for k, v in (environment or {}).items()}
        self.find_dirs = list(find_dirs or [])
        self.includes: list[File] = []
        self.executable_file: File | None = None
        self.path = ""
        self.exe_word = ""
        if executable is not None:
            self._resolve(executable)

    def _resolve(self, executable: str | File) -> None:
        """Find the executable and decide how it is written.

        Looked up as given, then in find_dirs, the script's directory, the
        current directory and PATH (docs/weaver.md, "Functions").
        """
        if isinstance(executable, File):
            self._ship(executable.abspath)
            return
        name = os.path.expanduser(str(executable))
        if os.sep in name and os.path.exists(name):
            self._ship(os.path.abspath(name))
            return
        script = CurrentScript()
        for d in self.find_dirs + [script.directory, os.getcwd()]:
            candidate = os.path.join(d, name)
            if os.path.isfile(candidate):
                self._ship(os.path.abspath(candidate))
                return
        found = shutil.which(name)
        if found is None:
            raise error(f"executable {name!r} not found (searched find_dirs, the script's "
                        f"directory, the current directory and PATH)")
        if os.path.dirname(found) in SYSTEM_DIRS and os.sep not in name:
            self.path = found
            self.exe_word = name
            log.debug("%s: a system program (%s), written by name", name, found)
        else:
            self._ship(os.path.abspath(found))

    def _ship(self, abspath: str) -> None:
        f = MakeFile(abspath)
        self.executable_file = f
        self.path = abspath
        self.exe_word = f.dag if os.sep in f.dag else os.path.join(".", f.dag)
        log.debug("%s: shipped with its tasks as %s", abspath, self.exe_word)

    @property
    def shipped(self) -> list[File]:
        """Files every task of this function needs besides its inputs."""
        exe = [self.executable_file] if self.executable_file is not None else []
        return exe + self.includes

    # --- formatting ----------------------------------------------------------------------
    def command_format(self, inputs: Any = None, outputs: Any = None,
                       arguments: Any = None) -> str:
        """The command text for these inputs, outputs and arguments."""
        return format_command(self.cmd_format, self.exe_word, _words(inputs), _words(outputs),
                              _arguments(arguments))

    def native_form(self) -> tuple[str, list[str]] | None:
        """(executable, fixed args) when the command is ``EXE [args] {IN} > {OUT}``."""
        m = _NATIVE_FORM.match(self.cmd_format)
        if not m or not self.exe_word:
            return None
        args = re.sub(r"\{(?:arguments|ARG)\}", "", m.group("args"))
        if "{" in args or "}" in args or _SHELL_META.search(args):
            return None
        return self.exe_word, shlex.split(args)

    # --- calling -------------------------------------------------------------------------
    def __call__(self, inputs: Any = None, outputs: Any = None, arguments: Any = None,
                 includes: Any = None, local: bool = False,
                 environment: dict[str, Any] | None = None, collect: bool = False) -> list[File]:
        nest = CurrentNest()
        site = user_site()
        ins = file_list(inputs)
        if outputs is None:
            outputs = "{stash}"
        outs = output_files(outputs, ins, nest)
        return self.schedule(ins, outs, arguments, file_list(includes), local, environment,
                             collect, site)

    def schedule(self, ins: list[File], outs: list[File], arguments: Any,
                 includes: list[File], local: bool | None, environment: dict[str, Any] | None,
                 collect: bool | None, site: str, command: str | None = None) -> list[File]:
        """Schedule one task with ready-made files (the common path of calls and abstractions)."""
        abstraction = context.CurrentAbstraction()
        if abstraction is not None and not local and not environment and not collect:
            fixed = abstraction.fixed_parts.get(id(self))
            if fixed is None:
                fixed = abstraction.fixed_parts[id(self)] = self._fixed(abstraction, None,
                                                                        None, None)
        else:
            fixed = self._fixed(abstraction, local, environment, collect)
        env, is_local, is_collect, shipped, category, options = fixed
        if command is None:
            command = self.command_format(ins, outs, arguments)
        inputs = [f.dag for f in ins]
        if includes or shipped:
            inputs = list(dict.fromkeys(inputs + [f.dag for f in includes] + shipped))
        task = Task(outputs=[f.dag for f in outs], inputs=inputs, command=command,
                    category=category, cores=options.cpu, memory=options.memory_mb,
                    disk=options.disk_mb, batch=options.batch, local=is_local, environment=env,
                    collect=tuple(f.dag for f in ins) if is_collect else ())
        CurrentNest().schedule(task, site)
        if abstraction is not None:
            abstraction.tasks += 1
        return outs

    def _fixed(self, abstraction: Any, local: bool | None, environment: dict[str, Any] | None,
               collect: bool | None) -> tuple[dict[str, str], bool, bool, list[str], str, Any]:
        """What every task of this function (in this abstraction) shares."""
        script = CurrentScript()
        options = abstraction.task_options if abstraction is not None else CurrentOptions()
        forced = script.options
        env = dict(self.environment)
        env.update({str(k): str(v) for k, v in options.environment.items()})
        if abstraction is not None:
            env.update(abstraction.environment)
        if environment:
            env.update({str(k): str(v) for k, v in environment.items()})
        is_local = bool(local) or bool(abstraction is not None and abstraction.local) or bool(
            options.local)
        is_collect = (bool(collect) or bool(abstraction is not None and abstraction.collect)
                      or bool(options.collect))
        if forced is not None and forced.local is not None:
            is_local = forced.local
        if forced is not None and forced.collect is not None:
            is_collect = forced.collect
        category = abstraction.id if abstraction is not None else f"call_{self.label}"
        return env, is_local, is_collect, [f.dag for f in self.shipped], category, _Resolved(
            options)

    @property
    def label(self) -> str:
        """The executable's basename, for category names of direct calls."""
        base = os.path.basename(self.path or self.exe_word) or "function"
        return re.sub(r"[^A-Za-z0-9_]", "_", base)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.exe_word!r}, cmd_format={self.cmd_format!r})"


class _Resolved:
    """Options with sizes converted to MB once, not once per task."""

    __slots__ = ("cpu", "memory_mb", "disk_mb", "batch")

    def __init__(self, options: Any):
        self.cpu = options.cpu
        self.memory_mb = options.memory_mb
        self.disk_mb = options.disk_mb
        self.batch = options.batch


def _words(files: Any) -> str:
    if files is None:
        return ""
    if type(files) is list and all(type(f) is File for f in files):
        return " ".join([quote(f.dag) for f in files])
    if isinstance(files, str | File):
        files = [files]
    return join_words(str(f) for f in flatten(files))


def _arguments(arguments: Any) -> str:
    if arguments is None:
        return ""
    if isinstance(arguments, list | tuple):
        return " ".join(str(a) for a in arguments)
    return str(arguments)


def output_path(name: str, nest: Any) -> File:
    """An output named relative to the nest's directory (a new name: no cache lookup).

    With ``-N`` an output of the root nest keeps the name the script gave it.
    """
    if name[:1] == "/" or (nest.parent is None and not nest.script.config.normalize):
        return File(name, nest)
    return File(f"{nest.work_dir}/{name}", nest)


def output_files(outputs: Any, ins: list[File], nest: Any, start: int = 0) -> list[File]:
    """Outputs from a template (one per input), one name, or a list of names."""
    if is_template(outputs):
        new_stash = nest.stash.next
        if not ins:
            return [output_path(format_output(outputs, "", start, new_stash), nest)]
        return [output_path(format_output(outputs, f.dag, start + i, new_stash), nest)
                for i, f in enumerate(ins)]
    if isinstance(outputs, str):
        return [output_path(outputs, nest)]
    out = []
    for item in outputs if isinstance(outputs, list | tuple) else [outputs]:
        if isinstance(item, File):
            out.append(item)
        elif isinstance(item, str | os.PathLike):
            out.append(output_path(os.fspath(item), nest))
        else:
            raise error(f"an output must be a path or a File, got {item!r}")
    return out


class SimpleFunction(Function):
    """A Function with the default format; ``outsuffix`` names an abstraction's outputs."""

    def __init__(self, executable: str, outsuffix: str | None = None,
                 cmd_format: str | None = None, find_dirs: list[str] | None = None,
                 environment: dict[str, Any] | None = None):
        super().__init__(executable, cmd_format, find_dirs, environment)
        self.outsuffix = outsuffix


class ScriptFunction(Function):
    """A function whose executable is ``source`` written to a file (mode 0755)."""

    def __init__(self, source: str, executable: str | None = None,
                 cmd_format: str | None = None, environment: dict[str, Any] | None = None):
        path = executable or CurrentNest().stash.next()
        path = os.path.abspath(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)
        os.chmod(path, 0o755)
        self.source = source
        super().__init__(MakeFile(path), cmd_format, None, environment)


class ShellFunction(ScriptFunction):
    """A shell script function; treadle adds the ``#!`` line."""

    def __init__(self, source: str, shell: str | None = None, executable: str | None = None,
                 cmd_format: str | None = None, environment: dict[str, Any] | None = None):
        shell = shell or "sh"
        if shell in SHELLS:
            shell_path = f"/bin/{shell}"
        elif os.path.isabs(shell):
            shell_path = shell
        else:
            raise error(f"shell must be one of {', '.join(SHELLS)} or an absolute path, "
                        f"not {shell!r}")
        super().__init__(f"#!{shell_path}\n{source}\n", executable, cmd_format, environment)


class PythonFunction(ScriptFunction):
    """A Python function made into a standalone Python 3 script (stdlib only, python3 >= 3.8)."""

    def __init__(self, function: Callable[..., Any], executable: str | None = None,
                 cmd_format: str | None = None, imports: list[str] | None = None,
                 helpers: Any = None, environment: dict[str, Any] | None = None):
        self.function = function
        self.imports = imports
        self.helpers = helpers
        source = python_function_script(function, imports, helpers)
        path = executable or CurrentNest().stash.next(".py")
        super().__init__(source, path, cmd_format, environment)

    @property
    def entry(self) -> str:
        """``PATH.py:NAME`` as the native engines take a callable."""
        assert self.executable_file is not None
        return f"{self.exe_word}:{self.function.__name__}"


class Pipeline(Function):
    """Several functions joined by a separator, all formatted with the same IN/OUT/ARG."""

    def __init__(self, functions: list[Any], separator: str = "&&"):
        super().__init__(None)
        self.functions = [ParseFunction(f) for f in functions]
        if not self.functions:
            raise error("a Pipeline needs at least one function")
        self.separator = separator
        for f in self.functions:
            self.includes.extend(f.shipped)
            self.environment.update(f.environment)
        self.path = self.functions[0].path
        self.exe_word = self.functions[0].exe_word
        self.cmd_format = ""

    def command_format(self, inputs: Any = None, outputs: Any = None,
                       arguments: Any = None) -> str:
        return f" {self.separator} ".join(f.command_format(inputs, outputs, arguments)
                                          for f in self.functions)

    def native_form(self) -> None:
        return None


def ParseFunction(function: Any, py_func_builder: Callable[..., Function] = PythonFunction,  # noqa: N802
                  environment: dict[str, Any] | None = None) -> Function:
    """A Function from a Function, a command string, an executable name or a callable."""
    if isinstance(function, Function):
        return function
    if isinstance(function, str):
        text = function.strip()
        if not text:
            raise error("an empty string is not a function")
        parts = text.split(None, 1)
        if len(parts) == 1:
            return Function(parts[0], environment=environment)
        return Function(parts[0], cmd_format="{executable} " + parts[1],
                        environment=environment)
    if callable(function):
        return py_func_builder(function)
    raise error(f"cannot make a function from {type(function).__name__} {function!r}")
