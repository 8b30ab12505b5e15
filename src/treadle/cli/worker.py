"""``treadle worker``: start a Work Queue worker (options as the reference worker's).

The options are defined once, by the worker's own standard-library parser, because
the same worker also runs without treadle installed (``treadle worker-bundle``).
This command only hands its arguments over.
"""

from __future__ import annotations

import sys

import click

from treadle.errors import UsageError


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args: tuple[str, ...]) -> None:
    """Start a Work Queue worker that connects to a manager (see --help)."""
    from treadle.queue.worker import WorkerUsageError, parse_options, run

    try:
        opts = parse_options(list(args))
    except WorkerUsageError as e:
        raise UsageError(f"worker: {e}") from None
    sys.exit(run(opts))
