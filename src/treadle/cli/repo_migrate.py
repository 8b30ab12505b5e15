"""``treadle repo migrate``: bring an older repository's schema up to this treadle's (docs/repo.md)."""

from __future__ import annotations

import click

from treadle.cli import CONTEXT_SETTINGS
from treadle.cli.ranges import SECONDS
from treadle.errors import require_extra


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("repo", type=click.Path(file_okay=False))
@click.option("--wait", type=SECONDS, default=0, show_default=True, metavar="S",
              help="Wait up to S seconds for another writer to finish.")
def command(repo: str, wait: float) -> None:
    """Apply the schema changes that REPO's database lacks, in one transaction.

    An SQLite database is first copied to metadata.db.bak-vN (N: its old version). No step
    deletes data. Takes the writer lock. See docs/repo.md.

    \b
    Examples:
      treadle repo migrate images.repo
      treadle repo migrate images.repo --wait 60
    """
    require_extra("sqlalchemy", "sql")
    from pathlib import Path

    from treadle.repo.migrations import CURRENT_VERSION, migrate

    applied = migrate(Path(repo), wait=wait)
    if applied:
        click.echo(f"{repo}: applied schema steps {', '.join(map(str, applied))}; "
                   f"now at version {CURRENT_VERSION}")
    else:
        click.echo(f"{repo}: schema version {CURRENT_VERSION} is current; nothing to do")
