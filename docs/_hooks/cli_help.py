"""MkDocs hook: the CLI reference is generated from the commands, so it cannot drift.

A line ``<!-- treadle-commands -->`` in a page becomes one section per
subcommand that ``treadle --help`` lists, in the same order:

- a click command gets a ``::: mkdocs-click`` block (mkdocs-click renders its
  usage, help and options table);
- a command that parses its own options (``treadle run`` and ``treadle
  worker`` accept the reference tools' command lines, so click sees only
  ``ARGS...``; they have no click help option) gets the text its own
  ``--help`` prints.

A new subcommand therefore appears with no change to the docs, and a command
whose help fails breaks the build.
"""

from __future__ import annotations

import os
import subprocess
import sys

import click

MARKER = "<!-- treadle-commands -->"


def _own_help(name: str) -> str:
    env = dict(os.environ, COLUMNS="100", NO_COLOR="1", TERM="dumb")
    done = subprocess.run([sys.executable, "-m", "treadle", name, "--help"], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"`treadle {name} --help` failed ({done.returncode}): {done.stderr.strip()}")
    return f"## treadle {name}\n\n```text\n{done.stdout.rstrip()}\n```\n"


def _click_block(module: str, name: str) -> str:
    return (f"::: mkdocs-click\n    :module: {module}\n    :command: command\n"
            f"    :prog_name: treadle {name}\n    :depth: 1\n    :style: plain\n")


def reference() -> str:
    """The Markdown of every subcommand's section."""
    from treadle.cli import SUBCOMMANDS, cli

    ctx = click.Context(cli, info_name="treadle")
    sections = []
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        if command is None:
            continue
        if command.add_help_option:
            sections.append(_click_block(f"treadle.cli.{SUBCOMMANDS[name][0]}", name))
        else:
            sections.append(_own_help(name))
    return "\n".join(sections)


def on_page_markdown(markdown: str, **_: object) -> str:
    """Replace the marker line with the generated reference."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference())
