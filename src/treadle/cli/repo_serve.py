"""``treadle repo serve``: the repository's files over HTTP, or one store for another repository.

The defaults are safe to leave on: a loopback address and bearer tokens. Anything reachable
from elsewhere needs a token and TLS, or an explicit ``--insecure-http`` (docs/repo.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import click

from treadle.cli import CONTEXT_SETTINGS
from treadle.cli.ranges import COUNT
from treadle.errors import require_extra


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as (host, port); port 0 lets the system pick."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise click.UsageError(f"bad --bind {text!r}: write HOST:PORT, e.g. 127.0.0.1:8765")
    return host.removeprefix("[").removesuffix("]"), int(port)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (``localhost`` or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("repo", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--store", "store_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Serve this one store directory (GET, HEAD and PUT of blobs) instead of a REPO.")
@click.option("--bind", default="127.0.0.1:8765", show_default=True, metavar="HOST:PORT",
              help="Address to listen on; port 0 picks a free one.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path), metavar="FILE",
              help="Serve HTTPS with this certificate chain (PEM).")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), metavar="FILE",
              help="The private key of --tls-cert (PEM).")
@click.option("--no-auth", is_flag=True, help="Answer requests without a token (loopback only).")
@click.option("--insecure-http", is_flag=True,
              help="Allow plain HTTP on a non-loopback address (tokens cross the network in clear).")
@click.option("--max-connections", type=COUNT, default=256, show_default=True,
              metavar="N", help="Answer 503 to connections beyond N open at once.")
def command(repo: Path | None, store_dir: Path | None, bind: str, tls_cert: Path | None,
            tls_key: Path | None, no_auth: bool, insecure_http: bool, max_connections: int) -> None:
    """Serve REPO's files over HTTP to workers and readers elsewhere, or one store with --store.

    Prints the URL it listens on, then one access line per request on stderr (never the
    token). Requests carry "Authorization: Bearer TOKEN" (make one with treadle repo token
    create); /v1/health needs none. SIGINT or SIGTERM stops accepting, lets transfers finish
    for up to 10 s and exits 0. See docs/repo.md.

    \b
    Examples:
      treadle repo serve images.repo
      treadle repo serve images.repo --bind 127.0.0.1:0 --no-auth
      treadle repo serve images.repo --bind 0.0.0.0:8765 --tls-cert cert.pem --tls-key key.pem
      treadle repo serve --store /data/store-c --bind 10.0.0.5:8766 --insecure-http
    """
    if (repo is None) == (store_dir is None):
        raise click.UsageError("give a REPO or --store DIR (one of them)")
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    host, port = parse_bind(bind)
    if not is_loopback(host):
        if no_auth:
            raise click.UsageError(f"--no-auth is allowed on a loopback address only, not {host}")
        if tls_cert is None and not insecure_http:
            raise click.UsageError(f"{host} is reachable from other machines: give --tls-cert and "
                                   f"--tls-key, or --insecure-http to send tokens in clear")
    require_extra("sqlalchemy", "sql")
    from treadle.repo import serve

    tls = serve.ssl_context(tls_cert, tls_key) if tls_cert and tls_key else None
    server = serve.make_server(repo=repo, store_dir=store_dir, no_auth=no_auth,
                               max_connections=max_connections)
    asyncio.run(serve.run(server, host, port, tls, lambda url: click.echo(url)))
