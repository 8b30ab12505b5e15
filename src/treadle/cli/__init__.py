"""The ``treadle`` command: one entry point, subcommands loaded on first use.

Each subcommand lives in its own module of this package and exposes a
``click.Command`` called ``command``. Modules are imported only when their
subcommand runs, so ``treadle run`` on a one-rule workflow does not pay for
importing the Work Queue manager, SQLAlchemy or numpy.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any

import click

from treadle import __version__
from treadle.errors import ParseError, TreadleError

# subcommand name -> (module under treadle.cli, one-line help shown by `treadle --help`)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "Run a Makeflow workflow (accepts the reference makeflow's options)."),
    "analyze": ("analyze", "Check a workflow's syntax and list its inputs and outputs."),
    "viz": ("viz", "Draw a workflow as a Graphviz dot graph."),
    "link": ("link", "Copy a workflow with the programs and modules it needs into one directory."),
    "monitor": ("monitor", "Show the progress of running or finished workflows from their logs."),
    "worker": ("worker", "Start a Work Queue worker that connects to a manager."),
    "worker-bundle": ("worker_bundle", "Write the worker as one zipapp for nodes without treadle."),
    "factory": ("factory", "Keep a pool of workers sized to a manager's waiting tasks."),
    "status": ("status", "Show the workers and tasks of a running Work Queue manager."),
    "weave": ("weave", "Compile (and optionally run) a Weaver workflow script."),
    "allpairs": ("allpairs", "Compare every item of set A with every item of set B."),
    "wavefront": ("wavefront", "Compute a 2-D recurrence, each cell once its neighbours are done."),
    "repo": ("repo", "Ingest, query, fetch, check and serve a data repository."),
    "vfs": ("vfs", "Run an unmodified program with repository paths visible."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported when used, not at start-up.

    ``commands_table`` maps a subcommand's name to (module under ``treadle.cli``, one-line
    help); the module's ``command`` attribute is the click command (``treadle repo`` uses the
    same class for its own subcommands).
    """

    commands_table: dict[str, tuple[str, str]] = SUBCOMMANDS

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (module, _) in self.commands_table.items() if _available(module)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        entry = self.commands_table.get(name)
        if entry is None or not _available(entry[0]):
            return None
        module = importlib.import_module(f"treadle.cli.{entry[0]}")
        command: click.Command = module.command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, h) for n, (m, h) in self.commands_table.items() if _available(m)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _available(module: str) -> bool:
    """Whether the subcommand's module exists (lets the command list grow with the code)."""
    return importlib.util.find_spec(f"treadle.cli.{module}") is not None


# Inherited by every subcommand's context: one help style, -h everywhere, and help text
# that wraps at the terminal's width (COLUMNS), up to a width still easy to read.
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 120}


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="treadle")
def cli() -> None:
    """treadle: run workloads of many ordinary command-line tasks.

    \b
    Examples:
      treadle run Makeflow -j 4          run a workflow on this machine
      treadle run -T wq -p 9123 wf.mf    run it through Work Queue workers
      treadle worker 127.0.0.1 9123      serve a manager from any machine
    """


def _one_line(e: click.UsageError) -> str:
    """A bad command line as one line naming the command, with where to read more.

    click's own form is four lines (usage, hint, blank, error) and exit status 2; every
    subcommand here answers a user mistake the same way instead: one line, status 1.
    """
    path = e.ctx.command_path if e.ctx is not None else "treadle"
    message = " ".join(e.format_message().split())
    return f"{path}: {message} (see '{path} --help')"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user mistakes become one line on stderr and exit status 1."""
    try:
        cli.main(args=argv, prog_name="treadle", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted.", err=True)
        sys.exit(1)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.NoArgsIsHelpError as e:
        e.show()  # `treadle` alone: the help is the answer
        sys.exit(1)
    except click.UsageError as e:
        click.echo(_one_line(e), err=True)
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except ParseError as e:
        click.echo(str(e), err=True)
        sys.exit(e.exit_status)
    except TreadleError as e:
        click.echo(f"treadle: {e}", err=True)
        sys.exit(e.exit_status)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # the reader went away (`treadle ... | head`): stop quietly, as a filter does; stdout
        # goes to /dev/null so that the interpreter's last flush cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
