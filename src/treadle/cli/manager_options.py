"""The Work Queue manager options that ``treadle allpairs`` and ``treadle wavefront`` share.

Both start a manager for their blocks, so both take the same port, address, project
and password options; only the reference program named in ``-P``'s help differs
(see docs/allpairs.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from treadle.cli.ranges import PORT, PRIORITY

F = TypeVar("F", bound=Callable[..., object])


def manager_options(reference: str) -> Callable[[F], F]:
    """Decorate a click command with the manager's options; ``reference`` names the cctools program."""
    options = [
        click.option("-p", "--port", type=PORT, metavar="PORT",
                     help="Manager port (wq mode; 0 picks a free one, printed at start). The "
                          "manager listens on every interface, since workers are usually "
                          "remote, unless --bind."),
        click.option("--bind", metavar="ADDRESS", default="",
                     help="Listen for workers on this local address only (e.g. 127.0.0.1)."),
        click.option("-Z", "--random-port", "port_file", metavar="FILE",
                     help="Pick a free manager port and write it to FILE."),
        click.option("-N", "--project-name", "project", metavar="NAME", help="Advertise to the catalog."),
        click.option("--password", "password_file", metavar="FILE",
                     type=click.Path(exists=True, dir_okay=False),
                     help="Take only workers that know the password in FILE "
                          "(start them with -P FILE)."),
        click.option("-P", "--priority", type=PRIORITY, default=0, metavar="N",
                     help=f"Task priority. -P means priority here, as in the reference "
                          f"{reference}; the password is --password."),
    ]

    def decorate(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate
