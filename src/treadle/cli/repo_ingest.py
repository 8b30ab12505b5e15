"""``treadle repo ingest``: add files and their metadata, batch by batch (docs/repo.md).

The command holds the writer lock for the whole ingest. Ctrl-C (or SIGTERM) once lets the
current batch commit and exits 130 with the command that resumes; a second Ctrl-C abandons the
batch. Either way a rerun of the same command continues where it stopped.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
from types import FrameType

import click

from treadle.cli import CONTEXT_SETTINGS
from treadle.cli.ranges import COUNT, SECONDS
from treadle.errors import RepoError, require_extra

INTERRUPTED = 130


def parse_types(entries: tuple[str, ...]) -> dict[str, str]:
    """``--types col=type`` entries as a dict."""
    types: dict[str, str] = {}
    for entry in entries:
        name, eq, kind = entry.partition("=")
        if not eq or not name or not kind:
            raise RepoError(f"bad --types {entry!r}: write COLUMN=TYPE, e.g. subject=int")
        types[name] = kind
    return types


def resume_command(ctx: click.Context) -> str:
    """The command line that repeats this ingest (and so resumes it), rebuilt from its parameters."""
    argv = ["treadle", "repo", "ingest"]
    for param in ctx.command.params:
        value = ctx.params[param.name or ""]
        if isinstance(param, click.Argument):
            argv.extend(value if param.nargs == -1 else [value])
            continue
        flag = max(param.opts, key=len)
        if isinstance(param, click.Option) and param.is_flag:
            argv.extend([flag] if value else [])
        elif param.multiple:
            for one in value:
                argv += [flag, str(one)]
        elif value is not None and value != param.default:
            argv += [flag, str(value)]
    return shlex.join(argv)


class StopOnSignal:
    """SIGINT/SIGTERM: the first sets ``stop`` (the batch commits), the second abandons the batch.

    The second raises KeyboardInterrupt in the main thread, which rolls back the batch's
    transaction if one is open. Messages go straight to file descriptor 2: the handler may run
    while the main thread is inside a write to sys.stderr.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopOnSignal:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]  # what signal.signal returned

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()
        os.write(2, b"treadle: stopping after the current batch commits (interrupt again to abandon it)\n")


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("repo", type=click.Path(file_okay=False))
@click.argument("inputs", nargs=-1, metavar="(MANIFEST | --files PATH...)")
@click.option("--files", is_flag=True, help="The arguments after REPO are files to add, one row each.")
@click.option("--table", required=True, metavar="T", help="The user table that gets one row per file.")
@click.option("--key", metavar="COL", help="The natural key: a UNIQUE column; a rerun skips keys present.")
@click.option("--link", "links", multiple=True, metavar="T2.col=FIELD[:COL]",
              help="Set T2.col to the new fileid on the T2 row whose COL (default fileid) equals this "
                   "row's FIELD, in the same transaction; repeatable.")
@click.option("--types", "types", multiple=True, metavar="COL=TYPE",
              help="Fix a column's type (int, real, text, fileid) instead of inferring it; repeatable.")
@click.option("--index", multiple=True, metavar="COL", help="Index this column too; repeatable.")
@click.option("-j", "--jobs", type=COUNT, metavar="N",
              help="Threads reading, hashing and writing files [default: 4 per core, at least 8].")
@click.option("--name-regex", metavar="RE",
              help="With --files: searched in each path; its named groups become columns.")
@click.option("--replace", is_flag=True,
              help="A present key whose file changed gets the new file (the old one stays); links "
                   "already set are pointed at the new file.")
@click.option("--skip-existing", is_flag=True, help="Skip present keys without reading their files.")
@click.option("--skip-bad", is_flag=True, help="Report bad rows and go on with the rest.")
@click.option("--wait", type=SECONDS, default=0, show_default=True, metavar="S",
              help="Wait up to S seconds for another writer to finish.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with what was done.")
def command(repo: str, inputs: tuple[str, ...], files: bool, table: str, key: str | None,
            links: tuple[str, ...], types: tuple[str, ...], index: tuple[str, ...], jobs: int | None,
            name_regex: str | None, replace: bool, skip_existing: bool, skip_bad: bool, wait: float,
            as_json: bool) -> None:
    """Add files and their metadata to REPO, from a manifest or a list of files.

    A manifest is CSV with a header (a 'path' column, relative to the manifest, plus metadata
    columns), JSON Lines, or a JSON array of flat objects. Rows go in batches of 500 (or
    256 MiB); each batch is visible only once its files are durable in min_replicas stores.
    Rerunning the same command resumes; Ctrl-C lets the current batch commit and exits 130
    (twice: abandons it). See docs/repo.md.

    \b
    Examples:
      treadle repo ingest images.repo photos.csv --table images --key recording
      treadle repo ingest images.repo rows.jsonl --table images --types subject=text --index camera
      treadle repo ingest images.repo --files thumbs/*.jpg --table thumbs \\
          --name-regex '(?P<source>[0-9]+)[.]jpg$' --link images.thumb=source --json
    """
    if files and not inputs:
        raise click.UsageError("--files needs at least one PATH")
    if not files and len(inputs) != 1:
        raise click.UsageError("give one MANIFEST, or --files PATH...")
    require_extra("sqlalchemy", "sql")
    from treadle.repo.context import open_context
    from treadle.repo.ingest import ingest, parse_link

    parsed_links = [parse_link(link) for link in links]
    parsed_types = parse_types(types)
    resume = resume_command(click.get_current_context())
    ctx = open_context(repo, write=True, wait=wait)
    try:
        with StopOnSignal() as signals:
            try:
                result = ingest(ctx, None if files else inputs[0], files=list(inputs) if files else None,
                                table=table, key=key, links=parsed_links, types=parsed_types, jobs=jobs,
                                name_regex=name_regex, replace=replace, skip_existing=skip_existing,
                                skip_bad=skip_bad, index=index, stop=signals.stop,
                                progress=lambda line: click.echo(line, err=True), command=resume)
            except KeyboardInterrupt:
                click.echo(f"treadle: interrupted; the current batch was abandoned, the ones before it "
                           f"are in. Resume with: {resume}", err=True)
                sys.exit(INTERRUPTED)
    finally:
        ctx.close()
    if as_json:
        click.echo(json.dumps(result.to_json()))
    else:
        click.echo(f"added {result.added:,} rows to {result.table} ({result.skipped:,} skipped, "
                   f"{result.bytes:,} bytes; ingest {result.ingest_id})")
    if result.interrupted:
        click.echo(f"treadle: interrupted; every batch so far is in. Resume with: {resume}", err=True)
        sys.exit(INTERRUPTED)
