"""``treadle repo fsck``: check replicas, repair them from good copies, collect garbage (docs/repo.md).

A thin shell over :func:`treadle.repo.fsck.fsck`: it opens the repository (taking the writer
lock only for ``--repair`` and ``--gc``, which write and delete objects), prints each finding on
stderr as it is found, and ends with one summary line and the exit status that scripts test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from treadle.cli import CONTEXT_SETTINGS
from treadle.cli.ranges import SECONDS


@click.command("fsck", context_settings=CONTEXT_SETTINGS)
@click.argument("repo", type=click.Path(file_okay=False, path_type=Path))
@click.option("--full", is_flag=True, help="Rehash every replica visited, not only check its size.")
@click.option("--repair", is_flag=True,
              help="Copy objects short of replicas from a good copy; empty draining stores.")
@click.option("--gc", is_flag=True,
              help="Delete orphan objects, temp files and CREATING rows older than 24 h.")
@click.option("--max-time", type=SECONDS, metavar="S",
              help="Stop visiting replicas after S seconds; the next run goes on from there.")
@click.option("--sample", type=click.FloatRange(min=0, max=100, min_open=True), metavar="P",
              help="Check a random P percent of the replicas.")
@click.option("--store", "store", metavar="NAME", help="Check only the replicas of this store.")
@click.option("--wait", type=SECONDS, default=0.0, show_default=True, metavar="S",
              help="With --repair or --gc: wait up to S seconds for another writer to finish.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the findings and counts as one JSON object on stdout.")
def command(repo: Path, full: bool, repair: bool, gc: bool, max_time: float | None,
            sample: float | None, store: str | None, wait: float, as_json: bool) -> None:
    """Check a repository's replicas; repair and collect garbage on request.

    Quick mode checks that every replica exists with the right size; --full also rehashes it.
    Replicas are visited oldest check first, so runs cut short by --max-time cover the whole
    repository in turn. Findings go to stderr, one line each, and to the audit_events table.
    Exit status: 0 healthy, 1 problems found and all repaired, 2 problems remain (lost files
    are listed by fileid at the end). See docs/repo.md.

    \b
    Examples:
      treadle repo fsck images.repo
      treadle repo fsck images.repo --full --max-time 3600
      treadle repo fsck images.repo --repair --gc --wait 60
      treadle repo fsck images.repo --full --store b --json
    """
    from treadle.repo.context import open_context
    from treadle.repo.fsck import fsck

    def report(line: str) -> None:
        click.echo(line, err=True)

    with open_context(repo, write=repair or gc, wait=wait) as repository:
        result = fsck(repository, full=full, repair=repair, gc=gc, max_time=max_time, sample=sample,
                      store=store, report=report)
    click.echo(result.summary(), err=True)
    if as_json:
        click.echo(json.dumps({
            "exit_status": result.exit_status,
            "checked": result.checked,
            "unvisited": result.unvisited,
            "hashed_bytes": result.hashed_bytes,
            "lost": result.lost,
            "findings": [{"kind": f.kind, "outcome": f.outcome, "message": f.message,
                          "fileid": f.fileid, "checksum": f.checksum, "storeid": f.storeid}
                         for f in result.findings],
        }))
    sys.exit(result.exit_status)
