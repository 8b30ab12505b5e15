"""Packaging: the core installs with click and rich only, and says which extra a feature needs.

One real ``pip install`` of a copy of the tree into a fresh venv (no system
site-packages, so the numpy and SQLAlchemy of the test venv are out of sight):
the copy is left without ``build/``, numpy and SQLAlchemy are not installed,
and the features that need them stop with one line naming the extra.
"""

from __future__ import annotations

import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What a wheel build reads: the package, its metadata, its readme and licence.
TREE = ("src/treadle", "pyproject.toml", "README.md", "LICENSE")


@pytest.fixture(scope="module")
def core_install(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(copy of the tree after ``pip install`` of it, the venv's bin/) with no extras."""
    base = tmp_path_factory.mktemp("core")
    tree = base / "tree"
    for name in TREE:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            tree.mkdir(exist_ok=True)
            shutil.copy2(src, tree / name)
    venv.create(base / "venv", with_pip=True, system_site_packages=False)
    bin_dir = base / "venv" / "bin"
    subprocess.run([bin_dir / "python", "-m", "pip", "install", "--quiet", str(tree)],
                   check=True, cwd=base)
    return tree, bin_dir


def _has(bin_dir: Path, module: str) -> bool:
    probe = subprocess.run([bin_dir / "python", "-c", f"import {module}"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
def test_core_install_leaves_no_build_dir_and_pulls_no_extras(core_install: tuple[Path, Path]) -> None:
    tree, bin_dir = core_install
    assert not (tree / "build").exists()
    assert not list(tree.rglob("*.egg-info"))
    assert _has(bin_dir, "click") and _has(bin_dir, "rich")
    assert not _has(bin_dir, "numpy")
    assert not _has(bin_dir, "sqlalchemy")
    assert not _has(bin_dir, "psutil")


@pytest.mark.slow
def test_npy_output_without_numpy_names_the_extra(core_install: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    _, bin_dir = core_install
    (tmp_path / "x").write_bytes(b"\x0f")
    (tmp_path / "set.list").write_text("x\n")
    done = subprocess.run([bin_dir / "treadle", "allpairs", "set.list", "set.list", "BITWISE",
                           "-o", "m.npy"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr == "treadle: this needs numpy: pip install 'treadle[allpairs]'\n"
    assert not (tmp_path / "m.npy").exists()


@pytest.mark.slow
def test_text_output_works_without_numpy(core_install: tuple[Path, Path], tmp_path: Path) -> None:
    _, bin_dir = core_install
    (tmp_path / "x").write_bytes(b"\x0f")
    (tmp_path / "set.list").write_text("x\n")
    done = subprocess.run([bin_dir / "treadle", "allpairs", "set.list", "set.list", "BITWISE",
                           "-o", "m.txt"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "m.txt").read_text() == "x\tx\t0\n"


@pytest.mark.slow
def test_sql_dataset_without_sqlalchemy_names_the_extra(core_install: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    _, bin_dir = core_install
    (tmp_path / "script.py").write_text("db = SQLDataSet('db', 'biometrics', 'irises')\n")
    done = subprocess.run([bin_dir / "treadle", "weave", "script.py"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].endswith(
        "this needs SQLAlchemy: pip install 'treadle[sql]'")
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr

