"""--docker with real podman (Debian's docker-compatible CLI) on an image built here from busybox-static.

``make system-packages`` installs podman, runc and busybox-static. The
containers.conf written here holds the two settings these machines need:
runc, because crun refuses cgroups in hybrid mode, and rlimits no higher than
the current ones (the machines drop CAP_SYS_RESOURCE).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.containers,
    pytest.mark.skipif(shutil.which("podman") is None or not os.path.exists("/bin/busybox"),
                       reason="needs podman and busybox-static (make system-packages)"),
]

CONF = '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]\n[engine]\nruntime = "runc"\n'
TOOLS = ("sh", "cat", "tr", "echo", "ls", "env", "grep")
WORKFLOW = (
    "MSG=inside\n"
    "export MSG\n"
    "up.txt: in.txt\n"
    "\ttr a-z A-Z < in.txt > up.txt\n"
    "where.txt: up.txt\n"
    "\tcat up.txt > where.txt; ls /bin/busybox >> where.txt; env | grep ^MSG= >> where.txt\n"
)


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory) -> dict[str, str]:
    """An environment whose podman runs here (the containers.conf above)."""
    d = tmp_path_factory.mktemp("podman")
    (d / "containers.conf").write_text(CONF)
    return {**os.environ, "CONTAINERS_CONF": str(d / "containers.conf"), "TREADLE_DOCKER": "podman"}


def _image(env: dict[str, str], root: Path, tag: str, marker: str) -> str:
    """``localhost/treadle-test:TAG``: busybox and its tools, plus /marker holding ``marker``."""
    (root / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for tool in TOOLS:
        (root / "bin" / tool).symlink_to("busybox")
    (root / "marker").write_text(marker)
    subprocess.run(["tar", "-C", str(root), "-cf", str(root) + ".tar", "."], check=True)
    name = f"localhost/treadle-test:{tag}"
    subprocess.run(["podman", "import", "-q", str(root) + ".tar", name], env=env, check=True, capture_output=True)
    return name


@pytest.fixture(scope="module")
def images(podman_env, tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    names = [_image(podman_env, d / "a", "a", "A\n"), _image(podman_env, d / "b", "b", "B\n")]
    yield names
    subprocess.run(["podman", "rmi", "-f", *names], env=podman_env, capture_output=True, check=False)


def _run(wd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "treadle", "run", *args, "wf.mf"], cwd=wd, env=env,
                          capture_output=True, text=True, timeout=180)


def _workdir(path: Path, workflow: str = WORKFLOW) -> Path:
    path.mkdir()
    (path / "wf.mf").write_text(workflow)
    (path / "in.txt").write_text("hello\n")
    return path


def test_rules_run_in_the_container_and_outputs_come_back(tmp_path, podman_env, images):
    wd = _workdir(tmp_path / "wf")
    r = _run(wd, podman_env, "--docker", images[0])
    assert r.returncode == 0, r.stderr
    assert (wd / "where.txt").read_text() == "HELLO\n/bin/busybox\nMSG=inside\n"
    left = subprocess.run(["podman", "ps", "-aq", "--filter", f"ancestor={images[0]}"], env=podman_env,
                          capture_output=True, text=True, check=True)
    assert left.stdout.strip() == ""  # --rm: no container is left behind


def test_a_changed_image_reruns_the_rules(tmp_path, podman_env, images):
    wd = _workdir(tmp_path / "wf", "m.txt:\n\tcat /marker > m.txt\n")
    assert _run(wd, podman_env, "--docker", images[0]).returncode == 0
    assert (wd / "m.txt").read_text() == "A\n"
    r = _run(wd, podman_env, "--docker", images[0])
    assert "submitting job" not in r.stdout
    r = _run(wd, podman_env, "--docker", images[1], "--docker-cmd", "podman")
    assert r.returncode == 0, r.stderr
    assert (wd / "m.txt").read_text() == "B\n"


def test_docker_tar_is_loaded_before_the_run(tmp_path, podman_env, images):
    wd = _workdir(tmp_path / "wf", "m.txt:\n\tcat /marker > m.txt\n")
    tar = tmp_path / "saved.tar"
    subprocess.run(["podman", "save", "-q", "-o", str(tar), images[1]], env=podman_env, check=True)
    subprocess.run(["podman", "rmi", "-f", images[1]], env=podman_env, check=True, capture_output=True)
    r = _run(wd, podman_env, "--docker", images[1], "--docker-tar", str(tar))
    assert r.returncode == 0, r.stderr
    assert "loading container image from" in r.stdout
    assert (wd / "m.txt").read_text() == "B\n"


def test_a_tar_that_does_not_load_is_one_line(tmp_path, podman_env, images):
    wd = _workdir(tmp_path / "wf")
    (tmp_path / "bad.tar").write_text("not a tar")
    r = _run(wd, podman_env, "--docker", images[0], "--docker-tar", str(tmp_path / "bad.tar"))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "podman load failed" in r.stderr and not (wd / "up.txt").exists()


def test_docker_opt_reaches_podman_run(tmp_path, podman_env, images):
    wd = _workdir(tmp_path / "wf", "e.txt:\n\tenv | grep ^FROM_OPT= > e.txt\n")
    r = _run(wd, podman_env, "--docker", images[0], "--docker-opt", "-e FROM_OPT=yes")
    assert r.returncode == 0, r.stderr
    assert (wd / "e.txt").read_text() == "FROM_OPT=yes\n"
