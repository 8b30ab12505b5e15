"""``treadle worker-bundle``: write the worker as one file for nodes without treadle."""

from __future__ import annotations

import click

from treadle.errors import UsageError


@click.command()
@click.option("-o", "--output", default="treadle-worker.pyz", show_default=True,
              type=click.Path(dir_okay=False), metavar="FILE", help="where to write the zipapp")
def command(output: str) -> None:
    """Write the worker as one zipapp that runs on any python3 >= 3.8.

    \b
    Example:
      treadle worker-bundle -o treadle-worker.pyz
      python3 treadle-worker.pyz --cores 4 manager.example.org 9123
    """
    from treadle.queue.bundle import write_bundle

    try:
        path = write_bundle(output)
    except OSError as e:
        raise UsageError(f"cannot write {output}: {e.strerror}") from None
    click.echo(f"wrote {path}")
