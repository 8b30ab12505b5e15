"""Assembling results: block files to a table, the table to text triples in row-major
order or a dense ``.npy`` matrix, and ``--from TRIPLES`` (spec §1.4)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from treadle.allpairs.sets import ItemSet
from treadle.errors import AllPairsError

Table = list  # rows of escaped result strings; None where not computed


def unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out, k = [], 0
    while k < len(text):
        ch = text[k]
        if ch == "\\" and k + 1 < len(text):
            nxt = text[k + 1]
            out.append({"n": "\n", "r": "\r", "\\": "\\"}.get(nxt, "\\" + nxt))
            k += 2
        else:
            out.append(ch)
            k += 1
    return "".join(out)


def empty_table(n: int, m: int) -> Table:
    return [[None] * m for _ in range(n)]


def fill_from_blocks(table: Table, paths: Iterable[Path]) -> None:
    """Put every ``i<TAB>j<TAB>result`` line of the block files into the table."""
    for path in paths:
        with open(path, encoding="utf-8", newline="\n") as f:
            for line in f:
                i, j, text = line.rstrip("\n").split("\t", 2)
                table[int(i)][int(j)] = text


def mirror(table: Table) -> None:
    """Fill the i > j half from the computed i ≤ j half (symmetric runs)."""
    for i, row in enumerate(table):
        for j in range(i):
            row[j] = table[j][i]


def check_complete(table: Table, a: ItemSet, b: ItemSet, symmetric: bool) -> None:
    for i, row in enumerate(table):
        for j, text in enumerate(row):
            if text is None and not (symmetric and j < i):
                raise AllPairsError(f"no result for pair ({i}, {j}) {a.names[i]!r} "
                                    f"{b.names[j]!r}")


def _atomic(path: Path):
    return path.with_name(path.name + ".tmp")


def write_output(table: Table, a: ItemSet, b: ItemSet, output: str | os.PathLike,
                 half: bool = False) -> None:
    """Write ``output`` atomically: ``.npy`` as a float64 matrix, anything else as text."""
    path = Path(output)
    tmp = _atomic(path)
    if path.suffix == ".npy":
        matrix = to_matrix(table, a, b)
        import numpy

        with open(tmp, "wb") as f:
            numpy.save(f, matrix)
            f.flush()
            os.fsync(f.fileno())
    else:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            write_text(f, table, a, b, half)
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text(stream, table: Table, a: ItemSet, b: ItemSet, half: bool = False) -> None:
    """Row-major ``a<TAB>b<TAB>result`` lines; with ``half`` only i ≤ j."""
    names_b = b.names
    for i, row in enumerate(table):
        name_a = a.names[i]
        start = i if half else 0
        stream.write("".join(f"{name_a}\t{names_b[j]}\t{row[j]}\n" for j in range(start, len(row))))


def to_matrix(table: Table, a: ItemSet, b: ItemSet):
    """The table as float64 numpy array; the first non-numeric result is an error."""
    import numpy

    matrix = numpy.empty((len(table), len(b.names)), dtype=numpy.float64)
    for i, row in enumerate(table):
        try:
            matrix[i] = [float(x) for x in row]
        except (TypeError, ValueError):
            for j, text in enumerate(row):
                try:
                    float(text)
                except (TypeError, ValueError):
                    raise AllPairsError(
                        f"result of pair ({i}, {j}) {a.names[i]!r} {b.names[j]!r} is not a "
                        f"number ({text!r}); use text output (an -o name not ending in .npy)"
                    ) from None
    return matrix


def read_triples(path: str | os.PathLike, a: ItemSet, b: ItemSet, symmetric: bool) -> Table:
    """Read a triples table in any order; it must cover exactly the run's pairs."""
    slots: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for i, na in enumerate(a.names):
        for j, nb in enumerate(b.names):
            if symmetric and j < i:
                continue
            slots.setdefault((na, nb), []).append((i, j))
    table = empty_table(len(a), len(b))
    try:
        f = open(path, encoding="utf-8", newline="\n")
    except FileNotFoundError:
        raise AllPairsError(f"triples file {os.fspath(path)} does not exist") from None
    with f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            parts = line.split("\t", 2)
            if len(parts) != 3:
                raise AllPairsError(f"{os.fspath(path)}:{number}: not a<TAB>b<TAB>result")
            free = slots.get((parts[0], parts[1]))
            if not free:
                raise AllPairsError(f"{os.fspath(path)}:{number}: pair {parts[0]!r} "
                                    f"{parts[1]!r} is not in the lists, or appears twice")
            i, j = free.pop(0)
            table[i][j] = parts[2]
    check_complete(table, a, b, symmetric)
    if symmetric:
        mirror(table)
    return table
