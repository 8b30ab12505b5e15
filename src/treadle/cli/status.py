"""``treadle status [HOST PORT] [--json]``: workers, tasks and progress of a running manager."""

from __future__ import annotations

import json
import os

import click

from treadle.cli.ranges import MANAGER_PORT
from treadle.errors import UsageError


@click.command(name="status")
@click.argument("host", required=False)
@click.argument("port", required=False, type=MANAGER_PORT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("-C", "--catalog", metavar="HOST:PORT", help="List the managers a catalog server knows.")
@click.option("-P", "--password", "password_file", metavar="FILE", help="Password file of the manager.")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="the manager uses TLS: trust certificates signed by this CA file")
def command(host: str | None, port: int | None, as_json: bool, catalog: str | None, password_file: str | None,
            tls_ca: str | None) -> None:
    """Show the workers and tasks of the manager at HOST PORT.

    \b
    Examples:
      treadle status 127.0.0.1 9123
      treadle status 127.0.0.1 9123 --json
      treadle status 127.0.0.1 9123 --tls-ca ca.pem   a manager that speaks TLS
      treadle status -C 127.0.0.1:9097      managers known to a local catalog
    """
    from treadle.queue import status

    if host is not None and port is None:
        if ":" in host:
            host, _, p = host.rpartition(":")
            try:
                port = MANAGER_PORT(p)
            except click.BadParameter as e:
                raise click.BadParameter(e.message, param_hint="'PORT'") from None
        else:
            raise UsageError("give both HOST and PORT (or HOST:PORT)")
    if host is None:
        catalog = catalog or os.environ.get("CATALOG_HOST")
        if not catalog:
            raise UsageError("give HOST PORT of a manager, or -C HOST:PORT of a catalog server")
        managers = status.query_catalog(catalog)
        if as_json:
            click.echo(json.dumps(managers, indent=2, sort_keys=True))
            return
        rows = [
            (m.get("project"), m.get("name"), m.get("port"), m.get("tasks_waiting"), m.get("tasks_running"),
             m.get("tasks_complete"), m.get("workers"))
            for m in managers
        ]
        click.echo(status.table(rows, ("PROJECT", "HOST", "PORT", "WAITING", "RUNNING", "COMPLETE", "WORKERS")))
        return
    assert port is not None
    password = None
    if password_file is not None:
        try:
            with open(password_file, "rb") as f:
                password = f.read()
        except OSError as e:
            raise UsageError(f"cannot read password file {password_file}: {e.strerror}") from None
    snap = status.snapshot(host, port, password, tls_ca)
    if as_json:
        click.echo(json.dumps(snap, indent=2, sort_keys=True))
    else:
        click.echo(status.render(snap, host, port))
