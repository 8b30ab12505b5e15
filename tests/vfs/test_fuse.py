"""Mode fuse over real FUSE mounts: what programs see, passthrough or not, and what is left after.

Each run is a real ``run_fuse`` in a process of its own (it enters a mount namespace for good),
started by ``_DRIVER`` with a real repository, cache and namespace; the programs are the
system's (``ls``, ``find``, ``sha256sum``, ``cp``, ``python3``). The oracle for what a program
should see is a plain copy of the same bytes behind a read-only bind mount, in a private mount
namespace of ``unshare``'s (docs/vfs.md, "The correctness criterion").
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from tests._wait import alive, wait_for

from treadle.repo.context import init_repository, open_context
from treadle.repo.ingest import ingest
from treadle.vfs.fusemode import fuse_available, passthrough_available

pytestmark = [pytest.mark.vfs]

_FUSE, _FUSE_WHY = fuse_available()
if not _FUSE:
    pytestmark.append(pytest.mark.skip(reason=f"mode fuse does not work here: {_FUSE_WHY}"))

# One run of mode fuse, as the launcher makes it, with passthrough chosen by the test.
_DRIVER = """
import json, os, sys
from pathlib import Path
from treadle.errors import VfsError
from treadle.vfs.cache import Cache
from treadle.vfs.fusemode import run_fuse
from treadle.vfs.namespace import Namespace
from treadle.vfs.sources import open_source
config = json.loads(sys.argv[1])
sources = [(m, open_source(s, token_file=None, timeout=config["timeout"])) for m, s in config["mounts"]]
namespace = Namespace(sources, Cache(Path(config["cache"]), None), timeout=config["timeout"])
try:
    status = run_fuse(namespace, sys.argv[2:], dict(os.environ), passthrough=config["passthrough"],
                      report=lambda line: print("treadle vfs:", line, file=sys.stderr, flush=True))
except VfsError as e:
    print("treadle vfs:", e, file=sys.stderr)
    status = 125
Path(config["stats"]).write_text(json.dumps(namespace.stats))
sys.exit(status)
"""


def _driver(tmp_path: Path, mounts: list[tuple[Path | str, Path | str]], argv: list[str],
            passthrough: bool | None = None, timeout: float = 10.0) -> list[str]:
    config = {"mounts": [[str(m), str(s)] for m, s in mounts], "cache": str(tmp_path / "cache"),
              "passthrough": passthrough, "stats": str(tmp_path / "stats.json"),
              "timeout": timeout}
    return [sys.executable, "-c", _DRIVER, json.dumps(config), *argv]


def _run(tmp_path: Path, mounts: list[tuple[Path | str, Path | str]], argv: list[str],
         passthrough: bool | None = None, timeout: float = 10.0, prefix: tuple[str, ...] = (),
         env: dict[str, str] | None = None
         ) -> tuple[subprocess.CompletedProcess[str], dict[str, int]]:
    done = subprocess.run([*prefix, *_driver(tmp_path, mounts, argv, passthrough, timeout)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    assert (tmp_path / "stats.json").exists(), done.stderr
    return done, json.loads((tmp_path / "stats.json").read_text())


def _fuse_mounts() -> list[str]:
    """Mount points of FUSE file systems in this (the host's) mount namespace."""
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if " - fuse" in line]


# A program that hashes every file under ROOT/fileid it can list, through plain reads and
# through mmap: both must give the repository's bytes.
_HASH_ALL = """
import hashlib, json, mmap, os, sys
root = sys.argv[1]
out = {}
for name in sorted(os.listdir(root + "/fileid"), key=lambda n: (len(n), n)):
    if name in (".", ".."):
        continue
    with open(f"{root}/fileid/{name}", "rb") as f:
        data = f.read()
        mapped = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        assert mapped[:] == data, name
    out[name] = hashlib.sha256(data).hexdigest()
print(json.dumps(out))
"""


@pytest.mark.parametrize("how", ["passthrough", "daemon", "user namespace"])
def test_bytes_are_the_same_with_passthrough_or_daemon_reads(filled_repo, tmp_path, how):
    """Passthrough on (root), forced off, and refused (root in a user namespace: the first
    BACKING_OPEN fails with EPERM and that open still succeeds, served by the daemon)."""
    if how == "passthrough":
        ok, why = passthrough_available()
        if not ok:
            pytest.skip(why)
    mount = tmp_path / "m"
    mount.mkdir()
    done, stats = _run(tmp_path, [(mount, filled_repo.path)],
                       ["python3", "-c", _HASH_ALL, str(mount)],
                       passthrough={"passthrough": True, "daemon": False}.get(how),
                       prefix=("unshare", "-Ur") if how == "user namespace" else ())
    assert done.returncode == 0, done.stderr
    expected = {str(fileid): hashlib.sha256(data).hexdigest()
                for fileid, (data, _ext) in filled_repo.files.items()}
    assert json.loads(done.stdout) == expected
    if how == "passthrough":
        assert stats["passthrough_opens"] == len(expected) and stats["daemon_reads"] == 0
    else:
        assert stats["passthrough_opens"] == 0 and stats["daemon_reads"] > 0
    if how == "user namespace":
        assert "passthrough refused (Operation not permitted)" in done.stderr
    assert str(mount) not in _fuse_mounts()


# What several programs print about ROOT, with nothing that differs between two copies of the
# same bytes (times, inode numbers, block counts, link counts of directories).
_PROGRAMS = r"""
set -u
cd "$ROOT"
echo "== ls -l"; ls -l fileid table/images | awk 'NF > 2 {print $1, $5, $NF} NF == 1'
echo "== find"; find fileid table -type f | sort; find fileid -type f -size +3k | sort
echo "== sha256sum"; sha256sum fileid/* table/images/*
echo "== cp"; cp -r table/images "$OUT/images" && (cd "$OUT/images" && sha256sum * && ls -l | awk 'NR > 1 {print $1, $5}')
echo "== python3"; python3 - <<'EOF'
import errno, os, stat
def attempt(what, call):
    try:
        call()
        print(what, "ok")
    except OSError as e:
        print(what, errno.errorcode[e.errno])
for name in ("fileid/1", "fileid/2", "table/images/3.jpg", "fileid/99999", "table/images/1.jpg",
             "fileid/1/x", "table/nothing"):
    try:
        st = os.stat(name)
        print(name, stat.filemode(st.st_mode), st.st_size, stat.S_ISREG(st.st_mode))
        with open(name, "rb") as f:
            print(name, len(f.read()))
    except OSError as e:
        print(name, errno.errorcode[e.errno])
attempt("open for writing", lambda: open("fileid/1", "r+b"))
attempt("open for appending", lambda: open("fileid/1", "ab"))
attempt("create", lambda: open("fileid/new", "wb"))
attempt("truncate", lambda: os.truncate("fileid/1", 0))
attempt("mkdir", lambda: os.mkdir("fileid/d"))
attempt("unlink", lambda: os.unlink("fileid/1"))
attempt("rename", lambda: os.rename("fileid/1", "fileid/2"))
attempt("chmod", lambda: os.chmod("fileid/1", 0o644))
attempt("utime", lambda: os.utime("fileid/1"))
attempt("setxattr", lambda: os.setxattr("fileid/1", "user.x", b"1"))
attempt("symlink", lambda: os.symlink("1", "fileid/link"))
attempt("access W_OK", lambda: os.access("fileid/1", os.W_OK) or os.open("fileid/1", os.O_WRONLY))
print("executable", os.access("fileid/1", os.X_OK), os.access("fileid", os.X_OK))
EOF
"""


def _copy_of(filled, where: Path) -> Path:
    """A plain copy of what the repository shows under fileid/ and table/images/, read-only
    modes, for the oracle."""
    for sub in ("fileid", "table/images"):
        (where / sub).mkdir(parents=True)
    for fileid, (data, ext) in filled.files.items():
        for path in (where / "fileid" / str(fileid), where / "table/images" / f"{fileid}.{ext}"):
            path.write_bytes(data)
            path.chmod(0o444)
    for sub in ("fileid", "table/images", "table", "."):
        (where / sub).chmod(0o555)
    return where


def test_programs_see_what_a_read_only_copy_shows(filled_repo, tmp_path):
    copy = _copy_of(filled_repo, tmp_path / "copy")
    out = tmp_path / "out"
    (out / "oracle").mkdir(parents=True)
    (out / "fuse").mkdir()
    oracle = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         'mount --bind "$ROOT" "$ROOT" && mount -o remount,bind,ro "$ROOT" && sh -c "$SCRIPT"'],
        env={**os.environ, "ROOT": str(copy), "OUT": str(out / "oracle"), "SCRIPT": _PROGRAMS},
        capture_output=True, text=True, timeout=60)
    assert oracle.returncode == 0, oracle.stderr
    mount = tmp_path / "m"
    mount.mkdir()
    done, stats = _run(tmp_path, [(mount, filled_repo.path)], ["sh", "-c", _PROGRAMS],
                       env={"ROOT": str(mount), "OUT": str(out / "fuse")})
    assert done.returncode == 0, done.stderr
    assert done.stdout == oracle.stdout
    assert "fileid/99999 ENOENT" in done.stdout and "mkdir EROFS" in done.stdout
    assert stats["opens"] > 0


def test_names_and_extended_attributes_of_the_tree(filled_repo, tmp_path):
    """What only the repository shows: M's top directories, xattrs, the sha256 and
    ``<N>.<ext>`` look-ups, statfs's read-only flag."""
    mount = tmp_path / "m"
    mount.mkdir()
    fileid, (data, ext) = next(iter(filled_repo.files.items()))

    digest = hashlib.sha256(data).hexdigest()
    script = f"""
import os, errno
m = {str(mount)!r}
print(sorted(os.listdir(m)))
print(os.getxattr(m, "user.treadle.repository").decode())
print(os.getxattr(m + "/fileid/{fileid}", "user.treadle.fileid").decode(),
      os.getxattr(m + "/fileid/{fileid}", "user.treadle.sha256").decode())
print(sorted(os.listxattr(m + "/fileid/{fileid}")))
print(open(m + "/sha256/{digest}", "rb").read() == open(m + "/fileid/{fileid}.{ext}", "rb").read())
print(os.listdir(m + "/sha256"))
try:
    os.getxattr(m + "/fileid/{fileid}", "user.other")
except OSError as e:
    print(errno.errorcode[e.errno])
print(bool(os.statvfs(m).f_flag & os.ST_RDONLY))
"""
    done, _ = _run(tmp_path, [(mount, filled_repo.path)], ["python3", "-c", script])
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "['fileid', 'replica', 'sha256', 'table']", filled_repo.uuid, f"{fileid} {digest}",
        "['user.treadle.fileid', 'user.treadle.sha256']", "True", "[]", "ENODATA", "True"]


@pytest.mark.parametrize("where", ["under tmp", "under /"])
def test_a_missing_mount_point_is_made_inside_the_run_only(filled_repo, tmp_path, where):
    """A tmpfs over the deepest existing ancestor, with its original entries bound back;
    under / the run changes root into it. The host never sees the directory."""
    top = tmp_path / "absent" if where == "under tmp" else Path(f"/treadle-test-{uuid.uuid4().hex}")
    mount = top / "lab"
    (tmp_path / "marker").write_text("still here\n")
    script = (f'cd {tmp_path} && cat marker && ls {top} && ls {mount}/fileid | wc -l && '
              f'sha256sum {mount}/fileid/1 | cut -c1-64 && (mkdir {top}/x 2>&1 || true) && pwd')
    done, _ = _run(tmp_path, [(mount, filled_repo.path)], ["sh", "-c", script])
    assert done.returncode == 0, done.stderr

    lines = done.stdout.splitlines()
    assert lines[:3] == ["still here", "lab", str(len(filled_repo.files) + 0)]
    assert lines[3] == hashlib.sha256(filled_repo.files[1][0]).hexdigest()
    assert "Read-only file system" in lines[4] and lines[5] == str(tmp_path)
    assert not top.exists()


def test_the_service_stopped_gives_eio_never_enoent(filled_repo, tmp_path):
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "treadle", "repo", "serve", str(filled_repo.path),
         "--bind", "127.0.0.1:0", "--no-auth"], stdout=subprocess.PIPE, stderr=log, text=True)
    run = None
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        mount = tmp_path / "m"
        mount.mkdir()
        script = f"""
import errno, os, time
m = {str(mount)!r}
print(len(open(m + "/fileid/1", "rb").read()))
open({str(tmp_path / "ready")!r}, "w").close()
while not os.path.exists({str(tmp_path / "stopped")!r}):
    time.sleep(0.02)
for name in ("fileid/2", "fileid/99999", "table/images/3.jpg"):
    try:
        os.stat(m + "/" + name)
        print(name, "ok")
    except OSError as e:
        print(name, errno.errorcode[e.errno])
"""
        run = subprocess.Popen(_driver(tmp_path, [(mount, url)], ["python3", "-c", script],
                                       timeout=1.0), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        wait_for(lambda: (tmp_path / "ready").exists() or run.poll() is not None,
                 what="the command's first read")
        server.terminate()
        server.wait(30)
        (tmp_path / "stopped").touch()
        out, err = run.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if run is not None and run.poll() is None:
            run.kill()
            run.wait()
        log.close()
    assert run.returncode == 0, err
    assert out.splitlines() == [str(len(filled_repo.files[1][0])), "fileid/2 EIO",
                                "fileid/99999 EIO", "table/images/3.jpg EIO"]
    assert "unreachable" in err or "refused" in err.lower()


@pytest.mark.parametrize("where", ["existing", "missing"])
def test_no_mount_is_left_after_the_launcher_is_killed(filled_repo, tmp_path, where):
    mount = tmp_path / "m" if where == "existing" else tmp_path / "absent" / "m"
    if where == "existing":
        mount.mkdir()
    script = (f"import os, time; os.listdir({str(mount)!r}); "
              f"print(os.getpid(), flush=True); time.sleep(600)")
    launcher = subprocess.Popen(_driver(tmp_path, [(mount, filled_repo.path)],
                                        ["python3", "-c", script]), stdout=subprocess.PIPE, text=True)
    try:
        assert launcher.stdout is not None
        command = int(launcher.stdout.readline())  # once it has listed the mount point
        assert str(mount) not in _fuse_mounts()  # the mount lives in the run's namespace only
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(30)
        wait_for(lambda: not alive(command), what="the command to die with its launcher")
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert str(mount) not in _fuse_mounts()
    assert not [m for m in _fuse_mounts() if m.startswith(str(tmp_path))]
    assert mount.exists() == (where == "existing")
    if where == "existing":
        assert os.listdir(mount) == []


def test_the_command_exit_status_passes_through(filled_repo, tmp_path):
    mount = tmp_path / "m"
    mount.mkdir()
    done, _ = _run(tmp_path, [(mount, filled_repo.path)], ["sh", "-c", "exit 7"])
    assert done.returncode == 7, done.stderr
    done, _ = _run(tmp_path, [(mount, filled_repo.path)], ["sh", "-c", "kill -TERM $$"])
    assert done.returncode == 128 + signal.SIGTERM
    done, _ = _run(tmp_path, [(mount, filled_repo.path)], ["no-such-command-h3"])
    assert done.returncode == 127


def test_a_mount_point_that_is_a_file_is_refused(filled_repo, tmp_path):
    mount = tmp_path / "file"
    mount.write_text("x")
    done, _ = _run(tmp_path, [(mount, filled_repo.path)], ["true"])
    assert done.returncode == 125
    assert "is not a directory" in done.stderr


# --- A listing of 20,000 fileids, asked of the source in pages -------------------------------

MANY = 20_000


@pytest.fixture(scope="module")
def many_files(tmp_path_factory) -> Path:
    """A repository whose files table has MANY rows: one ingested file, the rest inserted
    directly (an ingest of 20,000 files takes ~20 s; the listing only needs the rows)."""
    where = tmp_path_factory.mktemp("many")
    (where / "one.dat").write_bytes(b"tiny\n")
    repo = where / "many.repo"
    init_repository(repo, stores=[("a", "dir:stores/a")]).close()
    with open_context(repo, write=True) as ctx:
        ingest(ctx, None, table="tiny", files=[str(where / "one.dat")])
    with sqlite3.connect(repo / "metadata.db") as db:
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO files (checksum, size, extension, media_type, state, created_at, "
            "ingest_id, source) SELECT checksum, size, extension, media_type, state, created_at, "
            "ingest_id, source || '.' || i FROM files, n WHERE fileid = 1", (MANY,))
    return repo


@pytest.mark.slow
def test_a_listing_of_20000_fileids_comes_in_pages(many_files, tmp_path):
    mount = tmp_path / "m"
    mount.mkdir()
    script = (f"import os; names = os.listdir({str(mount / 'fileid')!r}); "
              f"print(len(names), min(map(int, names)), max(map(int, names))); "
              f"print(len(set(names)))")
    done, stats = _run(tmp_path, [(mount, many_files)], ["python3", "-c", script])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(MANY), "1", str(MANY), str(MANY)]
    done, _ = _run(tmp_path, [(mount, many_files)],
                   ["sh", "-c", f"ls -f {mount}/fileid | wc -l; find {mount}/fileid -type f | wc -l; "
                                f"cat {mount}/fileid/{MANY}"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(MANY + 2), str(MANY), "tiny"]


def test_a_signal_interrupts_a_waiting_request(tmp_path):
    """A look-up waiting on an unreachable service is cancelled by INTERRUPT when the caller
    gets a signal: the program's handler runs at once instead of after the retries."""
    with socket.socket() as probe:  # a port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    mount = tmp_path / "m"
    mount.mkdir()
    script = f"""
import os, signal, time
class Alarm(Exception):
    pass
def ring(signum, frame):
    raise Alarm()
signal.signal(signal.SIGALRM, ring)
signal.setitimer(signal.ITIMER_REAL, 0.3)
start = time.monotonic()
try:
    os.stat({str(mount / "fileid" / "2")!r})
    print("answered")
except Alarm:
    print("interrupted", time.monotonic() - start < 2.0)
"""
    done, _ = _run(tmp_path, [(mount, url)], ["python3", "-c", script], timeout=4.0)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["interrupted", "True"]


# Inside a mount namespace of its own: a repository copy on an overlayfs (over1, as a
# container's root), and one on an overlayfs stacked on that (over2), so its files are two
# filesystems deep and the kernel refuses them as backing files (ELOOP) at our passthrough stack
# depth of 2. Everything here dies with the namespace.
_DEEP_COPY = """
set -e
mount -t tmpfs treadle-test "$DEEP"
cd "$DEEP"
mkdir lower upper1 work1 over1 upper2 work2 over2
mount -t overlay treadle-test -o "lowerdir=$DEEP/lower,upperdir=$DEEP/upper1,workdir=$DEEP/work1" over1
mkdir over1/lower
mount -t overlay treadle-test -o "lowerdir=$DEEP/over1/lower,upperdir=$DEEP/upper2,workdir=$DEEP/work2" over2
cp -a "$REPO" over1/repo
cp -a "$REPO" over2/repo
cd /
exec "$@"
"""

def _deep(tmp_path: Path, filled) -> tuple[Path, tuple[str, ...], dict[str, str]]:
    """Where ``_DEEP_COPY`` puts its overlays, and the ``_run`` prefix and env that make them."""
    deep = tmp_path / "deep"
    deep.mkdir()
    return (deep, ("unshare", "-m", "--propagation", "private", "sh", "-c", _DEEP_COPY, "sh"),
            {"DEEP": str(deep), "REPO": str(filled.path)})


def test_passthrough_takes_a_backing_file_on_an_overlayfs(filled_repo, tmp_path):
    """At stack depth 1 the kernel would refuse these with ELOOP; at 2 it serves them."""
    ok, why = passthrough_available()
    if not ok:
        pytest.skip(why)
    deep, prefix, env = _deep(tmp_path, filled_repo)
    mount = tmp_path / "m"
    mount.mkdir()
    done, stats = _run(tmp_path, [(mount, deep / "over1" / "repo")],
                       ["python3", "-c", _HASH_ALL, str(mount)], passthrough=True,
                       prefix=prefix, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {str(fileid): hashlib.sha256(data).hexdigest()
                                       for fileid, (data, _ext) in filled_repo.files.items()}
    assert stats["passthrough_opens"] == len(filled_repo.files) and stats["daemon_reads"] == 0


# Opens A twice (passthrough: one backing id), then B (its backing file refused: daemon reads
# from then on), then A and B again while their first handles are still open; prints each
# handle's sha256.
_REOPEN = """
import hashlib, sys
a, b = sys.argv[1], sys.argv[2]
handles = [open(a, "rb"), open(a, "rb"), open(b, "rb"), open(a, "rb"), open(b, "rb")]
for f in handles:
    print(hashlib.sha256(f.read()).hexdigest())
"""


def test_a_reopen_keeps_the_inode_read_mode_after_the_switch(filled_repo, tmp_path):
    """The kernel fails with EIO an open answered in one read mode while the inode has handles
    in the other, and takes one backing file per inode: an inode in passthrough shares its
    backing id with every new handle, even after a refused BACKING_OPEN (here ELOOP, a backing
    file too deep) has switched the connection to daemon reads; an inode served by the daemon
    stays so."""
    ok, why = passthrough_available()
    if not ok:
        pytest.skip(why)
    deep, prefix, env = _deep(tmp_path, filled_repo)
    near, far = tmp_path / "a", tmp_path / "b"
    for where in (near, far):
        where.mkdir()
    done, stats = _run(tmp_path, [(near, filled_repo.path), (far, deep / "over2" / "repo")],
                       ["python3", "-c", _REOPEN, str(near / "fileid" / "1"),
                        str(far / "fileid" / "2")], prefix=prefix, env=env)
    assert done.returncode == 0, done.stderr
    a, b = (hashlib.sha256(filled_repo.files[i][0]).hexdigest() for i in (1, 2))
    assert done.stdout.split() == [a, a, b, a, b]
    assert "passthrough refused (Too many levels of symbolic links)" in done.stderr
    assert stats["passthrough_opens"] == 3 and stats["daemon_reads"] > 0
    assert not [m for m in _fuse_mounts() if m.startswith(str(tmp_path))]
