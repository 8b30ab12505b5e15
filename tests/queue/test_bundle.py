"""The worker zipapp runs alone: no treadle, no third-party packages (spec section 2.1a)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from treadle.queue import bundle

PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


@pytest.fixture
def pyz(tmp_path: Path) -> Path:
    out = tmp_path / "treadle-worker.pyz"
    done = subprocess.run([sys.executable, "-m", "treadle", "worker-bundle", "-o", str(out)],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return out


def test_bundle_holds_exactly_the_worker_modules(pyz: Path) -> None:
    names = sorted(zipfile.ZipFile(pyz).namelist())
    assert names == sorted(["__main__.py", "treadle/__init__.py", "treadle/queue/__init__.py"]
                           + [f"treadle/queue/{m}.py" for m in bundle.WORKER_MODULES])


def test_worker_modules_import_only_the_standard_library() -> None:
    source = Path(bundle.__file__).parent
    for name in bundle.WORKER_MODULES:
        tree = ast.parse((source / f"{name}.py").read_text(), feature_version=(3, 8))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.module in (None, *bundle.WORKER_MODULES), (name, node.module)
                continue
            if isinstance(node, ast.ImportFrom):
                roots = [(node.module or "").split(".")[0]]
            elif isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            else:
                continue
            for root in roots:
                assert root in sys.stdlib_module_names or root == "__future__", (name, root)


def test_bundle_imports_nothing_outside_stdlib_at_run_time(pyz: Path, tmp_path: Path) -> None:
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import treadle.queue.worker; "
             "print('\\n'.join(sorted(m.split('.')[0] for m in sys.modules)))")
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run([PYTHON, "-I", "-c", probe, str(pyz)], cwd=empty,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    baseline = subprocess.run([PYTHON, "-I", "-c", probe.replace(
        "import treadle.queue.worker;", ""), str(pyz)], cwd=empty, capture_output=True,
        text=True, timeout=60).stdout.split()  # what site.py loads anyway (.pth hooks)
    for root in set(done.stdout.split()) - set(baseline) - {"treadle"}:
        assert root in sys.stdlib_module_names, root
    loaded = subprocess.run([PYTHON, "-I", "-c", probe.replace(
        "import treadle.queue.worker;", "import treadle.queue.worker; print(treadle.__file__);"),
        str(pyz)], cwd=empty, capture_output=True, text=True, timeout=60)
    assert str(pyz) in loaded.stdout  # the bundle's copy, not the installed package


def oldest_python() -> str | None:
    """A python3.8 (the oldest version the worker supports): on PATH, or pyenv's."""
    candidates = [shutil.which("python3.8")]
    if shutil.which("pyenv"):
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
        if root:
            candidates += sorted(str(p) for p in Path(root).glob("versions/3.8*/bin/python3.8"))
    for found in candidates:
        if found and subprocess.run([found, "-c", "pass"], capture_output=True).returncode == 0:
            return found
    return None


PYTHON38 = oldest_python()
PYTHONS = [pytest.param(PYTHON, id="python3"), pytest.param(
    PYTHON38, id="python3.8",
    marks=pytest.mark.skipif(PYTHON38 is None, reason="no python3.8 found"))]


@pytest.mark.reference
@pytest.mark.parametrize("python", PYTHONS)
def test_bundle_serves_the_reference_manager_from_an_empty_directory(
        python: str, pyz: Path, tmp_path: Path, start_makeflow) -> None:
    wf = tmp_path / "wf"
    wf.mkdir()
    (wf / "in.txt").write_text("bundle input\n")
    (wf / "Makeflow").write_text("out.txt: in.txt\n\ttr a-z A-Z < in.txt > out.txt\n"
                                 "copy.txt: in.txt\n\tcp in.txt copy.txt\n")  # shell-free
    mf, port = start_makeflow("Makeflow", cwd=wf)
    empty = tmp_path / "empty"
    empty.mkdir()
    worker = subprocess.Popen([python, "-I", str(pyz), "--single-shot", "-t", "30",
                               "--cores", "1", "--memory", "500", "--disk", "500",
                               "-s", str(tmp_path), "127.0.0.1", str(port)], cwd=empty,
                              stderr=subprocess.PIPE)
    try:
        out, _ = mf.communicate(timeout=60)
        assert (wf / "out.txt").read_text() == "BUNDLE INPUT\n", out.decode()
        assert (wf / "copy.txt").read_text() == "bundle input\n"
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert list(empty.iterdir()) == []


def test_unwritable_output_is_a_one_line_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "treadle", "worker-bundle", "-o",
                           str(tmp_path / "missing-dir" / "w.pyz")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "cannot write" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


SMOKE = r"""
import sys
sys.path.insert(0, sys.argv[1])
from treadle.queue import protocol as p
m, w = p.ManagerConnection(), p.WorkerConnection()
sent = [p.Put("f", 3), p.Data(b"abc"), p.EndOfData(), p.Dir("d"), p.Symlink("l", b"f\0"), p.End(),
        p.Task(1, "echo hi", cores=1, env=("A=1",), inputs=(p.TaskFile("f", "in", 1),)),
        p.Get("f"), p.SendResults(), p.Check()]
w.receive_data(b"".join(m.send(e) for e in sent))
assert list(w.events()) == sent, "manager to worker"
back = [p.Greeting("h", "Linux", "x86_64", "8.0.0"), p.FileReply("f", 1), p.Data(b"x"),
        p.EndOfData(), p.End(), p.Result(0, 0, 0, 5, 1), p.EndOfData(), p.End()]
m.receive_data(b"".join(w.send(e) for e in back))
assert list(m.events()) == back, "worker to manager"
print("ok")
"""


@pytest.mark.parametrize("python", PYTHONS)
def test_protocol_round_trip_on_each_python(python: str, pyz: Path, tmp_path: Path) -> None:
    done = subprocess.run([python, "-I", "-c", SMOKE, str(pyz)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
