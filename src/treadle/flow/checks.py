"""Consistency checks of a parsed workflow that run before anything is executed.

A dependency cycle would make the engine wait forever (the reference spins or
silently does nothing), and remote renaming means nothing where
tasks do not run in a sandbox (docs/makeflow.md, 'File names and renaming'). Both are reported as ``ParseError``s
that point at a rule of the file.
"""

from __future__ import annotations

from treadle.errors import ParseError
from treadle.flow.lexer import excerpt
from treadle.flow.model import Workflow


def find_cycle(wf: Workflow) -> ParseError | None:
    """The first dependency cycle of ``wf`` as an error naming its files and rules, or ``None``.

    Rules are nodes; a rule depends on the rules that produce its sources. The
    search is iterative, so a chain of a million rules does not hit Python's
    recursion limit, and it is linear in rules plus sources.
    """
    rules = wf.rules
    producer: dict[str, int] = {}
    for r in rules:
        for t in r.targets:
            producer[t] = r.id
    # deps[i]: (file, producer id) pairs for the sources of rule i that some rule makes
    deps: list[list[tuple[str, int]] | None] = [None] * len(rules)
    any_edge = False
    for i, r in enumerate(rules):
        edges: list[tuple[str, int]] | None = None
        for s in r.sources:
            p = producer.get(s)
            if p is not None:
                if edges is None:
                    edges = []
                edges.append((s, p))
        if edges is not None:
            deps[i] = edges
            any_edge = True
    if not any_edge:
        return None

    WHITE, GREY, BLACK = 0, 1, 2
    color = bytearray(len(rules))
    for root in range(len(rules)):
        if color[root] != WHITE or deps[root] is None:
            continue
        # stack of (rule index, next edge index); via[i] is the file by which we entered i's child
        stack: list[list[int]] = [[root, 0]]
        path_files: list[str] = []
        color[root] = GREY
        while stack:
            top = stack[-1]
            node, k = top
            edges = deps[node]
            if edges is None or k >= len(edges):
                color[node] = BLACK
                stack.pop()
                if path_files:
                    path_files.pop()
                continue
            top[1] = k + 1
            file, nxt = edges[k]
            if color[nxt] == GREY:
                chain = [f[0] for f in stack]
                start = chain.index(nxt)
                return _cycle_error(wf, chain[start:], path_files[start:] + [file])
            if color[nxt] == WHITE:
                color[nxt] = GREY
                path_files.append(file)
                stack.append([nxt, 0])
    return None


def _cycle_error(wf: Workflow, chain: list[int], files: list[str]) -> ParseError:
    """Build the message from a dependency chain: ``chain[i]`` reads ``files[i]``, made by ``chain[i+1]``.

    The message follows the data: a file, the rule that reads it, the file
    that rule makes, and so on back to the first file.
    """
    rules = wf.rules
    m = len(chain)
    first = rules[chain[0]]
    parts = [excerpt(files[0])]
    # flow order: files[0] -> chain[0] -> files[m-1] -> chain[m-1] -> ... -> chain[1] -> files[0]
    order = [0] + list(range(m - 1, 0, -1))
    for idx in order:
        rule = rules[chain[idx]]
        parts.append(f"(rule at line {rule.line})")
        parts.append(excerpt(files[idx - 1] if idx > 0 else files[m - 1]))
    return ParseError(
        "dependency cycle: " + " -> ".join(parts), first.file or wf.path, first.line, first.column
    )


def check_renaming(wf: Workflow, *, sandboxed: bool) -> None:
    """Refuse ``LOCAL->REMOTE`` names where tasks do not run in a sandbox.

    ``sandboxed`` is true for batch types that give each task its own
    directory (``wq``); even there a ``LOCAL`` rule runs unsandboxed.
    """
    for r in wf.rules:
        if r.remote_names and (not sandboxed or r.local):
            raise ParseError(
                f"Remote renaming is not supported with -Tlocal or LOCAL execution. Rule {r.id} (line {r.line}).",
                r.file or wf.path,
                r.line,
                r.column,
            )


def check_workflow(wf: Workflow, *, sandboxed: bool, remote: bool = False) -> None:
    """All checks that must pass before a run: no cycle, renaming only where supported, and,
    for rules sent to a batch system, cores that split evenly over MPI processes."""
    err = find_cycle(wf)
    if err is not None:
        raise err
    check_renaming(wf, sandboxed=sandboxed)
    if remote:
        check_mpi_split(wf)


def check_mpi_split(wf: Workflow) -> None:
    """``CORES`` must be a multiple of ``MPI_PROCESSES``: a batch job asks for that many processes of
    ``CORES / MPI_PROCESSES`` cores each (docs/batch.md, 'Resources')."""
    for r in wf.rules:
        if r.local:
            continue
        res = wf.resources_of(r)
        procs = res.mpi_processes
        if res.cores and procs and res.cores % procs:
            raise ParseError(
                f"CORES={res.cores} cannot be split evenly over MPI_PROCESSES={procs} (rule {r.id})",
                r.file or wf.path, r.line, r.column)
