"""``treadle repo query``: a table's rows that match conditions, or a read-only SELECT (docs/repo.md).

The command only reads: it never takes the writer lock, so it runs during an ingest and sees
whole batches. Output is a rich table on a terminal and CSV otherwise, so a pipe gets a
format a program can read without asking.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import click

from treadle.cli import CONTEXT_SETTINGS
from treadle.cli.ranges import AMOUNT
from treadle.errors import RepoError, require_extra

FORMATS = ("table", "csv", "jsonl")


def parse_where(text: str) -> tuple[str, str, Any]:
    """``'COL OP VALUE'`` as (column, operator, value); the operator is the longest that fits.

    The value is the rest of the text, stripped. ``is NULL`` and ``is not NULL`` give the value
    None. The column is not checked here: the query checks it against the table.
    """
    from treadle.repo.query import OPERATORS

    words = "|".join(re.escape(op) + (r"(?=\s|$)" if op[0].isalpha() else "") for op in OPERATORS)
    match = re.fullmatch(rf"\s*([^\s=!<>~]+)\s*({words})(.*)", text, re.DOTALL)
    if match is None:
        raise RepoError(f"bad -w {text!r}: write 'COLUMN OP VALUE' with OP one of "
                        f"{' '.join(OPERATORS)}")
    column, op, value = match.group(1), match.group(2), match.group(3).strip()
    if op in ("is", "is not"):
        if value.upper() != "NULL":
            raise RepoError(f"bad -w {text!r}: {op!r} takes only NULL")
        return column, op, None
    return column, op, value


def parse_param(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` of ``--param``; the value stays text and the database converts it."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise RepoError(f"bad --param {text!r}: write NAME=VALUE")
    return name.strip(), value


def write_rows(fmt: str, names: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Rows to stdout as a rich table, CSV with a header line, or one JSON object per line."""
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
    elif fmt == "jsonl":
        for row in rows:
            record = dict(zip(names, row, strict=True))
            sys.stdout.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(*names)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        Console().print(table)


def _split_columns(text: str | None) -> list[str] | None:
    return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("repo", type=click.Path(file_okay=False))
@click.argument("table", required=False)
@click.option("-w", "--where", "where", multiple=True, metavar="'COL OP VALUE'",
              help="Keep rows where COL OP VALUE holds; OP is = != < <= > >= or ~ (LIKE: % any "
                   "run, _ one character, \\ escapes). Repeat to require all.")
@click.option("--null", multiple=True, metavar="COL", help="Keep rows where COL is NULL (repeatable).")
@click.option("--not-null", multiple=True, metavar="COL",
              help="Keep rows where COL is not NULL (repeatable).")
@click.option("--columns", metavar="A,B", help="Show these columns (fileid and vpath always).")
@click.option("--order", metavar="COL", help="Sort by COL (NULLs last), then by fileid.")
@click.option("--limit", type=AMOUNT, metavar="N", help="Show at most N rows.")
@click.option("--count", is_flag=True, help="Print only the number of matching rows.")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="Output format [default: table on a terminal, else csv].")
@click.option("--sql", metavar="'SELECT ...'",
              help="Run this statement instead (read-only), with :NAME placeholders.")
@click.option("--param", multiple=True, metavar="NAME=VALUE", help="Bind :NAME of --sql (repeatable).")
def command(repo: str, table: str | None, where: tuple[str, ...], null: tuple[str, ...],
            not_null: tuple[str, ...], columns: str | None, order: str | None, limit: int | None,
            count: bool, fmt: str | None, sql: str | None, param: tuple[str, ...]) -> None:
    """List the rows of TABLE in REPO that match every condition, or run a read-only SELECT.

    Every row carries its fileid and its vpath (the path under which treadle vfs shows the
    file). Values are converted to the column's type and bound, never pasted into SQL; names
    are checked against the table. See docs/repo.md.

    \b
    Examples:
      treadle repo query images.repo images -w 'colour = blue' -w 'size > 100000'
      treadle repo query images.repo images --null thumb --count
      treadle repo query images.repo images -w "subject ~ 04%" --columns subject --format jsonl
      treadle repo query images.repo --sql 'SELECT colour, count(*) AS n FROM images GROUP BY colour'
      treadle repo query images.repo --sql 'SELECT * FROM images WHERE subject = :s' --param s=0417
    """
    if sql is not None:
        used = [flag for flag, given in (("TABLE", table), ("-w", where), ("--null", null),
                                         ("--not-null", not_null), ("--columns", columns),
                                         ("--order", order), ("--limit", limit is not None),
                                         ("--count", count)) if given]
        if used:
            raise click.UsageError(f"--sql runs the statement as written: drop {', '.join(used)}")
    elif param:
        raise click.UsageError("--param binds placeholders of --sql only")
    require_extra("sqlalchemy", "sql")
    from treadle.repo import query
    from treadle.repo.context import open_context

    conditions = [parse_where(text) for text in where]
    params = dict(parse_param(text) for text in param)
    fmt = fmt or ("table" if sys.stdout.isatty() else "csv")
    ctx = open_context(repo, read_only=True)
    try:
        if sql is not None:
            names, rows = query.run_sql(ctx, sql, params)
            write_rows(fmt, names, rows)
        elif table is None:
            raise click.UsageError("give a TABLE, or a statement with --sql")
        elif count:
            click.echo(query.count_rows(ctx, table, where=conditions, null=null, not_null=not_null))
        else:
            chosen = _split_columns(columns)
            names = query.row_columns(ctx, table, chosen)
            records = query.select_rows(ctx, table, where=conditions, null=null, not_null=not_null,
                                        columns=chosen, order=order, limit=limit)
            write_rows(fmt, names, ([record[n] for n in names] for record in records))
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, as cat does, instead of a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        ctx.close()
