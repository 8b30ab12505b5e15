"""Linking: a workflow with the programs and modules its commands need, in one directory.

``treadle link`` (the reference's ``makeflow_linker``) looks at what each
rule runs, not only at what it declares: a program named in a command and
found on PATH (outside the system's own directories) or as a relative file, a
Python module that a ``.py`` input imports and that resolves to a file next to
it or on PYTHONPATH, a Perl module (``use A::B``) found next to the script or
on PERL5LIB. Those are copied into the output directory with the workflow's
inputs, and the workflow is written there again with each rule's extra
dependencies added to its sources (so remote backends ship them) and each
copied program called as ``./NAME``. Programs of the system (``/usr``, ``/bin``...)
and the standard libraries are left to the machine that runs the workflow; they
are reported, not copied.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from treadle.errors import UsageError
from treadle.flow.bundle import check_bundle_name
from treadle.flow.model import DEFAULT_CATEGORY, RESOURCE_NAMES, Rule, Workflow
from treadle.flow.writer import header_make, rule_make

# Programs installed here belong to the machine, not to the workflow.
SYSTEM_PREFIXES = ("/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/etc/")
# Interpreters run the workflow's scripts; they come with the machine, like the standard libraries.
_INTERPRETER = re.compile(r"(python|perl|ruby|R|Rscript|sh|bash|dash|zsh|env)[0-9.]*\Z")
_SHELL_OPERATORS = frozenset({";", "&", "&&", "|", "||", "(", ")", "!", "{", "}"})
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_PERL_USE = re.compile(r"^\s*(?:use|require)\s+([A-Z][\w]*(?:::\w+)*)", re.MULTILINE)


@dataclass
class Linked:
    """What ``link_workflow`` did: files copied (relative names), system programs left in place."""

    workflow: str
    copied: list[str] = field(default_factory=list)
    named: dict[str, str] = field(default_factory=dict)  # program -> where this machine has it


def link_workflow(wf: Workflow, dagfile: str, outdir: str, environ: Mapping[str, str] | None = None) -> Linked:
    """Write ``wf`` and everything its rules depend on into ``outdir`` (names relative to the current directory).

    Raises :class:`UsageError`, having written nothing, for an input outside the
    workflow's directory or a missing input.
    """
    env = os.environ if environ is None else environ
    here = os.path.realpath(".")
    target = os.path.realpath(outdir)
    if target == here:
        raise UsageError(f"cannot link into {outdir}: it is the workflow's own directory")
    inputs = wf.original_inputs()
    for name in inputs:
        check_bundle_name(name, here, target)
    result = Linked(os.path.join(outdir, os.path.basename(dagfile)))
    copies: dict[str, str] = {os.path.normpath(n): os.path.abspath(n) for n in inputs}  # dest name -> source
    texts: list[str] = []
    exports: dict[str, None] = {}
    for rule in wf.rules:
        extra, command = _rule_dependencies(rule, env, copies, result.named)
        sources = list(dict.fromkeys([*rule.sources, *extra]))
        variables = _rule_variables(wf, rule)
        exports.update(dict.fromkeys(rule.environment))
        texts.append(rule_make(rule.targets, sources, command, variables, local=rule.local, workflow=rule.workflow))
    os.makedirs(target, exist_ok=True)
    for dest, src in copies.items():
        path = os.path.join(target, dest)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.isdir(src):
            shutil.copytree(src, path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, path)
        result.copied.append(dest)
    header = header_make(f"linked by treadle link from {dagfile}", {}, exports, wf.outputs)
    with open(result.workflow, "w", encoding="utf-8") as f:
        f.write(header + "\n".join(texts))
    return result


def _rule_variables(wf: Workflow, rule: Rule) -> list[tuple[str, str]]:
    """The rule's category, resources and exported values, as rule-local assignments."""
    variables: list[tuple[str, str]] = []
    if rule.category != DEFAULT_CATEGORY:
        variables.append(("CATEGORY", rule.category))
    resources = wf.resources_of(rule)
    for name in RESOURCE_NAMES:
        value = getattr(resources, name)
        if value is not None:
            variables.append((name.upper(), str(value)))
    variables.extend(rule.environment.items())
    return variables


def _rule_dependencies(rule: Rule, env: Mapping[str, str], copies: dict[str, str],
                       named: dict[str, str]) -> tuple[list[str], str]:
    """Files the rule needs beyond its sources (added to ``copies``), and its command rewritten."""
    extra: list[str] = []
    command = rule.command
    for program in _programs(rule.command):
        if "/" in program:
            if not os.path.isabs(program) and os.path.isfile(program):
                name = os.path.normpath(program)
                copies.setdefault(name, os.path.abspath(program))
                extra.append(name)
            continue
        found = shutil.which(program, path=env.get("PATH", os.defpath))
        if found is None:
            continue  # a shell keyword or builtin, or a program the workflow makes
        if (_INTERPRETER.match(program) or os.path.realpath(found).startswith(SYSTEM_PREFIXES)
                or found.startswith(SYSTEM_PREFIXES)):
            named[program] = found
            continue
        copies.setdefault(program, os.path.realpath(found))
        extra.append(program)
        command = _call_locally(command, program)
    for script in [*rule.sources, *extra]:
        if script.endswith(".py") and os.path.isfile(script):
            extra.extend(_python_modules(script, env, copies))
        elif script.endswith((".pl", ".pm")) and os.path.isfile(script):
            extra.extend(_perl_modules(script, env, copies))
    return extra, command


def _programs(command: str) -> list[str]:
    """The first word of each simple command in a shell command line (best effort: no expansion)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    programs: list[str] = []
    start = True
    try:
        for word in lexer:
            if word in _SHELL_OPERATORS:
                start = True
            elif start and not _ASSIGNMENT.match(word):
                programs.append(word)
                start = False
    except ValueError:
        return programs  # unbalanced quotes: what was read so far
    return programs


def _call_locally(command: str, program: str) -> str:
    """``command`` with ``program`` in command position called as ``./program``."""
    pattern = re.compile(r"(^|[;&|(]\s*|^\s*)" + re.escape(program) + r"(?=[\s;&|)]|$)")
    return pattern.sub(lambda m: m.group(1) + "./" + program, command)


def _python_modules(script: str, env: Mapping[str, str], copies: dict[str, str]) -> list[str]:
    """Modules ``script`` imports (recursively) that are not standard and resolve to files; added to ``copies``."""
    found: list[str] = []
    base = os.path.dirname(script)
    todo = [script]
    seen: set[str] = set()
    path = [base or ".", *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for top in _imports(current):
            if top in sys.stdlib_module_names or top in sys.builtin_module_names:
                continue
            for directory in path:
                candidates = (os.path.join(directory, top + ".py"), os.path.join(directory, top))
                hit = next((c for c in candidates if os.path.isfile(c) or
                            os.path.isfile(os.path.join(c, "__init__.py"))), None)
                if hit is None:
                    continue
                name = os.path.normpath(os.path.join(base, os.path.basename(hit)))
                copies.setdefault(name, os.path.abspath(hit))
                found.append(name)
                todo.extend([hit] if hit.endswith(".py") else _package_files(hit))
                break
    return found


def _imports(script: str) -> list[str]:
    """The top-level names of the absolute imports in a Python file (none if it does not parse)."""
    try:
        with open(script, "rb") as f:
            tree = ast.parse(f.read(), script)
    except (OSError, SyntaxError, ValueError):
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module.split(".")[0])
    return names


def _package_files(package: str) -> list[str]:
    return [os.path.join(d, f) for d, _, files in os.walk(package) for f in files if f.endswith(".py")]


def _perl_modules(script: str, env: Mapping[str, str], copies: dict[str, str]) -> list[str]:
    """Perl modules ``script`` uses (recursively) found next to it or on PERL5LIB; added to ``copies``."""
    found: list[str] = []
    base = os.path.dirname(script)
    path = [base or ".", *[p for p in env.get("PERL5LIB", "").split(os.pathsep) if p]]
    todo = [script]
    seen: set[str] = set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            with open(current, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        for module in _PERL_USE.findall(text):
            relative = module.replace("::", "/") + ".pm"
            for directory in path:
                hit = os.path.join(directory, relative)
                if os.path.isfile(hit):
                    name = os.path.normpath(os.path.join(base, relative))
                    copies.setdefault(name, os.path.abspath(hit))
                    found.append(name)
                    todo.append(hit)
                    break
    return found
