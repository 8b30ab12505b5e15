"""``treadle link``: copy a workflow and the programs and modules its commands need into one directory."""

from __future__ import annotations

import os

import click

from treadle.flow.link import link_workflow
from treadle.flow.parser import parse_file


@click.command("link")
@click.argument("workflow", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "outdir", default="output_dir", show_default=True, metavar="DIR",
              help="the directory to write the linked workflow and its dependencies into")
@click.option("--json", "fmt", flag_value="json", help="the workflow is in the JSON form")
@click.option("--jx", "fmt", flag_value="jx", help="the workflow is in the JX form")
def command(workflow: str, outdir: str, fmt: str | None) -> None:
    """Copy WORKFLOW, its inputs and what its commands depend on into DIR (the reference's makeflow_linker).

    Programs named in commands (on PATH outside the system's directories, or
    relative files), Python modules a .py input imports and Perl modules a .pl
    input uses are copied when they resolve to files; the rewritten workflow in
    DIR lists them as sources and calls copied programs as ./NAME, so it runs
    from DIR on a machine that has only the system's own programs.

    \b
    Examples:
      treadle link wf.mf -o linked          write linked/wf.mf and its dependencies
      cd linked && treadle run wf.mf        run it there
    """
    wf = parse_file(workflow, fmt=fmt or "make")
    linked = link_workflow(wf, workflow, outdir)
    for name in linked.copied:
        click.echo(f"{name}\t{os.path.join(outdir, name)}")
    for program, where in sorted(linked.named.items()):
        click.echo(f"{program}\t(system: {where}, not copied)")
    click.echo(f"workflow\t{linked.workflow}")
