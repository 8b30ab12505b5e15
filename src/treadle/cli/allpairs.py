"""``treadle allpairs``: a thin layer over ``treadle.allpairs.allpairs`` (see docs/allpairs.md)."""

from __future__ import annotations

import sys

import click

from treadle.cli import debuglog
from treadle.cli.manager_options import manager_options
from treadle.cli.ranges import COUNT, RATE, SECONDS
from treadle.errors import UsageError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("set_a", metavar="SET_A")
@click.argument("set_b", metavar="SET_B")
@click.argument("function", metavar="[FUNCTION]", required=False)
@click.option("-o", "-O", "--output", "--output-file", "output", metavar="FILE",
              help="Result file: text triples, or a float64 matrix when it ends in .npy.")
@click.option("-e", "--extra-args", default="", metavar="ARGS",
              help="Fixed arguments put before each pair (split like a shell would).")
@click.option("-f", "--input-file", "input_files", multiple=True, metavar="FILE",
              help="An extra file F needs (repeatable).")
@click.option("-t", "--estimated-time", type=SECONDS, metavar="S",
              help="Seconds per comparison; skips sampling.")
@click.option("-x", "--width", type=COUNT, metavar="N", help="Block rows (items of A).")
@click.option("-y", "--height", type=COUNT, metavar="N", help="Block columns (items of B).")
@click.option("-c", "--cores", type=COUNT, metavar="N",
              help="Local processes, or cores per worker in the model. Default: all.")
@click.option("-b", "--block-size", type=COUNT, metavar="N",
              help="Most items of one set in memory at once per block.")
@manager_options("allpairs_master")
@click.option("--symmetric", is_flag=True, help="Declare F(a,b) = F(b,a); A and B must be one list.")
@click.option("--half", is_flag=True, help="With --symmetric, print only the lines with i <= j.")
@click.option("--stats", "stats_file", metavar="FILE", help="Write a JSON summary.")
@click.option("--debug-file", metavar="FILE", help="Write a debug log.")
@click.option("-d", "--debug", "debug_flags", multiple=True, metavar="FLAG", help="Debug output.")
@click.option("-T", "--mode", type=click.Choice(["auto", "local", "wq"]), default="auto",
              help="Where blocks run.")
@click.option("--batched", is_flag=True, help="F takes two list files and prints triples.")
@click.option("--exec-each", is_flag=True,
              help="Start F afresh for every pair. By default a #!/bin/sh script F "
                   "runs in a reused shell, in a subshell per pair: $0, arguments, "
                   "exit status, output, cd, variables and traps behave as with a "
                   "fresh start, but $$ is the same for every pair and death by "
                   "signal N reads as exit status 128+N.")
@click.option("--plan", "--explain", "plan_only", is_flag=True,
              help="Print the sample, the model's numbers and the plan, then exit.")
@click.option("--restart", is_flag=True, help="Discard saved state.")
@click.option("--keep-state", is_flag=True, help="Keep the state directory after success.")
@click.option("-r", "--retries", type=COUNT, default=3, metavar="N",
              help="Attempts per block before the run fails.")
@click.option("--max-workers", type=COUNT, metavar="N", help="h_max of the cost model.")
@click.option("--dispatch-time", type=SECONDS, metavar="S", help="d_host of the cost model.")
@click.option("--bandwidth", type=RATE, metavar="MBPS", help="b of the cost model.")
@click.option("--transfer", type=click.Choice(["manager", "tree"]), default="manager",
              help="How items reach workers, for the cost model.")
@click.option("--from", "from_triples", metavar="TRIPLES",
              help="Assemble -o from a triples table without running F.")
def command(set_a, set_b, function, output, extra_args, input_files, estimated_time, width,
            height, cores, block_size, port, bind, port_file, project, password_file, priority,
            symmetric, half,
            stats_file, debug_file, debug_flags, mode, batched, exec_each, plan_only, restart,
            keep_state,
            retries, max_workers, dispatch_time, bandwidth, transfer, from_triples):
    """Compare every item of SET_A with every item of SET_B using FUNCTION.

    SET_A and SET_B are list files (one path per line) or directories.
    FUNCTION is an executable (called as F [ARGS] a b), FILE.py:NAME or
    MODULE:NAME (a Python callable), or BITWISE. Without FUNCTION, --from
    TRIPLES assembles an existing table into -o.

    \b
    Examples:
      treadle allpairs set.list set.list ./compare -o matrix.txt
      treadle allpairs set.list set.list BITWISE -o m.npy --symmetric
      treadle allpairs a.list b.list cmp.py:score -T wq -p 9123
      treadle allpairs a.list b.list ./cmp -T wq -p 0 --password pw.txt
    """
    from treadle.allpairs.engine import allpairs

    if function is None and from_triples is None:
        raise UsageError("missing FUNCTION (or --from TRIPLES)")
    if function is not None and from_triples is not None:
        raise UsageError("--from assembles a table; do not give FUNCTION too")
    debuglog.enable(debug_file, debug_flags)
    block = None
    if width or height:
        block = (width or height, height or width)
    result = allpairs(
        set_a, set_b, function, output=output, extra_args=extra_args,
        extra_files=input_files, symmetric=symmetric, half=half, batched=batched,
        exec_each=exec_each, mode=mode,
        cores=cores, block=block, block_items=block_size, comparison_time=estimated_time,
        port=port, host=bind, random_port_file=port_file, project=project, priority=priority,
        password_file=password_file,
        max_workers=max_workers, dispatch_time=dispatch_time, bandwidth=bandwidth,
        transfer=transfer, retries=retries, restart=restart, keep_state=keep_state,
        stats_file=stats_file, plan_only=plan_only, from_triples=from_triples,
        plan_stream=sys.stderr)
    if output is None and not plan_only:
        result.write_text(sys.stdout, half)
