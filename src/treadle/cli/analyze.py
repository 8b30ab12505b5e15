"""``treadle analyze``: check a workflow's syntax and list its inputs and outputs.

The reference's ``makeflow_analyze``; its test suite calls ``-k`` on good and
bad files and reads ``<dagfile>: Syntax OK.`` or the error (see docs/cli.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import click

from treadle.errors import UsageError

EXAMPLES = """
\b
Examples:
  treadle analyze -k Makeflow         check the syntax and the DAG (no cycles)
  treadle analyze -I -O wf.mf         list the original inputs and the produced files
  treadle analyze --jx -k wf.jx --jx-define N=10
"""


def format_options(f: Callable) -> Callable:
    """The workflow-language options shared by analyze and viz (see docs/makeflow.md, 'The JSON and JX form')."""
    f = click.option(
        "--jx-define",
        "jx_define",
        multiple=True,
        metavar="VAR=EXPR",
        help="Set the JX symbol VAR to the JX expression EXPR (repeatable).",
    )(f)
    f = click.option(
        "--jx-args", "jx_args", metavar="FILE", help="JX object whose keys become symbols."
    )(f)
    f = click.option("--jx", "use_jx", is_flag=True, help="The file is a JX expression.")(f)
    f = click.option("--json", "use_json", is_flag=True, help="The file is plain JSON.")(f)
    return f


def load_workflow(
    dagfile: str, use_json: bool, use_jx: bool, jx_args: str | None, jx_define: tuple[str, ...]
):
    """Parse ``dagfile`` in the chosen form; args files written for sub-workflows are removed at exit."""
    import atexit

    from treadle.flow.parser import parse_file

    defines: dict[str, str] = {}
    for item in jx_define:
        name, sep, expr = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--jx-define expects VAR=EXPR, got {item!r}")
        defines[name] = expr
    fmt = "jx" if use_jx else "json" if use_json else "make"
    wf = parse_file(dagfile, fmt=fmt, jx_args=jx_args, jx_define=defines or None)
    written = [r.workflow_args for r in wf.rules if r.workflow_args]
    if written:
        atexit.register(_remove, written)
    return wf


def _remove(paths: list[str]) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except OSError:
            pass


@click.command(
    "analyze",
    epilog=EXAMPLES,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option("-k", "--syntax-check", is_flag=True, help="Check the syntax and the DAG.")
@click.option("-I", "--show-input", is_flag=True, help="List the original input files.")
@click.option("-O", "--show-output", is_flag=True, help="List the files that rules produce.")
@click.option("-b", "--bundle-dir", metavar="DIR", help="Bundle the workflow (not available yet).")
@format_options
@click.argument("dagfile", default="./Makeflow", required=False)
def command(
    syntax_check: bool,
    show_input: bool,
    show_output: bool,
    bundle_dir: str | None,
    use_json: bool,
    use_jx: bool,
    jx_args: str | None,
    jx_define: tuple[str, ...],
    dagfile: str,
) -> None:
    """Check DAGFILE (default ./Makeflow) and report on it."""
    if bundle_dir is not None:
        raise UsageError("bundles (-b/--bundle-dir) are not supported yet; nothing was written")
    from treadle.flow.checks import find_cycle
    from treadle.flow.viz import hash_order

    wf = load_workflow(dagfile, use_json, use_jx, jx_args, jx_define)
    err = find_cycle(wf)
    if err is not None:
        raise err
    if syntax_check:
        click.echo(f"{dagfile}: Syntax OK.")
    if show_input or show_output:
        made = {t for r in wf.rules for t in r.targets}
        every = [n for r in wf.rules for n in (*r.targets, *r.sources)]
        for name in hash_order(every):
            produced = name in made
            if (show_input and not produced) or (show_output and produced):
                click.echo(name)
