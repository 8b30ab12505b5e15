"""``treadle repo init``: a new repository, its database, and its first stores (docs/repo.md)."""

from __future__ import annotations

import click

from treadle.cli import CONTEXT_SETTINGS
from treadle.cli.ranges import COUNT
from treadle.errors import RepoError, require_extra


def parse_store(text: str) -> tuple[str, str]:
    """``NAME=URL`` of ``--store``."""
    name, sep, url = text.partition("=")
    if not sep or not name or not url:
        raise RepoError(f"bad --store {text!r}: write NAME=URL, e.g. a=dir:stores/a")
    return name, url


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--db", "database", metavar="URL",
              help="The metadata database: an SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db "
                   "(no password: libpq reads PGPASSWORD or ~/.pgpass) [default: DIR/metadata.db].")
@click.option("--store", "stores", multiple=True, metavar="NAME=URL",
              help="A store: dir:PATH (relative to DIR) or http(s)://HOST:PORT; repeat for more "
                   "[default: a=dir:stores/a].")
@click.option("--replicas", type=COUNT, default=1, show_default=True, metavar="R",
              help="Copies wanted of each file, on distinct stores.")
@click.option("--min-replicas", type=COUNT, default=1, show_default=True, metavar="M",
              help="Copies that must be durable before an ingested file is visible.")
@click.option("--mount", default="/bxgrid", show_default=True, metavar="PATH",
              help="The prefix of vpaths (PATH/fileid/N).")
def command(directory: str, database: str | None, stores: tuple[str, ...], replicas: int,
            min_replicas: int, mount: str) -> None:
    """Make a new repository in DIR, which must be new or empty.

    Writes DIR/repo.toml, creates the database's tables and the stores (a dir store gets its
    objects/, tmp/ and quarantine/ directories). See docs/repo.md.

    \b
    Examples:
      treadle repo init images.repo
      treadle repo init images.repo --store a=dir:/disk1/store --store b=dir:/disk2/store --replicas 2
      treadle repo init images.repo --db postgresql+psycopg://treadle@dbhost/images
    """
    require_extra("sqlalchemy", "sql")
    from treadle.repo.config import database_url
    from treadle.repo.context import init_repository

    ctx = init_repository(directory, database=database, stores=[parse_store(s) for s in stores],
                          replicas=replicas, min_replicas=min_replicas, mount=mount)
    try:
        names = ", ".join(f"{row.name} ({row.url})" for row in ctx.stores())
        click.echo(f"made repository {directory}: uuid {ctx.config.uuid}, "
                   f"database {database_url(ctx.dir, ctx.config)}, stores {names}")
    finally:
        ctx.close()
