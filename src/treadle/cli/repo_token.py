"""``treadle repo token``: the bearer tokens of ``treadle repo serve`` (docs/repo.md).

A token is printed once, when made; the repository keeps only its SHA-256, so a lost token is
revoked and replaced, never recovered.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from treadle.cli import CONTEXT_SETTINGS
from treadle.cli.ranges import DAYS
from treadle.errors import RepoError, require_extra

_where = [click.argument("repo", required=False, type=click.Path(file_okay=False, path_type=Path)),
          click.option("--store", "store_dir", type=click.Path(file_okay=False, path_type=Path),
                       metavar="DIR", help="The tokens of this store directory (served with serve --store).")]


def _target(f: Callable[..., None]) -> Callable[..., None]:
    """REPO or --store DIR, the choice every token command takes."""
    for decorate in reversed(_where):
        f = decorate(f)
    return f


@contextlib.contextmanager
def _tokens_dir(repo: Path | None, store_dir: Path | None) -> Iterator[Path]:
    """The directory holding tokens.toml; a repository's writer lock is held meanwhile."""
    if (repo is None) == (store_dir is None):
        raise click.UsageError("give a REPO or --store DIR (one of them)")
    if store_dir is not None:
        if not (store_dir / "store.toml").is_file():
            raise RepoError(f"{store_dir}: not a store (no store.toml)")
        yield store_dir
        return
    assert repo is not None
    require_extra("sqlalchemy", "sql")
    from treadle.repo.context import open_context

    with open_context(repo, write=True):
        yield repo


@click.group(context_settings=CONTEXT_SETTINGS)
def command() -> None:
    """Create, list and revoke the bearer tokens of treadle repo serve.

    A read token may GET; a write token may also PUT into a store served with --store. Clients
    read their token from TREADLE_REPO_TOKEN or the file named by TREADLE_REPO_TOKEN_FILE.
    See docs/repo.md.

    \b
    Examples:
      treadle repo token create images.repo --scope read --name workers -o workers.token
      treadle repo token list images.repo
      treadle repo token revoke images.repo workers
    """


@command.command(context_settings=CONTEXT_SETTINGS)
@_target
@click.option("--scope", type=click.Choice(["read", "write"]), required=True,
              help="read: GET and HEAD; write: also PUT (stores served with --store).")
@click.option("--name", metavar="NAME", help="A name to list and revoke it by [default: SCOPE-N].")
@click.option("--expires", type=DAYS, metavar="DAYS",
              help="Refuse the token after this many days [default: never].")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the token to FILE (mode 0600) instead of printing it.")
def create(repo: Path | None, store_dir: Path | None, scope: str, name: str | None,
           expires: float | None, output: Path | None) -> None:
    """Make a token and print it once (or write it to FILE); only its hash is kept.

    \b
    Examples:
      treadle repo token create images.repo --scope read
      treadle repo token create --store /data/store-c --scope write -o store-c.token
    """
    from treadle.repo.tokens import create_token

    with _tokens_dir(repo, store_dir) as directory:
        if output is not None:
            try:  # made before the token, so a token is never recorded that nobody can see
                fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as e:
                raise RepoError(f"cannot write the token to {output}: {e.strerror}") from None
        try:
            token, entry = create_token(directory, scope, name=name, expires_days=expires)
        except BaseException:
            if output is not None:
                os.close(fd)
                output.unlink()
            raise
    if output is None:
        click.echo(token)
        return
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    click.echo(f"token {entry.name} ({entry.scope}) written to {output}", err=True)


@command.command(name="list", context_settings=CONTEXT_SETTINGS)
@_target
def list_(repo: Path | None, store_dir: Path | None) -> None:
    """List the tokens: name, scope, created and expiry dates (never the tokens).

    \b
    Examples:
      treadle repo token list images.repo
    """
    from treadle.repo.tokens import load_tokens, tokens_path

    directory = store_dir if store_dir is not None else repo
    if directory is None or (repo is not None and store_dir is not None):
        raise click.UsageError("give a REPO or --store DIR (one of them)")
    for entry in load_tokens(tokens_path(directory)):
        expires = entry.expires.isoformat() if entry.expires else "never"
        click.echo(f"{entry.name}\t{entry.scope}\tcreated {entry.created.isoformat()}\t"
                   f"expires {expires}")


@command.command(context_settings=CONTEXT_SETTINGS)
@_target
@click.argument("name")
def revoke(repo: Path | None, store_dir: Path | None, name: str) -> None:
    """Remove the token called NAME; a running server refuses it from its next request.

    \b
    Examples:
      treadle repo token revoke images.repo workers
    """
    from treadle.repo.tokens import revoke_token

    with _tokens_dir(repo, store_dir) as directory:
        entry = revoke_token(directory, name)
    click.echo(f"revoked {entry.name} ({entry.scope})")
