"""``treadle weave [options] SCRIPT [ARGS...]``: compile (and optionally run) a Weaver script."""

from __future__ import annotations

import logging
import os
import shlex
import sys
import traceback
from typing import TYPE_CHECKING

import click

from treadle import __version__
from treadle.cli.ranges import COUNT
from treadle.errors import TreadleError

if TYPE_CHECKING:
    from treadle.weave.compiler import Compiled

DEBUG_NAMES = ("abstraction", "data", "dataset", "engine", "function", "nest", "options",
               "script", "user", "all")


def _setup_logging(log_file: str | None, debug: tuple[str, ...]) -> set[str]:
    names: set[str] = set()
    for item in debug:
        for name in item.split(","):
            name = name.strip()
            if name not in DEBUG_NAMES:
                raise click.BadParameter(f"{name!r}; choose from {', '.join(DEBUG_NAMES)}",
                                         param_hint="-d/--debug")
            names.add(name)
    handler: logging.Handler = (logging.FileHandler(log_file) if log_file
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("%(message)s" if not names
                                           else "%(name)s: %(message)s"))
    root = logging.getLogger("treadle.weave")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.INFO)
    for name in names:
        target = root if name == "all" else logging.getLogger(f"treadle.weave.{name}")
        target.setLevel(logging.DEBUG)
    return names


@click.command(context_settings={"help_option_names": ["-h", "--help"],
                                 "ignore_unknown_options": True,
                                 "allow_interspersed_args": False})
@click.option("-o", "-O", "--output", "output", metavar="DIR",
              help="Sandbox directory (default ./<script stem>.weave).")
@click.option("--log", "log_file", metavar="FILE", help="Compiler log (default stderr).")
@click.option("-x", "--run", "run", is_flag=True, help="Run the DAG with `treadle run` afterwards.")
@click.option("-e", "--engine-args", default="", metavar="ARGS",
              help='Extra arguments for `treadle run`, e.g. "-T wq -p 9123".')
@click.option("-w", "--wrapper", metavar="CMD", help="A prefix for the engine command.")
@click.option("-a", "--nest-abstractions", is_flag=True, help="One sub-DAG per abstraction.")
@click.option("-t", "--inline", type=COUNT, default=1, metavar="N",
              help="Default group size: N tasks per inline sub-DAG (1 = off).")
@click.option("-b", "--options", "b_options", multiple=True, metavar="K=V,...",
              help="Script-level options cpu/cores/memory/disk/batch/local/collect; they win.")
@click.option("-d", "--debug", multiple=True, metavar="SUB[,SUB]",
              help=f"Debug logging for {', '.join(DEBUG_NAMES)}; `script` shows tracebacks.")
@click.option("-W", "--strict", is_flag=True, help="Warnings become errors.")
@click.option("-g", "--symbols", is_flag=True, help="Write `# script:line Abstraction` per rule.")
@click.option("-I", "--no-builtins", is_flag=True, help="Do not pre-load the Weaver names.")
@click.option("-N", "--no-normalize", is_flag=True, help="Write paths exactly as given.")
@click.option("--native", type=click.Choice(["auto", "never", "always"]),
              help="Override every native= of AllPairs and Wavefront.")
@click.option("--format", "fmt", type=click.Choice(["make", "json"]), default="make",
              help="DAG syntax: Makeflow text or JSON workflow.")
@click.option("--db", "db", multiple=True, metavar="ALIAS=URL", help="Bind a database alias.")
@click.option("--force", is_flag=True, help="Compile into a non-empty non-sandbox directory.")
@click.version_option(__version__, "--version", prog_name="treadle weave")
@click.argument("script", type=click.Path(dir_okay=False))
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def command(output: str | None, log_file: str | None, run: bool, engine_args: str,
            wrapper: str | None, nest_abstractions: bool, inline: int,
            b_options: tuple[str, ...], debug: tuple[str, ...], strict: bool, symbols: bool,
            no_builtins: bool, no_normalize: bool, native: str | None, fmt: str,
            db: tuple[str, ...], force: bool, script: str, arguments: tuple[str, ...]) -> None:
    """Compile a Weaver SCRIPT into a Makeflow DAG (and run it with -x).

    \b
    Examples:
      treadle weave irises.py                      compile into ./irises.weave
      treadle weave -x -e "-T wq -p 9123" irises.py
      treadle weave workbench.py map 1000          words after SCRIPT go to the script
    """
    from treadle.weave.compiler import ScriptFailed, compile_script, run_engine, summary
    from treadle.weave.context import Config
    from treadle.weave.options import parse_b_options

    debug_names = _setup_logging(log_file, debug)
    log = logging.getLogger("treadle.weave")
    aliases = {}
    for item in db:
        alias, sep, url = item.partition("=")
        if not sep or not alias or not url:
            raise click.BadParameter(f"{item!r}: expected ALIAS=URL", param_hint="--db")
        aliases[alias] = url
    config = Config(native=native, strict=strict, symbols=symbols, normalize=not no_normalize,
                    fmt=fmt, db_aliases=aliases, nest_abstractions=nest_abstractions,
                    inline=inline, wrapper=wrapper, engine_args=engine_args)
    show_traceback = bool(debug_names & {"script", "all"})
    try:
        options = parse_b_options(list(b_options)) if b_options else None
        compiled = compile_script(script, list(arguments), output, config, options,
                                  builtins_on=not no_builtins, force=force)
    except ScriptFailed as e:
        if show_traceback:
            traceback.print_exception(e.original, file=sys.stderr)
        click.echo(e.message, err=True)
        sys.exit(1)
    except TreadleError as e:
        if show_traceback:
            traceback.print_exc()
        click.echo(f"{script}: {e}", err=True)
        sys.exit(1)
    for line in summary(compiled):
        log.info("%s", line)
    if run:
        sys.exit(run_engine(compiled, engine_args, wrapper) if wrapper else _run(compiled, engine_args))


def _run(compiled: Compiled, engine_args: str) -> int:
    """``--run`` in this process: ``treadle run``'s options, then :func:`~treadle.flow.run.run_workflow`.

    As the engine process would (``run_engine``, still used when a wrapper must
    start the engine), it runs from the sandbox root, with this treadle first on
    the ``PATH`` for rules that call ``treadle``.
    """
    # imported here, as the compiler is above: `treadle weave --help` stays fast
    from treadle.cli import run
    from treadle.flow.run import run_workflow
    from treadle.weave.compiler import engine_arguments
    from treadle.weave.nest import engine_environment

    argv = [*(["--json"] if compiled.script.config.fmt == "json" else []),
            *engine_arguments(compiled, engine_args), compiled.dag]
    logging.getLogger("treadle.weave.engine").info("running treadle run %s in this process", shlex.join(argv))
    os.chdir(compiled.sandbox)
    os.environ["PATH"] = engine_environment()["PATH"]
    try:
        opts = run.parse_args(argv)
    except run._Exit as e:  # -h or -v among the engine's options
        return e.status
    sys.stdout.flush()
    return run_workflow(opts)
