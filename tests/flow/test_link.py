"""``treadle link``: a workflow, a local program and a helper Python module, rewritten to run from OUTDIR."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def _treadle(*args: str, cwd: Path, path: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PERL5LIB")}
    env["PATH"] = path
    return subprocess.run([sys.executable, "-m", "treadle", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def _project(root: Path) -> Path:
    (root / "tools").mkdir(parents=True)
    (root / "tools" / "shout").write_text("#!/bin/sh\ntr a-z A-Z\n")
    (root / "tools" / "shout").chmod(0o755)
    (root / "main.py").write_text("import sys\nimport helper\nprint(helper.greet(sys.argv[1]))\n")
    (root / "helper.py").write_text("import words\n\ndef greet(name):\n    return words.HELLO + ' ' + name\n")
    (root / "words.py").write_text("HELLO = 'hello'\n")
    (root / "wf.mf").write_text(f"out.txt: main.py\n\t{Path(sys.executable).name} main.py world | shout > out.txt\n")
    return root


def test_link_copies_a_program_and_helper_modules_and_the_workflow_runs_from_outdir(tmp_path: Path) -> None:
    src = _project(tmp_path / "src")
    path = f"{src / 'tools'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin"
    linked = _treadle("link", "wf.mf", "-o", str(tmp_path / "out"), cwd=src, path=path)
    assert linked.returncode == 0, linked.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["helper.py", "main.py", "shout", "wf.mf", "words.py"]
    text = (out / "wf.mf").read_text()
    assert "out.txt: main.py shout helper.py words.py\n" in text
    assert "| ./shout > out.txt" in text
    # elsewhere, with no tools/ on PATH and no modules but the copies: the linked workflow still runs
    fresh = tmp_path / "fresh"
    shutil.copytree(out, fresh)
    ran = _treadle("run", "wf.mf", cwd=fresh, path=f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert (fresh / "out.txt").read_text() == "HELLO WORLD\n"


def test_system_programs_are_named_not_copied(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("b\na\n")
    (tmp_path / "wf.mf").write_text("s.txt: in.txt\n\tsort in.txt > s.txt\n")
    r = _treadle("link", "wf.mf", "-o", "out", cwd=tmp_path, path="/usr/bin:/bin")
    assert r.returncode == 0, r.stderr
    assert "sort\t(system:" in r.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["in.txt", "wf.mf"]


def test_an_input_outside_the_workflow_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "x.txt").write_text("x\n")
    (tmp_path / "w" / "wf.mf").write_text("y.txt: ../x.txt\n\tcat ../x.txt > y.txt\n")
    r = _treadle("link", "wf.mf", "-o", "out", cwd=tmp_path / "w", path="/usr/bin:/bin")
    assert r.returncode == 1 and "cannot copy ../x.txt" in r.stderr
    assert not (tmp_path / "w" / "out").exists()
