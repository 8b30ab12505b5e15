"""An unmodified ImageMagick reads a JPEG through a repository path, in both modes, and makes
the same thumbnail as from a copy exported with ``treadle repo get`` (docs/vfs.md).

``/usr/bin/convert`` is Debian's ImageMagick (``make system-packages`` installs it); the output is
PPM, which carries no time stamps, so equal bytes mean an equal picture.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vfs

CONVERT = Path("/usr/bin/convert")


def _imagemagick() -> bool:
    if not CONVERT.exists():
        return False
    done = subprocess.run([str(CONVERT), "-version"], capture_output=True, text=True)
    return done.returncode == 0 and "ImageMagick" in done.stdout


needs_imagemagick = pytest.mark.skipif(not _imagemagick(),
                                       reason="ImageMagick is not installed (Debian imagemagick)")


def treadle(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "treadle", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def jpeg_repo(tmp_path: Path) -> tuple[Path, int]:
    """A repository holding one JPEG made by ImageMagick itself; (repository, its fileid)."""
    subprocess.run([str(CONVERT), "-size", "96x64", "gradient:red-blue", "-swirl", "90",
                    str(tmp_path / "iris.jpg")], check=True)
    with (tmp_path / "images.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["path", "recording"], ["iris.jpg", "r1"]])
    assert treadle("repo", "init", "images.repo", cwd=tmp_path).returncode == 0
    done = treadle("repo", "ingest", "images.repo", "images.csv", "--table", "images", "--key",
                   "recording", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return tmp_path / "images.repo", int(done.stdout.split('"fileids": [')[1].split("]")[0])


@needs_imagemagick
@pytest.mark.parametrize("mode", ["fuse", "trace"])
def test_convert_makes_the_same_thumbnail_as_from_an_exported_copy(
        jpeg_repo: tuple[Path, int], tmp_path: Path, mode: str) -> None:
    repo, fileid = jpeg_repo
    exported = treadle("repo", "get", str(repo), str(fileid), "-o", "exported", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    thumb = [str(CONVERT), "-resize", "24x16", "-strip"]
    subprocess.run([*thumb, f"exported/{fileid}.jpg", "expected.ppm"], cwd=tmp_path, check=True)
    run = treadle("vfs", "run", "--mode", mode, "--cache", str(tmp_path / "cache"),
                  "--mount", f"/bxgrid={repo}", "--",
                  *thumb, f"/bxgrid/fileid/{fileid}", "thumb.ppm", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "thumb.ppm").read_bytes() == (tmp_path / "expected.ppm").read_bytes()
    identify = treadle("vfs", "run", "--mode", mode, "--cache", str(tmp_path / "cache"),
                       "--mount", f"/bxgrid={repo}", "--", "/usr/bin/identify", "-format", "%m %w %h",
                       f"/bxgrid/table/images/{fileid}.jpg", cwd=tmp_path)
    assert (identify.returncode, identify.stdout) == (0, "JPEG 96 64"), identify.stderr
