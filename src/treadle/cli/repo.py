"""``treadle repo``: the data repository's commands (docs/repo.md).

Each subcommand lives in its own ``treadle.cli.repo_*`` module and is imported only when it
runs, so ``treadle repo query`` does not pay for the HTTP service or the ingest machinery.
"""

from __future__ import annotations

import click

from treadle.cli import CONTEXT_SETTINGS, LazyGroup

# subcommand -> (module under treadle.cli, one-line help)
REPO_COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("repo_init", "Make a new repository: its layout, database and first store."),
    "ingest": ("repo_ingest", "Add files and their metadata from a manifest or a list of files."),
    "query": ("repo_query", "List a table's rows that match conditions, or run a read-only SELECT."),
    "get": ("repo_get", "Copy files out of the repository, verified, by fileid or vpath."),
    "fsck": ("repo_fsck", "Check replicas, repair them from good copies, collect garbage."),
    "store": ("repo_store", "Add, list and change the stores that hold the objects."),
    "serve": ("repo_serve", "Serve the repository's files over HTTP to workers elsewhere."),
    "token": ("repo_token", "Create, list and revoke the bearer tokens of the HTTP service."),
    "migrate": ("repo_migrate", "Bring an older repository's schema up to this treadle's."),
}


class RepoGroup(LazyGroup):
    """The ``repo`` subcommands, loaded lazily like treadle's own."""

    commands_table = REPO_COMMANDS


@click.group(cls=RepoGroup, context_settings=CONTEXT_SETTINGS)
def command() -> None:
    """Ingest, query, fetch, check and serve a data repository.

    A repository is a directory with a metadata database (SQLite, or PostgreSQL by URL) and
    stores of checksummed, content-addressed files, each kept in one or more places.

    \b
    Examples:
      treadle repo init images.repo
      treadle repo ingest images.repo photos.csv --table images --key recording
      treadle repo query images.repo images --null thumb --format jsonl
      treadle repo get images.repo 17 -o out/
      treadle repo serve images.repo --bind 127.0.0.1:8765
    """
