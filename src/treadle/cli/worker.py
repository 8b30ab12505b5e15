"""``treadle worker``: start a Work Queue worker (options as the reference worker's).

The options are defined once, by the worker's own standard-library parser, because
the same worker also runs without treadle installed (``treadle worker-bundle``).
This command hands its arguments over, and draws that parser's help in the style
of every other subcommand.
"""

from __future__ import annotations

import sys

import click

from treadle.errors import UsageError

EXAMPLE = "treadle worker --cores 2 -t 300 127.0.0.1 9123"


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def command(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Start a Work Queue worker that connects to a manager (see --help)."""
    from treadle.queue.worker import WorkerUsageError, parse_options, run

    words = args[: args.index("--")] if "--" in args else args
    if "-h" in words or "--help" in words:
        click.echo(_help(ctx), nl=False)
        return
    try:
        opts = parse_options(list(args))
    except WorkerUsageError as e:
        raise UsageError(f"worker: {e}") from None
    sys.exit(run(opts))


def _help(ctx: click.Context) -> str:
    """The worker parser's options, laid out as click lays out the other subcommands'."""
    from treadle.queue.worker import build_parser

    parser = build_parser(ctx.command_path)
    formatter = ctx.make_formatter()
    formatter.write_usage(ctx.command_path, "[OPTIONS] HOST PORT")
    formatter.write_paragraph()
    with formatter.indentation():
        formatter.write_text(f"{parser.description} The manager is HOST PORT, HOST:PORT, "
                             "or 'h1:p1;h2:p2' to serve several in turn.")
        formatter.write_paragraph()
        formatter.write_text("Example:")
        with formatter.indentation():
            formatter.write_text(EXAMPLE)
    rows = []
    for action in parser._actions:
        if not action.option_strings:
            continue
        names = ", ".join(action.option_strings)
        if action.nargs != 0:
            names += f" {action.metavar}"
        rows.append((names, action.help or ""))
    with formatter.section("Options"):
        formatter.write_dl(rows)
    return formatter.getvalue()
