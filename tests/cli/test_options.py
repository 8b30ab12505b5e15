"""Every subcommand's options, found by introspection, so that a new option is covered too.

The rule for a bad command line, for every subcommand: one line on stderr that names
the command and the option, no traceback, exit status 1 (click's own default is four
lines and status 2). Every numeric option declares a range with both ends, and a value
below it, above it, or not a number at all is refused that way before anything runs.
The help is one style: every option says what it does, with a metavar other than ARG.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import typing
from collections.abc import Iterator
from typing import Any

import click
import pytest

from treadle.cli import SUBCOMMANDS, cli, main

# Subcommands that hand their words to a parser of their own (the reference's command lines).
DELEGATING = {"run", "worker"}


def _command(name: str) -> click.Command:
    """The command at ``name``, words separated by spaces for a group's ("repo ingest")."""
    command: click.Command = cli
    for word in name.split():
        assert isinstance(command, click.Group), name
        found = command.get_command(click.Context(command), word)
        assert found is not None, name
        command = found
    return command


def _every_command(group: click.Group = cli, prefix: str = "") -> Iterator[str]:
    """The name of every command below ``group``, groups (``repo``, ``repo store``) included."""
    for word in group.list_commands(click.Context(group)):
        name = f"{prefix}{word}"
        yield name
        command = _command(name)
        if isinstance(command, click.Group):
            yield from _every_command(command, f"{name} ")


ALL_COMMANDS = list(_every_command())
# the commands that take options: every one but the groups and the delegating ones
CLICK_LEAVES = [name for name in ALL_COMMANDS
                if name not in DELEGATING and not isinstance(_command(name), click.Group)]


def _delegates(command: click.Command) -> bool:
    return [type(p.type) for p in command.params] == [type(click.UNPROCESSED)]


def test_the_delegating_subcommands_are_the_known_ones():
    """A new subcommand with a parser of its own must be added to the sweeps below."""
    assert {name for name in SUBCOMMANDS if _delegates(_command(name))} == DELEGATING


def _numeric(p: click.Parameter) -> bool:
    return isinstance(p.type, (click.types._NumberParamTypeBase))  # INT, FLOAT and their ranges


def _bad_values(low: float, high: float) -> list[str]:
    """Below the range, above it, and not a number."""
    if isinstance(low, int) and isinstance(high, int):
        return [str(low - 1), str(high + 1), "many"]
    return [str(low - 0.5), str(high * 10), "many"]


def _bounds(kind: Any, where: object) -> tuple[float, float]:
    """The two ends of a numeric type, which must be a range with both."""
    assert isinstance(kind, (click.IntRange, click.FloatRange)), f"{where}: {kind} is not a range"
    assert kind.min is not None and kind.max is not None, f"{where}: {kind} is open-ended"
    return kind.min, kind.max


def _click_cases() -> Iterator[tuple[str, str]]:
    for name in CLICK_LEAVES:
        for p in _command(name).params:
            if _numeric(p):
                yield name, p.name or ""


def _argv(name: str, target: str, bad: str) -> list[str]:
    """A command line for ``name`` with every required argument, ``target`` set to ``bad``."""
    options: list[str] = []
    args: list[str] = []
    params = _command(name).params
    positions = [p.name for p in params if isinstance(p, click.Argument)]
    for p in params:
        if p.name == target:
            if isinstance(p, click.Option):
                flag = max(p.opts, key=len)
                options += [f"{flag}={bad}"] if flag.startswith("--") else [flag, bad]
            else:
                args.append(bad)
        elif isinstance(p, click.Argument) and (
                p.required or (target in positions and positions.index(p.name) < positions.index(target))):
            args.append("1" if _numeric(p) else "x")  # an argument before the target fills its place
    return [*name.split(), *options, *args]


def _names(name: str, target: str) -> list[str]:
    p = next(p for p in _command(name).params if p.name == target)
    return [*p.opts, p.human_readable_name] if isinstance(p, click.Option) else [p.human_readable_name]


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 1, argv
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and out == ""
    return lines[0]


@pytest.mark.parametrize(("name", "target"), list(_click_cases()))
def test_numeric_option_out_of_range_is_one_line_and_status_1(name, target, capsys, monkeypatch):
    command = _command(name)
    param = next(p for p in command.params if p.name == target)

    def ran(**_: Any) -> None:
        raise AssertionError(f"treadle {name} ran with a bad {target}")

    monkeypatch.setattr(command, "callback", ran)
    for bad in _bad_values(*_bounds(param.type, f"treadle {name} {target}")):
        line = _refused(_argv(name, target, bad), capsys)
        assert line.startswith(f"treadle {name}: ")
        assert any(n in line for n in _names(name, target)), line


# --- the two subcommands with parsers of their own --------------------------------------


def _run_numeric() -> list[Any]:
    from treadle.cli.run import OPTIONS

    return [o for o in OPTIONS if o.type is not None]


def test_run_numbers_are_the_ones_the_table_types():
    """Every option that sets a number of the run (or Work Queue) options has a range: the sweep has it."""
    from treadle.backends.workqueue import WorkQueueOptions
    from treadle.cli.run import OPTIONS
    from treadle.flow.options import RunOptions

    hints = {**typing.get_type_hints(WorkQueueOptions), **typing.get_type_hints(RunOptions)}
    for o in OPTIONS:
        kinds = set(typing.get_args(hints[o.dest]) or (hints[o.dest],)) if o.dest in hints else set()
        if o.arg and kinds & {int, float}:
            assert o.type is not None, o


@pytest.mark.parametrize("opt", _run_numeric(), ids=lambda o: o.longs[0])
def test_run_numeric_option_out_of_range_is_one_line_and_status_1(opt, capsys, monkeypatch, tmp_path):
    from treadle.cli import run

    def ran(opts: Any) -> int:
        raise AssertionError(f"treadle run ran with a bad --{opt.longs[0]}")

    monkeypatch.setattr(run, "execute", ran)
    monkeypatch.chdir(tmp_path)
    for bad in _bad_values(*_bounds(opt.type, opt)):
        line = _refused(["run", f"--{opt.longs[0]}={bad}", "wf.mf"], capsys)
        assert line.startswith("treadle") and f"--{opt.longs[0]}" in line, line


def _worker_numeric_actions() -> Iterator[argparse.Action]:
    from treadle.queue.worker import build_parser

    for action in build_parser()._actions:
        if action.type is not None:
            yield action


@pytest.mark.parametrize("action", list(_worker_numeric_actions()), ids=lambda a: max(a.option_strings, key=len))
def test_worker_numeric_option_out_of_range_is_one_line_and_status_1(action, capsys, monkeypatch):
    from treadle.queue import worker

    flag = max(action.option_strings, key=len)
    assert hasattr(action.type, "low") and hasattr(action.type, "high"), f"{flag} has no range"

    def ran(opts: Any) -> int:
        raise AssertionError(f"treadle worker ran with a bad {flag}")

    monkeypatch.setattr(worker, "run", ran)
    for bad in _bad_values(action.type.low, action.type.high):
        line = _refused(["worker", f"{flag}={bad}", "127.0.0.1", "9123"], capsys)
        assert line.startswith("treadle") and flag in line, line


@pytest.mark.parametrize("argv", [["-p", "99999"], ["-p", "-1"]])
def test_the_issue_s_own_example_from_a_shell(argv, tmp_path):
    (tmp_path / "wf.mf").write_text("out:\n\ttouch out\n")
    res = subprocess.run([sys.executable, "-m", "treadle", "run", "-T", "wq", *argv, "wf.mf"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert res.stdout == "" and len(res.stderr.splitlines()) == 1, res.stderr
    assert "--port" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


# --- help hygiene ------------------------------------------------------------------------


def _click_options() -> Iterator[tuple[str, click.Option]]:
    for name in CLICK_LEAVES:
        for p in _command(name).params:
            if isinstance(p, click.Option):
                yield name, p


@pytest.mark.parametrize(("name", "option"), list(_click_options()),
                         ids=lambda x: x if isinstance(x, str) else x.name)
def test_every_option_has_help_and_a_real_metavar(name, option):
    assert option.help, f"treadle {name} {option.opts}: no help text"
    if option.is_flag or isinstance(option.type, click.Choice):
        return
    assert option.metavar not in (None, "ARG"), f"treadle {name} {option.opts}: metavar {option.metavar!r}"


def test_every_run_option_has_help_and_a_real_metavar():
    from treadle.cli.run import OPTIONS

    for o in OPTIONS:
        assert o.help, o
        if o.arg:
            assert o.metavar and o.metavar != "ARG", o


def test_every_worker_option_has_help():
    from treadle.queue.worker import build_parser

    for action in build_parser()._actions:
        assert action.help, action.option_strings
        if action.nargs != 0 and action.option_strings:
            assert action.metavar not in (None, "ARG"), action.option_strings


def test_help_of_every_subcommand_is_one_style(capsys):
    assert set(SUBCOMMANDS) <= set(ALL_COMMANDS)
    for name in ALL_COMMANDS:
        try:
            main([*name.split(), "--help"])
        except SystemExit as e:
            assert e.code in (0, None), name
        out = capsys.readouterr().out
        assert out.startswith(f"Usage: treadle {name} "), (name, out[:80])
        assert " ARG " not in out and "Example" in out, name


def _run_help(columns: int) -> str:
    env = dict(os.environ, COLUMNS=str(columns))
    res = subprocess.run([sys.executable, "-m", "treadle", "run", "--help"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stderr == ""
    return res.stdout


def test_run_help_is_grouped_as_the_reference_makeflow_s():
    from treadle.cli.run import OPTIONS

    text = _run_help(100)
    headings = [line for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert headings == ["Examples:", "Basic options:", "Workflow handling:", "Data handling:",
                        "Work Queue options:", "Batch system options:", "Containers and wrappers:"]
    sections = text[text.index("Basic options:"):]
    for o in OPTIONS:  # every option, once, in some section (none left over in "Other options")
        name = f"--{o.longs[0]}"
        assert len([w for w in sections.split() if w.rstrip(",").startswith(name)
                    and w.rstrip(",").removeprefix(name) in ("", "[=MODE]", "[=DIR]")]) == 1, name


@pytest.mark.parametrize("columns", [60, 100])
def test_run_help_wraps_at_the_terminal_width(columns):
    lines = _run_help(columns).splitlines()
    assert max(map(len, lines)) <= columns
    assert max(map(len, lines)) > min(columns, 80) - 10  # it uses the width it has, beyond 80 too
