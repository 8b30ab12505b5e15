"""``treadle factory``: keep a pool of workers sized to a manager's waiting tasks."""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from treadle.cli.ranges import AMOUNT, COUNT, SECONDS, WHOLE_SECONDS
from treadle.errors import UsageError


@click.command()
@click.option("-T", "--batch-type", default="local", show_default=True, metavar="TYPE",
              type=click.Choice(("local", "slurm", "condor")),
              help="where workers run: local, slurm or condor")
@click.option("-M", "--manager-name", "project", metavar="NAME",
              help="find the manager through the catalog: its project name (a regex)")
@click.option("--catalog", metavar="HOST:PORT", help="catalog server that lists the manager (with -M)")
@click.option("-w", "--min-workers", type=AMOUNT, metavar="N", help="workers kept at least [0]")
@click.option("-W", "--max-workers", type=AMOUNT, metavar="N", help="workers at most [10]")
@click.option("--workers-per-cycle", type=COUNT, metavar="N",
              help="workers submitted at most per round, in one submission [10]")
@click.option("--tasks-per-worker", type=COUNT, metavar="N",
              help="tasks one worker is counted for [its cores]")
@click.option("--cores", type=AMOUNT, metavar="N", help="cores per worker")
@click.option("--memory", type=AMOUNT, metavar="MB", help="memory per worker (MB)")
@click.option("--disk", type=AMOUNT, metavar="MB", help="disk per worker (MB)")
@click.option("--gpus", type=AMOUNT, metavar="N", help="GPUs per worker")
@click.option("--wall-time", type=WHOLE_SECONDS, metavar="S",
              help="wall time of each worker job; the worker leaves a minute before")
@click.option("-t", "--timeout", "worker_timeout", type=SECONDS, metavar="S",
              help="workers leave after this many idle seconds [60]")
@click.option("--interval", type=click.FloatRange(0.05, SECONDS.max), metavar="S",
              help="longest time between two looks at the manager [5]")
@click.option("-B", "--batch-options", metavar="TEXT",
              help="submit options of every worker job (slurm: sbatch options; condor: submit lines)")
@click.option("-P", "--password", "password_file", type=click.Path(exists=True, dir_okay=False),
              metavar="FILE", help="password file of the manager (given to the workers too)")
@click.option("--worker-command", metavar="CMD",
              help="run this program as the worker (e.g. work_queue_worker) instead of treadle's")
@click.option("--worker-python", metavar="PATH",
              help="the nodes' python for treadle's worker [python3]")
@click.option("--batch-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="job scripts, logs and the password copy (slurm: on a filesystem the nodes share)")
@click.option("--manager-host", metavar="HOST", help="the manager's address as the workers reach it")
@click.option("--allow-loopback", is_flag=True,
              help="let batch workers connect to a loopback address (a one-machine cluster)")
@click.option("-s", "--scratch-dir", "workdir", type=click.Path(file_okay=False), metavar="DIR",
              help="parent directory of the workers' workspaces")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="the manager uses TLS: trust certificates signed by this CA file")
@click.option("-d", "--debug", "debug_flags", multiple=True, metavar="FLAG",
              help="debug output (as the reference's -d all)")
@click.option("-o", "--debug-file", metavar="FILE", help="write debug output to FILE")
@click.argument("address", nargs=-1, metavar="[HOST PORT]")
def command(batch_type: str, project: str | None, catalog: str | None, batch_options: str | None,
            debug_flags: tuple[str, ...], debug_file: str | None, address: tuple[str, ...],
            **given: Any) -> None:
    """Start workers for a manager's waiting tasks; idle workers leave on their own.

    The manager is HOST PORT, or -M NAME with --catalog HOST:PORT. Workers are
    submitted in bulk (one Slurm array per round); waiting ones are cancelled
    when the tasks run out; everything is cancelled when the factory stops.

    \b
    Examples:
      treadle factory -T local 127.0.0.1 9123 --min-workers 1 --max-workers 8 --cores 1
      treadle factory -T slurm --manager-host login1 login1 9123 -W 20 --cores 4 --memory 8000
    """
    from treadle.cli import debuglog
    from treadle.queue.factory import Factory, FactoryConfig, batch_options_for, build_provider

    values = {k: v for k, v in given.items() if v is not None and v is not False}
    if project:
        if address:
            raise UsageError("factory: give either -M NAME or HOST PORT, not both")
        values.update(project=project, catalog=catalog)
    else:
        values.update(_manager_address(address))
    values["options"] = batch_options_for(batch_type, batch_options)
    config = FactoryConfig(**values)
    debuglog.enable(debug_file, debug_flags)
    factory = Factory(config, build_provider(batch_type, config))
    # The pool runs in a thread of its own and this (main) thread only waits for it: a signal
    # handler that sets the factory's events must never interrupt the thread that holds their
    # lock, or stop() would wait for itself (seen once: a SIGTERM that never ended the factory).
    failed: list[BaseException] = []

    def run_pool() -> None:
        try:
            factory.run()
        except BaseException as e:  # re-raised below, in the main thread, as the command's error
            failed.append(e)

    pool = threading.Thread(target=run_pool, name="factory")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: factory.stop())
    pool.start()
    while pool.is_alive():
        pool.join(0.5)
    if failed:
        raise failed[0]


def _manager_address(address: tuple[str, ...]) -> dict[str, Any]:
    """``HOST PORT`` (or ``HOST:PORT``) as FactoryConfig fields; anything else is one line of error."""
    from treadle.queue.worker_options import WorkerUsageError, parse_address

    try:
        ((host, port),) = parse_address(list(address))
    except (WorkerUsageError, ValueError) as e:
        raise UsageError(f"factory: {e or 'give one manager as HOST PORT'}") from None
    return {"host": host, "port": port}
