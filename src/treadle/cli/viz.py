"""``treadle viz``: draw a workflow as a Graphviz graph, as ``makeflow_viz -D dot`` does."""

from __future__ import annotations

import click

from treadle.cli.analyze import format_options, load_workflow
from treadle.errors import UsageError

EXAMPLES = """
\b
Examples:
  treadle viz -D dot Makeflow > wf.dot      the reference's dot format, byte for byte
  treadle viz wf.mf | dot -Tpng > wf.png    draw it with Graphviz
"""


@click.command("viz", epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-D",
    "--display",
    "display",
    default="dot",
    show_default=True,
    metavar="FORMAT",
    help="Output format; dot is the one available.",
)
@format_options
@click.argument("dagfile", default="./Makeflow", required=False)
def command(
    display: str,
    use_json: bool,
    use_jx: bool,
    jx_args: str | None,
    jx_define: tuple[str, ...],
    dagfile: str,
) -> None:
    """Write the rules and files of DAGFILE (default ./Makeflow) as a graph on stdout."""
    if display != "dot":
        raise UsageError(f"unknown display format {display!r}: only dot is available")
    from treadle.flow.viz import to_dot

    wf = load_workflow(dagfile, use_json, use_jx, jx_args, jx_define)
    click.echo(to_dot(wf), nl=False)
