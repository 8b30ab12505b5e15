"""``treadle wavefront``: a thin layer over ``treadle.allpairs.wavefront`` (see docs/allpairs.md)."""

from __future__ import annotations

import sys

import click

from treadle.cli.manager_options import manager_options
from treadle.cli.ranges import COUNT, SECONDS


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("function", metavar="FUNCTION")
@click.argument("xsize", type=COUNT)
@click.argument("ysize", type=COUNT)
@click.argument("boundary", metavar="BOUNDARY")
@click.argument("output", metavar="OUTPUT")
@click.option("-e", "--extra-args", default="", metavar="ARGS",
              help="Fixed arguments put before x y LEFT BOTTOM DIAG.")
@click.option("-T", "--mode", type=click.Choice(["auto", "local", "wq"]), default="auto",
              help="Where cells run: decided by the cost model, here, or on Work Queue workers.")
@click.option("-c", "--cores", type=COUNT, metavar="N", help="Local processes. Default: all.")
@manager_options("wavefront_master")
@click.option("-t", "--estimated-time", type=SECONDS, metavar="S",
              help="Seconds per cell; skips sampling.")
@click.option("--block", type=COUNT, metavar="B", help="Block side (wq mode).")
@click.option("--bitmap", metavar="FILE", help="Write a BMP of the grid's state every 5 s.")
@click.option("--restart", is_flag=True, help="Ignore OUTPUT.partial and start over.")
@click.option("--stats", "stats_file", metavar="FILE", help="Write a JSON summary.")
@click.option("--plan", "--explain", "plan_only", is_flag=True,
              help="Print the model's decision, then exit.")
@click.option("--exec-each", is_flag=True,
              help="Start F afresh for every cell. By default a #!/bin/sh script F "
                   "runs in a reused shell, in a subshell per cell: $0, arguments, "
                   "exit status, output, cd, variables and traps behave as with a "
                   "fresh start, but $$ is the same for every cell and death by "
                   "signal N reads as exit status 128+N.")
def command(function, xsize, ysize, boundary, output, extra_args, mode, cores, port, bind,
            port_file, project, password_file, priority, estimated_time, block, bitmap, restart,
            stats_file, plan_only, exec_each):
    """Compute R[x][y] = F(R[x-1][y], R[x][y-1], R[x-1][y-1]) for 1 <= x <= XSIZE,
    1 <= y <= YSIZE, from BOUNDARY lines 'x y value', into OUTPUT.

    FUNCTION is an executable, called as F [ARGS] x y LEFT BOTTOM DIAG (three
    files holding the neighbours' values), or FILE.py:NAME / MODULE:NAME, called
    as F(x, y, left, bottom, diag).

    \b
    Example:
      treadle wavefront ./step 100 100 edge.txt result.txt -c 8
      treadle wavefront ./step 100 100 edge.txt result.txt -T wq -p 0 --password pw.txt
    """
    from treadle.allpairs.wavefront import wavefront

    wavefront(function, boundary, xsize, ysize, output=output, mode=mode, block=block,
              cores=cores, extra_args=extra_args, port=port, host=bind, random_port_file=port_file,
              project=project, priority=priority, password_file=password_file,
              comparison_time=estimated_time, bitmap=bitmap,
              restart=restart, stats_file=stats_file, plan_only=plan_only, exec_each=exec_each,
              plan_stream=sys.stderr)
