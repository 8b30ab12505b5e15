"""``treadle vfs``: run an unmodified program with repository paths visible (docs/vfs.md).

Glue only: ``run`` turns its options into :class:`treadle.vfs.launcher.RunOptions`, ``doctor``
prints :mod:`treadle.vfs.doctor`'s findings. Both import their module when they run, so
``treadle --help`` does not pay for them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from treadle.cli import CONTEXT_SETTINGS
from treadle.cli.ranges import TIMEOUT

# The command's own options follow it: `treadle vfs run --mount ... ls -l` gives -l to ls.
_RUN_SETTINGS = {**CONTEXT_SETTINGS, "allow_interspersed_args": False}


@click.group(context_settings=CONTEXT_SETTINGS)
def command() -> None:
    """Run an unmodified program with repository paths visible.

    A program started by `treadle vfs run` opens repository files by ordinary paths under a
    mount point M (default /bxgrid): M/fileid/N, M/sha256/HEX, M/table/T/N.EXT. Nothing under
    M can be changed. Two modes show the same tree: fuse (a FUSE mount in a private mount
    namespace) and trace (ptrace and seccomp, for hosts without FUSE).

    \b
    Examples:
      treadle vfs run --mount /bxgrid=images.repo -- sha256sum /bxgrid/fileid/1
      treadle vfs run --mount http://127.0.0.1:8765 -- ls /bxgrid/table/images
      treadle vfs doctor
    """


@command.command(context_settings=_RUN_SETTINGS)
@click.option("--mount", "-m", "mounts", multiple=True, required=True, metavar="M=SOURCE",
              help="Show SOURCE (a repository directory, repo:PATH, or a `treadle repo serve` "
                   "URL) at mount point M; M defaults to the repository's own mount, /bxgrid "
                   "for a URL. Repeat for several.")
@click.option("--mode", type=click.Choice(["auto", "fuse", "trace"]), default="auto",
              show_default=True, help="fuse, trace, or auto: fuse when it works here, else trace.")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="The host's object cache [default: $TREADLE_CACHE, else ~/.cache/treadle].")
@click.option("--cache-size", metavar="SIZE",
              help="Evict the cache down to SIZE (e.g. 500M, 10G) [default: the smaller of "
                   "10G and 10% of the free space].")
@click.option("--verify", type=click.Choice(["auto", "always"]), default="auto",
              show_default=True,
              help="auto: hash what is not known good, once per run; always: hash every object "
                   "at its first open.")
@click.option("--timeout", type=TIMEOUT, default=60.0, show_default=True, metavar="S",
              help="Seconds an unreachable source is retried before the program gets EIO.")
@click.option("--token-file", metavar="FILE",
              help="The service's bearer token [default: $TREADLE_REPO_TOKEN_FILE, "
                   "$TREADLE_REPO_TOKEN].")
@click.option("--stats", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write a JSON summary of the run to FILE at exit.")
@click.option("--verbose", "-v", is_flag=True, help="Say which mode was chosen and why.")
@click.argument("argv", metavar="-- COMMAND [ARGS]...", nargs=-1, required=True,
                type=click.UNPROCESSED)
def run(mounts: tuple[str, ...], mode: str, cache: Path | None,
        cache_size: str | None, verify: str, timeout: float, token_file: str | None,
        stats: Path | None, verbose: bool, argv: tuple[str, ...]) -> None:
    """Run COMMAND with repository paths visible under each mount point.

    The exit status is the command's own, 128+N when it died of signal N, 126 when it could
    not be executed, 127 when it was not found, and 125 when vfs itself failed.

    \b
    Examples:
      treadle vfs run --mount /bxgrid=images.repo -- sha256sum /bxgrid/fileid/1
      treadle vfs run -m /data=http://127.0.0.1:8765 --stats run.json -- ls /data/fileid
    """
    from treadle.vfs.launcher import RunOptions, parse_mount
    from treadle.vfs.launcher import run as launch

    options = RunOptions(mounts=[parse_mount(m) for m in mounts], mode=mode, cache=cache,
                         cache_size=cache_size, verify=verify, timeout=timeout,
                         token_file=token_file, stats=stats, verbose=verbose)
    sys.exit(launch(options, list(argv)))


@command.command(context_settings=CONTEXT_SETTINGS)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as one JSON object.")
def doctor(as_json: bool) -> None:
    """Say which modes work on this host, and why; exit 1 when none does.

    \b
    Examples:
      treadle vfs doctor
      treadle vfs doctor --json
    """
    from treadle.vfs.doctor import examine

    report = examine()
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=1))
    else:
        for line in report.lines():
            click.echo(line)
    sys.exit(0 if report.works else 1)
