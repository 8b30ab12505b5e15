"""Wrapper commands and containers: how a rule's command is run, kept apart from what it runs.

``--wrapper CMD`` puts every rule's command inside ``CMD``; ``--wrapper-input``
and ``--wrapper-output`` add files to every job; ``--docker IMAGE`` and
``--singularity IMAGE`` are wrappers this module builds. Everything here is
pure string work: the engine applies a :class:`Wrapping` once, where a rule
becomes a ``Job``, so the rule itself (and its identity in the journal) never
sees the wrapper.

The substitutions follow the reference makeflow:

* the first ``{}`` in a wrapper is replaced by the command as it is;
* else the first ``[]`` is replaced by the command quoted for the shell
  (double quotes, with ``"``, ``\\``, ``$`` and backquote escaped);
* else the command is appended after a space;
* if a wrapper holds both, the command goes where ``{}`` is, quoted;
* ``%%`` in a wrapper or a wrapper file becomes the rule's id (its unique job
  id), and ``%%%%`` stands for a literal ``%%``;
* ``LOCAL=REMOTE`` names a wrapper file that has another name in the job's
  sandbox.

Several ``--wrapper`` options nest in the order given: the first wraps the
command, the second wraps the first, and so on.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from treadle.flow.options import RunOptions

DOCKER_CLIS = ("docker", "podman")
SINGULARITY_CLIS = ("singularity", "apptainer")


def shell_quote(text: str) -> str:
    """``text`` inside double quotes, as the reference's ``[]`` inserts it (variables expand later, in the job)."""
    out = ['"']
    for ch in text:
        if ch in '"\\$`':
            out.append("\\")
        out.append(ch)
    out.append('"')
    return "".join(out)


def wrap_command(command: str, wrapper: str) -> str:
    """``command`` placed inside one ``wrapper`` (at ``{}``, quoted at ``[]``, or appended)."""
    braces = wrapper.find("{}")
    square = wrapper.find("[]")
    inner = shell_quote(command) if square >= 0 else command
    at = braces if braces >= 0 else square
    if at < 0:
        return f"{wrapper} {inner}"
    return wrapper[:at] + inner + wrapper[at + 2 :]


def nest(command: str, wrappers: Iterable[str]) -> str:
    """``command`` inside every wrapper, the first given innermost."""
    for w in wrappers:
        command = wrap_command(command, w)
    return command


def expand_percents(text: str, job_id: str) -> str:
    """``%%`` replaced by ``job_id``; ``%%%%`` left as a literal ``%%`` (the reference's rule)."""
    if "%%" not in text:
        return text
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        if text.startswith("%%%%", i):
            out.append("%%")
            i += 4
        elif text.startswith("%%", i):
            out.append(job_id)
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def split_rename(spec: str) -> tuple[str, str]:
    """``LOCAL=REMOTE`` -> (LOCAL, REMOTE); a plain name is both."""
    local, eq, remote = spec.partition("=")
    return (local, remote) if eq and remote else (local, local)


def docker_wrapper(cli: str, image: str, options: str = "", env_names: Iterable[str] = ()) -> str:
    """A wrapper that runs the command in a fresh container of ``image``, removed afterwards.

    The job's working directory (its sandbox on a worker, the workflow's
    directory locally) is mounted at the same path and is the container's
    working directory, so inputs are visible by the names the command uses and
    outputs land where the engine or the worker collects them. The rule's
    exported variables are passed in by name (``-e NAME`` takes the value from
    the job's environment).
    """
    env = "".join(f" -e {shlex.quote(name)}" for name in env_names)
    opts = f" {options}" if options else ""
    return (f'{shlex.quote(cli)} run --rm -v "$PWD:$PWD" -w "$PWD"{env}{opts} '
            f"{shlex.quote(image)} /bin/sh -c []")


def singularity_cli() -> str | None:
    """``singularity`` if it is on PATH, else ``apptainer`` if that is, else ``None``."""
    return next((c for c in SINGULARITY_CLIS if shutil.which(c)), None)


def singularity_wrapper(cli: str, image: str, options: str = "") -> str:
    """A wrapper that runs the command with ``singularity exec`` (or ``apptainer exec``) in ``image``.

    Singularity passes the environment through by default; the working
    directory is bound and made the home directory, as the reference does.
    """
    opts = f" {options}" if options else ""
    return (f'{shlex.quote(cli)} exec --home "$PWD" --bind "$PWD" --pwd "$PWD"{opts} '
            f"{shlex.quote(image)} /bin/sh -c []")


@dataclass(frozen=True, slots=True)
class Wrapping:
    """Every wrapper of a run, applied to each job the same way (``%%`` aside).

    ``container`` is the wrapper of ``--docker`` or ``--singularity`` without
    the per-rule environment; it sits innermost, so the user's ``--wrapper``
    commands run on the host around the container.
    """

    commands: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    docker: tuple[str, str, str] | None = None  # (cli, image, options)
    singularity: tuple[str, str, str] | None = None  # (cli, image, options)

    @classmethod
    def from_options(cls, opts: RunOptions) -> Wrapping:
        """The wrapping ``treadle run``'s options ask for (empty, and false, when they ask for none)."""
        docker = (opts.docker_cmd, opts.docker, opts.docker_opt) if opts.docker else None
        singularity = None
        if opts.singularity:
            singularity = (singularity_cli() or SINGULARITY_CLIS[0], opts.singularity, opts.singularity_opt)
        return cls(opts.wrappers, opts.wrapper_inputs, opts.wrapper_outputs, docker, singularity)

    def __bool__(self) -> bool:
        return bool(self.commands or self.inputs or self.outputs or self.docker or self.singularity)

    def command(self, rule_id: int, command: str, environment: Mapping[str, str] | None = None) -> str:
        """The command a job runs for rule ``rule_id``: the rule's command inside every wrapper."""
        layers: list[str] = []
        if self.docker is not None:
            layers.append(docker_wrapper(*self.docker, env_names=sorted(environment or ())))
        if self.singularity is not None:
            layers.append(singularity_wrapper(*self.singularity))
        layers += self.commands
        return nest(command, (expand_percents(w, str(rule_id)) for w in layers))

    def input_files(self, rule_id: int) -> list[tuple[str, str]]:
        """(workflow name, sandbox name) of every wrapper input of the rule's job."""
        return [split_rename(expand_percents(f, str(rule_id))) for f in self.inputs]

    def output_files(self, rule_id: int) -> list[tuple[str, str]]:
        """(workflow name, sandbox name) of every wrapper output of the rule's job."""
        return [split_rename(expand_percents(f, str(rule_id))) for f in self.outputs]
