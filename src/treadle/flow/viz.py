"""Drawings of a workflow, and the reference's file order they depend on.

``treadle viz -D dot`` must match ``makeflow_viz -D dot`` byte for byte
(see docs/cli.md). The reference lists files in the iteration order of its string
hash table, so that order is reproduced here exactly: Bob Jenkins' 1996
"lookup2" hash computed in 64-bit unsigned arithmetic and truncated to 32
bits, chained buckets with head insertion, and doubling past a load of 0.75.
``treadle analyze -I/-O`` lists files in the same kind of order.
"""

from __future__ import annotations

from collections.abc import Iterable

from treadle.flow.model import Workflow

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B9
INITIAL_BUCKETS = 127
MAX_LOAD = 0.75


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    # The reference's 4-byte type is a 64-bit unsigned long, so the right
    # shifts bring down high bits that 32-bit arithmetic would not have.
    a = (a - b - c) & _M64
    a ^= c >> 13
    b = (b - c - a) & _M64
    b ^= (a << 8) & _M64
    c = (c - a - b) & _M64
    c ^= b >> 13
    a = (a - b - c) & _M64
    a ^= c >> 12
    b = (b - c - a) & _M64
    b ^= (a << 16) & _M64
    c = (c - a - b) & _M64
    c ^= b >> 5
    a = (a - b - c) & _M64
    a ^= c >> 3
    b = (b - c - a) & _M64
    b ^= (a << 10) & _M64
    c = (c - a - b) & _M64
    c ^= b >> 15
    return a, b, c


def lookup2(data: bytes, initval: int = 0) -> int:
    """Jenkins' lookup2 hash of ``data`` as the reference computes it (32-bit result)."""
    a = b = _GOLDEN
    c = initval
    n = len(data)
    i = 0
    while n - i >= 12:
        a = (a + int.from_bytes(data[i : i + 4], "little")) & _M64
        b = (b + int.from_bytes(data[i + 4 : i + 8], "little")) & _M64
        c = (c + int.from_bytes(data[i + 8 : i + 12], "little")) & _M64
        a, b, c = _mix(a, b, c)
        i += 12
    c = (c + n) & _M64
    rest = data[i:]
    a = (a + int.from_bytes(rest[0:4], "little")) & _M64
    b = (b + int.from_bytes(rest[4:8], "little")) & _M64
    # the lowest byte of c holds the length, so the last bytes start one byte up
    c = (c + (int.from_bytes(rest[8:11], "little") << 8)) & _M64
    a, b, c = _mix(a, b, c)
    return c & 0xFFFFFFFF


def name_bytes(name: str) -> bytes:
    """The bytes of a name as read from the file (undecodable bytes survive)."""
    return name.encode("utf-8", "surrogateescape")


def hash_order(names: Iterable[str]) -> list[str]:
    """``names`` (insertion order, duplicates ignored) in the reference's hash-table order."""
    count = INITIAL_BUCKETS
    buckets: list[list[tuple[int, str]]] = [[] for _ in range(count)]
    size = 0
    seen: set[str] = set()
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        if size / count > MAX_LOAD:
            # makeflow_viz 9.9 doubles the buckets to 2*n (not 2*(n+1)-1), and
            # byte-for-byte output is what is checked (tests/flow/test_viz.py).
            count = 2 * count
            grown: list[list[tuple[int, str]]] = [[] for _ in range(count)]
            for chain in buckets:
                # chains are kept head-last here, so walk each from its head
                for h, old in reversed(chain):
                    grown[h % count].append((h, old))
            buckets = grown
        h = lookup2(name_bytes(name))
        buckets[h % count].append((h, name))
        size += 1
    return [name for chain in buckets for _, name in reversed(chain)]


def command_label(command: str) -> str:
    """The first word of a command, as the reference labels rule nodes."""
    return command.split(" ", 1)[0]


def to_dot(wf: Workflow) -> str:
    """The workflow as the reference's ``makeflow_viz -D dot`` draws it."""
    rules = sorted(wf.rules, key=lambda r: r.id, reverse=True)
    number: dict[str, int] = {}
    for r in rules:
        for name in (*reversed(r.sources), *reversed(r.targets)):
            if name not in number:
                number[name] = len(number)
    out = [
        "digraph {",
        "",
        "node [shape=ellipse,color = green,style = unfilled,fixedsize = false];",
    ]
    for r in rules:
        out.append(f'N{r.id} [label="{command_label(r.command)}"];')
    out.append("")
    out.append("node [shape=box,color=blue,style=unfilled,fixedsize=false];")
    for name in hash_order(number):
        out.append(f'F{number[name]} [label = "{name}"];')
    out.append("")
    for r in rules:
        for name in reversed(r.sources):
            out.append(f"F{number[name]} -> N{r.id};")
        for name in reversed(r.targets):
            out.append(f"N{r.id} -> F{number[name]};")
    out.append("}")
    return "\n".join(out) + "\n"
