"""The CLI reference page is generated from the commands: every subcommand gets a section.

``make docs`` builds the page through the hook; this checks the hook's output
directly, so a subcommand added without a usable help is caught by pytest too.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click

from treadle.cli import cli

HOOK = Path(__file__).resolve().parents[2] / "docs" / "_hooks" / "cli_help.py"


def _hook():
    spec = importlib.util.spec_from_file_location("cli_help", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_subcommand_has_a_section() -> None:
    page = _hook().on_page_markdown("# Command line\n\n<!-- treadle-commands -->\n")
    names = cli.list_commands(click.Context(cli))
    assert "<!-- treadle-commands -->" not in page
    for name in names:
        assert f"## treadle {name}\n" in page or f":prog_name: treadle {name}\n" in page, name


def test_self_parsing_commands_show_their_own_help() -> None:
    """run and worker parse their options themselves: their section is their --help text."""
    page = _hook().on_page_markdown("<!-- treadle-commands -->")
    assert "Usage: treadle run [OPTIONS] [DAGFILE]" in page
    assert "--batch-type" in page
    assert "usage: treadle worker" in page.lower()
    assert "--single-shot" in page


def test_the_cli_page_uses_the_marker() -> None:
    assert "<!-- treadle-commands -->" in (HOOK.parents[1] / "cli.md").read_text()
