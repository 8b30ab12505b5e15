"""``treadle factory``: keep a pool of workers sized to a manager's waiting tasks."""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from treadle.cli.ranges import AMOUNT, SECONDS
from treadle.errors import UsageError


@click.command()
@click.option("-T", "--batch-type", default="local", show_default=True, metavar="TYPE",
              help="where workers run (local; slurm and condor come later)")
@click.option("-w", "--min-workers", type=AMOUNT, metavar="N", help="workers kept at least [0]")
@click.option("-W", "--max-workers", type=AMOUNT, metavar="N", help="workers at most [10]")
@click.option("-P", "--password", "password_file", type=click.Path(exists=True, dir_okay=False),
              metavar="FILE", help="password file of the manager (given to the workers too)")
@click.option("--cores", type=AMOUNT, metavar="N", help="cores per worker")
@click.option("--memory", type=AMOUNT, metavar="MB", help="memory per worker (MB)")
@click.option("--disk", type=AMOUNT, metavar="MB", help="disk per worker (MB)")
@click.option("--gpus", type=AMOUNT, metavar="N", help="GPUs per worker")
@click.option("-t", "--timeout", "worker_timeout", type=SECONDS, metavar="S",
              help="workers leave after this many idle seconds [60]")
@click.option("-s", "--scratch-dir", "workdir", type=click.Path(file_okay=False), metavar="DIR",
              help="parent directory of the workers' workspaces")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="the manager uses TLS: trust certificates signed by this CA file")
@click.option("--interval", type=click.FloatRange(0.05, SECONDS.max), metavar="S",
              help="seconds between two looks at the manager [5]")
@click.option("-d", "--debug", "debug_flags", multiple=True, metavar="FLAG",
              help="debug output (as the reference's -d all)")
@click.option("-o", "--debug-file", metavar="FILE", help="write debug output to FILE")
@click.argument("address", nargs=-1, required=True)
def command(batch_type: str, min_workers: int | None, max_workers: int | None,
            password_file: str | None, cores: int | None, memory: int | None,
            disk: int | None, gpus: int | None, worker_timeout: float | None,
            workdir: str | None, tls_ca: str | None, interval: float | None,
            debug_flags: tuple[str, ...], debug_file: str | None,
            address: tuple[str, ...]) -> None:
    """Start workers for a manager's waiting tasks; idle workers leave on their own.

    \b
    Example:
      treadle factory -T local 127.0.0.1 9123 --min-workers 1 --max-workers 8 --cores 1
    """
    from treadle.cli import debuglog
    from treadle.queue.factory import Factory, FactoryConfig
    from treadle.queue.providers import get_provider
    from treadle.queue.worker import WorkerUsageError, parse_address

    try:
        ((host, port),) = parse_address(list(address))
    except (WorkerUsageError, ValueError) as e:
        raise UsageError(f"factory: {e or 'give one manager as HOST PORT'}") from None
    given: dict[str, Any] = {"min_workers": min_workers, "max_workers": max_workers,
             "worker_timeout": worker_timeout, "interval": interval}
    config = FactoryConfig(host=host, port=port, password_file=password_file, cores=cores,
                           memory=memory, disk=disk, gpus=gpus, workdir=workdir, tls_ca=tls_ca,
                           **{k: v for k, v in given.items() if v is not None})
    if config.min_workers > config.max_workers:
        raise UsageError("--min-workers is larger than --max-workers")
    debuglog.enable(debug_file, debug_flags)
    factory = Factory(config, get_provider(batch_type))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    factory.run(stop)
