"""Assembling results (docs/allpairs.md, "Output formats"): block files to text triples in row-major order or a
dense ``.npy`` matrix, written to ``<output>.tmp``, fsynced and renamed; block files to
an in-memory table for runs without an output file; and ``--from TRIPLES``.

The output file is assembled without holding the matrix: for text, a first pass over
the block files sums the byte length of every (row, band of columns) segment, which
gives each segment's offset, and a second pass writes each block's lines at those
offsets. Each segment comes from exactly one block (its transpose, for the mirrored
half of a symmetric run), so one block in memory at a time is enough. ``.npy`` goes
through a memory-mapped file.
"""

from __future__ import annotations

import array
import os
from collections.abc import Iterable, Iterator, Sequence
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


def block_cells(path: Path, mirror: bool) -> Iterator[tuple[int, int, str]]:
    """The (row, column, escaped result) cells of one block file; with ``mirror``, each
    cell off the diagonal also at its transposed place (a symmetric run's full matrix)."""
    with open(path, encoding="utf-8", newline="\n") as f:
        for line in f:
            i, j, text = line.rstrip("\n").split("\t", 2)
            row, col = int(i), int(j)
            yield row, col, text
            if mirror and row != col:
                yield col, row, text


def table_from_blocks(paths: Iterable[Path], a: ItemSet, b: ItemSet,
                      symmetric: bool) -> Table:
    """Every result in memory, mirrored in the symmetric case (runs without ``-o``)."""
    table = empty_table(len(a), len(b))
    for path in paths:
        for row, col, text in block_cells(path, symmetric):
            table[row][col] = text
    for i, row in enumerate(table):
        if None in row:
            j = row.index(None)
            raise AllPairsError(f"no result for pair ({i}, {j}) {a.names[i]!r} {b.names[j]!r}")
    return table


class _Segments:
    """Per (row, band of ``width`` columns): how many cells it holds and their bytes."""

    def __init__(self, n: int, m: int, width: int):
        self.bands = -(-m // width)
        self.width = width
        self.m = m
        self.count = array.array("q", bytes(8 * n * self.bands))
        self.size = array.array("q", bytes(8 * n * self.bands))

    def key(self, row: int, col: int) -> int:
        return row * self.bands + col // self.width

    def expected(self, row: int, band: int, half: bool) -> int:
        first, end = band * self.width, min(self.m, (band + 1) * self.width)
        return max(0, end - max(first, row)) if half else end - first

    def check(self, paths: Sequence[Path], a: ItemSet, b: ItemSet, mirror: bool,
              half: bool) -> None:
        """Every segment full; else the first missing pair is named."""
        for key, count in enumerate(self.count):
            row, band = divmod(key, self.bands)
            if count == self.expected(row, band, half):
                continue
            seen = {col for path in paths for r, col, _ in block_cells(path, mirror)
                    if r == row and col // self.width == band}
            first = max(band * self.width, row) if half else band * self.width
            for col in range(first, min(self.m, (band + 1) * self.width)):
                if col not in seen:
                    raise AllPairsError(f"no result for pair ({row}, {col}) {a.names[row]!r} "
                                        f"{b.names[col]!r}")
            raise AllPairsError(f"more than one result for a pair in row {row} "
                                f"({a.names[row]!r})")


def _atomic(path: Path):
    return path.with_name(path.name + ".tmp")


def assemble(paths: Sequence[Path], a: ItemSet, b: ItemSet, output: str | os.PathLike,
             width: int, symmetric: bool, half: bool = False) -> None:
    """Write ``output`` from block files of ``width`` columns, atomically, without the
    whole matrix in memory: ``.npy`` as a float64 matrix, anything else as text."""
    path = Path(output)
    tmp = _atomic(path)
    mirror = symmetric and not half
    segments = _Segments(len(a), len(b), width)
    try:
        if path.suffix == ".npy":
            _assemble_npy(paths, a, b, tmp, segments, mirror)
        else:
            _assemble_text(paths, a, b, tmp, segments, mirror, half)
        segments.check(paths, a, b, mirror, half)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def _assemble_text(paths: Sequence[Path], a: ItemSet, b: ItemSet, tmp: Path,
                   segments: _Segments, mirror: bool, half: bool) -> None:
    size_a = [len(name.encode("utf-8")) + 2 for name in a.names]  # the name and its tab
    size_b = [len(name.encode("utf-8")) + 1 for name in b.names]  # the name and its newline
    for path in paths:
        for row, col, text in block_cells(path, mirror):
            key = segments.key(row, col)
            segments.count[key] += 1
            segments.size[key] += size_a[row] + size_b[col] + len(text.encode("utf-8"))
    offset = array.array("q", bytes(8 * len(segments.size)))
    total = 0
    for key, size in enumerate(segments.size):
        offset[key] = total
        total += size
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        os.ftruncate(fd, total)
        names_a, names_b = a.names, b.names
        for path in paths:
            runs: dict[int, list[tuple[int, str]]] = {}
            for row, col, text in block_cells(path, mirror):
                runs.setdefault(segments.key(row, col), []).append((col, text))
            for key, cells in runs.items():
                name_a = names_a[key // segments.bands]
                cells.sort()
                data = "".join(f"{name_a}\t{names_b[col]}\t{text}\n" for col, text in cells)
                os.pwrite(fd, data.encode("utf-8"), offset[key])
    finally:
        os.close(fd)


def _assemble_npy(paths: Sequence[Path], a: ItemSet, b: ItemSet, tmp: Path,
                  segments: _Segments, mirror: bool) -> None:
    from numpy.lib.format import open_memmap

    matrix = open_memmap(tmp, mode="w+", dtype="float64", shape=(len(a), len(b)))
    try:
        for path in paths:
            for row, col, text in block_cells(path, mirror):
                try:
                    matrix[row, col] = float(text)
                except ValueError:
                    raise AllPairsError(
                        f"result of pair ({row}, {col}) {a.names[row]!r} {b.names[col]!r} is "
                        f"not a number ({text!r}); use text output (an -o name not ending "
                        "in .npy)") from None
                segments.count[segments.key(row, col)] += 1
        matrix.flush()
    finally:
        del matrix


def write_text(stream, table: Table, a: ItemSet, b: ItemSet, half: bool = False) -> None:
    """Row-major ``a<TAB>b<TAB>result`` lines; with ``half`` only i ≤ j."""
    names_b = b.names
    for i, row in enumerate(table):
        name_a = a.names[i]
        start = i if half else 0
        stream.write("".join(f"{name_a}\t{names_b[j]}\t{row[j]}\n" for j in range(start, len(row))))


# Lines of a triples table buffered before they are appended to their block files.
TRIPLES_BUFFER = 50_000
# Side of the square blocks a triples table is sorted into: one block's cells are what
# assembly holds in memory at a time.
TRIPLES_BLOCK = 128


def triples_to_blocks(path: str | os.PathLike, a: ItemSet, b: ItemSet, symmetric: bool,
                      directory: Path) -> list[Path]:
    """Sort a triples table (in any order) into block files of ``TRIPLES_BLOCK`` squares
    under ``directory``, as a run would have left them (``--from TRIPLES``).

    Each line must name a pair of the run (with ``symmetric``, of its i ≤ j half) not
    named before; duplicated names take their slots in list order. A bitmap of the
    matrix, one bit a cell, is all that is kept of it.
    """
    where = os.fspath(path)
    rows_of: dict[str, list[int]] = {}
    cols_of: dict[str, list[int]] = {}
    for i, name in enumerate(a.names):
        rows_of.setdefault(name, []).append(i)
    for j, name in enumerate(b.names):
        cols_of.setdefault(name, []).append(j)
    m = len(b)
    taken = bytearray((len(a) * m + 7) // 8)

    def free_slot(rows: list[int], cols: list[int]) -> tuple[int, int] | None:
        for i in rows:
            for j in cols:
                bit = i * m + j
                if (j >= i or not symmetric) and not taken[bit >> 3] & (1 << (bit & 7)):
                    taken[bit >> 3] |= 1 << (bit & 7)
                    return i, j
        return None

    buffers: dict[tuple[int, int], list[str]] = {}
    written: set[tuple[int, int]] = set()

    def flush() -> None:
        for (bx, by), lines in buffers.items():
            with open(directory / f"{bx}-{by}.tsv", "a", encoding="utf-8", newline="\n") as f:
                f.writelines(lines)
        written.update(buffers)
        buffers.clear()

    try:
        f = open(path, encoding="utf-8", newline="\n")
    except FileNotFoundError:
        raise AllPairsError(f"triples file {where} does not exist") from None
    buffered = 0
    with f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            parts = line.split("\t", 2)
            if len(parts) != 3:
                raise AllPairsError(f"{where}:{number}: not a<TAB>b<TAB>result")
            slot = free_slot(rows_of.get(parts[0], []), cols_of.get(parts[1], []))
            if slot is None:
                raise AllPairsError(f"{where}:{number}: pair {parts[0]!r} {parts[1]!r} is not "
                                    "in the lists, or appears twice")
            i, j = slot
            buffers.setdefault((i // TRIPLES_BLOCK, j // TRIPLES_BLOCK), []).append(
                f"{i}\t{j}\t{parts[2]}\n")
            buffered += 1
            if buffered >= TRIPLES_BUFFER:
                flush()
                buffered = 0
    flush()
    return [directory / f"{bx}-{by}.tsv" for bx, by in sorted(written)]
