"""Every code block of the documentation runs, so the docs cannot drift from the code.

Each page under docs/ is one test. Its fenced blocks are taken in page order,
in a fresh temporary directory (the cwd of every block of that page):

- ```` ```python ````: run as a Python script with the suite's interpreter;
- ```` ```sh ````: run with ``bash -euo pipefail``, the venv's bin/ first on PATH;
- a block with a title (```` ```make title="hello.mf" ````): written to that file, not run;
- ```` ```text ````: output shown to the reader, not run.

Any other block is an error, so a page cannot hold code that nobody runs.
A page whose text holds ``<!-- examples need: slurm -->`` runs its blocks
against the one-node test cluster (the ``slurm_cluster`` fixture), so its
``treadle run -T slurm`` examples run for real too.
Each block runs in its own process group, which is killed when the block ends:
a block that starts a worker must stop it, and nothing leaks into the next block.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
BLOCK_TIMEOUT = 120  # seconds; examples are meant to take a few

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
TITLE = re.compile(r"""title=(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>\S+))""")


@dataclass(frozen=True)
class Block:
    """One fenced block: what to do with it, and where it is for error messages."""

    kind: str  # "python", "sh", "file", "text"
    body: str
    line: int
    title: str | None = None


def parse_blocks(text: str, page: str) -> list[Block]:
    """The fenced blocks of a Markdown page, in order; ValueError for one the harness cannot run."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m.group("indent"), m.group("fence"), m.group("info").strip()
        start = i + 1
        body: list[str] = []
        i += 1
        while i < len(lines) and not re.match(rf"^{re.escape(indent)}{fence[0]}{{{len(fence)},}}\s*$",
                                              lines[i]):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        if i == len(lines):
            raise ValueError(f"{page}:{start}: code block never closed")
        i += 1
        lang = info.split()[0].lstrip("{.").rstrip("}") if info else ""
        t = TITLE.search(info)
        source = "\n".join(body) + "\n"
        if t:
            title = t.group("dq") or t.group("sq") or t.group("bare")
            blocks.append(Block("file", source, start, title))
        elif lang in ("python", "sh", "text"):
            blocks.append(Block(lang, source, start))
        else:
            raise ValueError(f"{page}:{start}: a code block must be python, sh, text or have a "
                             f"title=\"FILE\"; got {info!r}")
    return blocks


def pages() -> list[Path]:
    """Every Markdown page of the site (the hooks directory holds no page)."""
    return sorted(p for p in DOCS.rglob("*.md") if "_hooks" not in p.parts)


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("PYTHONPATH", None)
    return env


def _run(argv: list[str], cwd: Path, where: str, source: str) -> None:
    """Run one block in its own process group; fail the test with its output if it fails."""
    proc = subprocess.Popen(argv, cwd=cwd, env=_environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=BLOCK_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{where}: still running after {BLOCK_TIMEOUT} s\n{source}\n--- output ---\n{output}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the block left running
        except ProcessLookupError:
            pass
    if proc.returncode != 0:
        pytest.fail(f"{where}: exit status {proc.returncode}\n{source}\n--- output ---\n{output}")


NEEDS_SLURM = "<!-- examples need: slurm -->"


def _page_param(page: Path) -> object:
    """A page as a test case; one that needs the test cluster carries the `slurm` marker."""
    needs = NEEDS_SLURM in page.read_text(encoding="utf-8")
    return pytest.param(page, id=str(page.relative_to(DOCS)), marks=[pytest.mark.slurm] if needs else [])


@pytest.mark.parametrize("page", [_page_param(p) for p in pages()])
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    name = str(page.relative_to(ROOT))
    try:
        blocks = parse_blocks(page.read_text(encoding="utf-8"), name)
    except ValueError as e:
        pytest.fail(str(e))
    work = tmp_path / "work"
    scripts = tmp_path / "blocks"  # outside the cwd, so examples see only their own files
    work.mkdir()
    scripts.mkdir()
    for n, block in enumerate(blocks):
        where = f"{name}:{block.line}"
        if block.kind == "file":
            target = work / block.title
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.body, encoding="utf-8")
        elif block.kind == "python":
            script = scripts / f"block{n}_line{block.line}.py"
            script.write_text(block.body, encoding="utf-8")
            _run([sys.executable, str(script)], work, where, block.body)
        elif block.kind == "sh":
            _run(["bash", "-euo", "pipefail", "-c", block.body], work, where, block.body)


def test_parse_blocks_kinds() -> None:
    text = "\n".join([
        "```make title=\"hello.mf\"", "out.txt:", "\techo hi > out.txt", "```",
        "```sh", "treadle run hello.mf", "```",
        "!!! note", "    ```python", "    print(1)", "    ```",
        "```text", "shown", "```",
    ])
    got = parse_blocks(text, "page.md")
    assert [(b.kind, b.title) for b in got] == [("file", "hello.mf"), ("sh", None),
                                              ("python", None), ("text", None)]
    assert got[0].body == "out.txt:\n\techo hi > out.txt\n"
    assert got[2].body == "print(1)\n"


def test_parse_blocks_refuses_a_block_nobody_runs() -> None:
    with pytest.raises(ValueError, match=r"page.md:2: a code block must be"):
        parse_blocks("text\n```bash\nls\n```\n", "page.md")


def test_sh_blocks_see_the_venv_first() -> None:
    found = subprocess.run(["bash", "-c", "command -v python"], env=_environment(),
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(found).parent == Path(sys.executable).parent


_LINE = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20).filter(
    lambda s: "`" not in s and "~~~" not in s)


@given(st.lists(st.tuples(st.sampled_from(["python", "sh", "text", "file"]),
                          st.lists(_LINE, max_size=4),
                          st.sampled_from(["", "    "])), max_size=5))
def test_parse_blocks_round_trip(specs: list[tuple[str, list[str], str]]) -> None:
    """Blocks written out as Markdown (indented or not, with prose between) parse back as written."""
    text, expected = [], []
    for n, (kind, body, indent) in enumerate(specs):
        info = f'make title="f{n}.mf"' if kind == "file" else kind
        text += ["Some prose.", "", f"{indent}```{info}", *(indent + line for line in body),
                 f"{indent}```", ""]
        expected.append((kind, "\n".join(body) + "\n", f"f{n}.mf" if kind == "file" else None))
    got = parse_blocks("\n".join(text), "page.md")
    assert [(b.kind, b.body, b.title) for b in got] == expected
