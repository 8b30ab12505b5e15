"""``treadle repo store``: add, list and change the stores that hold the objects (docs/repo.md).

Changing stores takes the writer lock; listing only reads.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from treadle.cli import CONTEXT_SETTINGS
from treadle.cli.ranges import PRIORITY, SECONDS
from treadle.errors import require_extra

require_extra("sqlalchemy", "sql")  # before treadle.repo, so that its absence is one line

from treadle.repo.stores import STORE_STATES, StoreRow  # noqa: E402

_WAIT = click.option("--wait", type=SECONDS, default=0, show_default=True, metavar="S",
                     help="Wait up to S seconds for another writer to finish.")


@click.group(context_settings=CONTEXT_SETTINGS)
def command() -> None:
    """Add, list and change the stores of a repository.

    A store is a directory (dir:PATH, relative to the repository) or another host's
    `treadle repo serve --store DIR` (http(s)://HOST:PORT). See docs/repo.md.

    \b
    Examples:
      treadle repo store add images.repo c dir:/disk3/store --priority 1
      treadle repo store list images.repo
      treadle repo store drain images.repo a
    """


@command.command("add", context_settings=CONTEXT_SETTINGS)
@click.argument("repo", type=click.Path(file_okay=False))
@click.argument("name")
@click.argument("url")
@click.option("--host", default="", metavar="H", help="The machine the store is local to [default: any].")
@click.option("--priority", type=PRIORITY, default=0, show_default=True, metavar="P",
              help="Readers try lower priorities first.")
@_WAIT
def add(repo: str, name: str, url: str, host: str, priority: int, wait: float) -> None:
    """Add the store NAME at URL; a dir store gets its layout and store.toml.

    New replicas go to it from the next ingest; `treadle repo fsck REPO --repair` tops up
    files that have fewer copies than wanted.

    \b
    Examples:
      treadle repo store add images.repo c dir:/disk3/store
      treadle repo store add images.repo far https://store.example.org:8765 --priority 10
    """
    from treadle.repo.context import open_context
    from treadle.repo.stores import add_store

    with open_context(repo, write=True, wait=wait) as ctx, ctx.engine.begin() as conn:
        row = add_store(conn, ctx.dir, ctx.config.uuid, name, url, host=host, priority=priority)
    click.echo(f"added store {row.name} ({row.url}), storeid {row.storeid}")


@command.command("list", context_settings=CONTEXT_SETTINGS)
@click.argument("repo", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON array of stores, for programs.")
def list_stores(repo: str, as_json: bool) -> None:
    """List the stores: name, URL, host, state, priority and OK replicas held.

    \b
    Examples:
      treadle repo store list images.repo
      treadle repo store list images.repo --json
    """
    from treadle.repo.context import open_context
    from treadle.repo.stores import load_stores, ok_replica_counts

    with open_context(repo) as ctx, ctx.engine.connect() as conn:
        rows = load_stores(conn)
        counts = ok_replica_counts(conn)
    if as_json:
        click.echo(json.dumps([{**asdict(r), "replicas_ok": counts.get(r.storeid, 0)} for r in rows],
                              indent=2))
        return
    table = [("NAME", "URL", "HOST", "STATE", "PRIORITY", "OK")]
    table += [(r.name, r.url, r.host or "-", r.state, str(r.priority), str(counts.get(r.storeid, 0)))
              for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@command.command("set", context_settings=CONTEXT_SETTINGS)
@click.argument("repo", type=click.Path(file_okay=False))
@click.argument("name")
@click.option("--state", type=click.Choice(STORE_STATES),
              help="up; readonly (read, no new replicas); draining (fsck --repair moves its "
                   "replicas away); down (skipped).")
@click.option("--priority", type=PRIORITY, metavar="P", help="Readers try lower priorities first.")
@_WAIT
def set_(repo: str, name: str, state: str | None, priority: int | None, wait: float) -> None:
    """Change the state or priority of the store NAME.

    \b
    Examples:
      treadle repo store set images.repo b --state readonly
      treadle repo store set images.repo a --priority 5
    """
    if state is None and priority is None:
        raise click.UsageError("give --state or --priority (or both)")
    row = _set(repo, name, state=state, priority=priority, wait=wait)
    click.echo(f"store {row.name}: state {row.state}, priority {row.priority}")


@command.command("drain", context_settings=CONTEXT_SETTINGS)
@click.argument("repo", type=click.Path(file_okay=False))
@click.argument("name")
@_WAIT
def drain(repo: str, name: str, wait: float) -> None:
    """Mark the store NAME draining: it gets no new replicas and fsck --repair empties it.

    \b
    Examples:
      treadle repo store drain images.repo a
      treadle repo fsck images.repo --repair
    """
    row = _set(repo, name, state="draining", priority=None, wait=wait)
    click.echo(f"store {row.name} is draining: run treadle repo fsck {repo} --repair "
               f"to move its replicas")


def _set(repo: str, name: str, *, state: str | None, priority: int | None, wait: float) -> StoreRow:
    from treadle.repo.context import open_context
    from treadle.repo.stores import set_store

    with open_context(repo, write=True, wait=wait) as ctx, ctx.engine.begin() as conn:
        return set_store(conn, name, state=state, priority=priority)
