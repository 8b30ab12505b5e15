"""The tree of docs/vfs.md over real repositories: a local one and the same one behind its service.

Both sources must give the same names, attributes, xattrs and bytes; each failure of docs/vfs.md
("Failures") gives its errno: ENOENT only for what the source said is absent, EIO for what
could not be had, never wrong bytes.
"""

from __future__ import annotations

import errno
import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from tests._wait import wait_for
from tests.vfs.conftest import Filled

from treadle.repo import fetch
from treadle.repo.checksums import object_relpath
from treadle.repo.context import RepoContext, init_repository, open_context
from treadle.repo.ingest import ingest
from treadle.repo.schema import replicas
from treadle.vfs import namespace
from treadle.vfs.cache import Cache
from treadle.vfs.namespace import DIR_MODE, FILE_MODE, ROOT_INO, Attr, Namespace
from treadle.vfs.sources import open_source

pytestmark = pytest.mark.vfs


def _namespace(spec: str, cache_dir: Path, lines: list[str], mount: str = "/bxgrid",
               verify: str = "auto", timeout: float = 5.0) -> Namespace:
    source = open_source(spec, token_file=None, timeout=timeout)
    return Namespace([(mount, source)], Cache(cache_dir, None), verify=verify, timeout=timeout,
                     report=lines.append)


@pytest.fixture(params=["local", "http"])
def space(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Namespace, Filled]]:
    """A namespace over the filled repository, read directly or through its service."""
    filled, url = request.getfixturevalue("served_repo")
    spec = str(filled.path) if request.param == "local" else url
    ns = _namespace(spec, tmp_path / "cache", [])
    yield ns, filled
    ns.close()


def _errno(call: object, *args: object) -> int:
    assert callable(call)
    with pytest.raises(OSError) as info:
        call(*args)
    return info.value.errno or 0


def _walk(ns: Namespace, attr: Attr, path: str, out: dict[str, tuple[str, int, int]]) -> None:
    """Every name below ``attr`` (a full listing), with kind, mode and size."""
    for name, child, _ in ns.listdir(attr.ino, 0, 100_000):
        if name in (".", ".."):
            continue
        out[f"{path}/{name}"] = (child.kind, child.mode, child.size)
        if child.kind == "dir":
            _walk(ns, child, f"{path}/{name}", out)


def test_tree_bytes_and_xattrs(space: tuple[Namespace, Filled]) -> None:
    ns, filled = space
    root = ns.resolve("/bxgrid")
    assert (root.kind, root.mode) == ("dir", DIR_MODE)
    assert ns.getxattr(root.ino, "user.treadle.repository") == filled.uuid.encode()
    for fileid, (data, ext) in filled.files.items():
        attr = ns.resolve(f"/bxgrid/fileid/{fileid}")
        assert (attr.kind, attr.mode, attr.size, attr.nlink) == ("file", FILE_MODE, len(data), 1)
        assert ns.resolve(f"/bxgrid/fileid/{fileid}.{ext}").ino == attr.ino
        assert ns.resolve(f"/bxgrid/table/images/{fileid}.{ext}").ino == attr.ino
        assert ns.open_file(attr.ino).read_bytes() == data
        digest = hashlib.sha256(data).hexdigest()
        assert ns.getxattr(attr.ino, "user.treadle.sha256") == digest.encode()
        assert ns.getxattr(attr.ino, "user.treadle.fileid") == str(fileid).encode()
        blob = ns.resolve(f"/bxgrid/sha256/{digest}")
        assert blob.size == len(data) and ns.open_file(blob.ino).read_bytes() == data
    names = [n for n, _, _ in ns.listdir(ns.resolve("/bxgrid/fileid").ino, 0, 1000)]
    assert names == [".", "..", *map(str, sorted(filled.files))]
    assert _errno(ns.getxattr, root.ino, "user.other") == errno.ENODATA


def test_local_and_http_show_the_same_tree(served_repo: tuple[Filled, str], tmp_path: Path) -> None:
    filled, url = served_repo
    trees = []
    for spec in (str(filled.path), url):
        ns = _namespace(spec, tmp_path / spec.replace("/", "_"), [])
        tree: dict[str, tuple[str, int, int]] = {}
        _walk(ns, ns.resolve("/bxgrid"), "", tree)
        # the service cannot list its tables yet: walk the one the fixture made by name
        _walk(ns, ns.resolve("/bxgrid/table/images"), "/table/images", tree)
        ns.close()
        tree.pop("/table/images", None)
        trees.append({k: v for k, v in tree.items() if not k.startswith("/replica")})
    assert trees[0] == trees[1]
    assert len([k for k in trees[0] if k.startswith("/fileid/")]) == len(filled.files)


def test_absent_names_are_enoent(space: tuple[Namespace, Filled]) -> None:
    ns, filled = space
    some, (_, ext) = next(iter(filled.files.items()))
    other = "txt" if ext == "jpg" else "jpg"
    for path in ("/bxgrid/fileid/999999", f"/bxgrid/fileid/{some}.{other}", "/bxgrid/fileid/0",
                 f"/bxgrid/fileid/0{some}", "/bxgrid/sha256/" + "0" * 64, "/bxgrid/sha256/xyz",
                 "/bxgrid/table/nosuch", "/bxgrid/table/images/999999.jpg", "/bxgrid/nosuch",
                 "/elsewhere"):
        assert _errno(ns.resolve, path) == errno.ENOENT, path
    assert _errno(ns.resolve, f"/bxgrid/fileid/{some}/x") == errno.ENOTDIR
    assert _errno(ns.open_file, ns.resolve("/bxgrid/fileid").ino) == errno.EISDIR
    assert ns.resolve(f"/bxgrid/fileid/../fileid/./{some}").ino == \
        ns.resolve(f"/bxgrid/fileid/{some}").ino


def test_synthetic_parents_and_stable_inodes(served_repo: tuple[Filled, str],
                                             tmp_path: Path) -> None:
    filled, url = served_repo
    sources = [open_source(str(filled.path), token_file=None, timeout=5),
               open_source(url, token_file=None, timeout=5)]
    ns = Namespace([("/data/nd", sources[0]), ("/data/lab/", sources[1])],
                   Cache(tmp_path / "c", None), report=print)
    assert ns.mounts == ["/data/nd", "/data/lab"]
    top = ns.listdir(ROOT_INO, 0, 10)
    assert [n for n, _, _ in top] == [".", "..", "data"]
    data = ns.lookup(ROOT_INO, "data")
    assert [n for n, _, _ in ns.listdir(data.ino, 0, 10)][2:] == ["lab", "nd"]
    assert ns.resolve("/data/nd").ino == ns.mount_root("/data/nd").ino
    fileid = min(filled.files)
    first = ns.resolve(f"/data/lab/fileid/{fileid}").ino
    assert ns.resolve(f"/data/lab/fileid/{fileid}").ino == first
    assert ns.resolve(f"/data/nd/fileid/{fileid}").ino != first
    assert [n for n, _, _ in ns.listdir(ns.resolve("/data/nd").ino, 0, 10)][2:] == \
        ["fileid", "sha256", "table", "replica"]
    assert [n for n, _, _ in ns.listdir(ns.resolve("/data/lab").ino, 0, 10)][2:] == \
        ["fileid", "sha256", "table"]
    ns.close()


def test_listing_resumes_at_any_cookie(space: tuple[Namespace, Filled]) -> None:
    ns, filled = space
    directory = ns.resolve("/bxgrid/table/images").ino
    names, offset = [], 0
    while page := ns.listdir(directory, offset, 3):
        names += [n for n, _, _ in page]
        offset = page[-1][2]
    expected = [f"{i}.{filled.files[i][1]}" for i in sorted(filled.files)]
    assert names == [".", "..", *expected]


def test_stats_count_fetches_and_hits(served_repo: tuple[Filled, str], tmp_path: Path) -> None:
    filled, url = served_repo
    ns = _namespace(url, tmp_path / "cache", [])
    fileid = min(filled.files)
    ino = ns.resolve(f"/bxgrid/fileid/{fileid}").ino
    ns.open_file(ino)
    ns.open_file(ino)
    size = len(filled.files[fileid][0])
    assert ns.stats["fetches"] == 1 and ns.stats["fetch_bytes"] == size
    assert ns.stats["cache_hits"] == 1 and ns.stats["opens"] == 2
    assert os.stat(ns.open_file(ino)).st_mode & 0o222 == 0
    ns.close()


# -- failures (docs/vfs.md, "Failures") ----------------------------------------------------


def _two_store_repo(where: Path) -> tuple[Path, bytes, int]:
    """A repository keeping each object in two local stores: (its path, the bytes, the fileid)."""
    data = b"the one image\n" * 3000
    (where / "src").mkdir(parents=True)
    (where / "src" / "one.jpg").write_bytes(data)
    repo = where / "two.repo"
    init_repository(repo, stores=[("a", "dir:stores/a"), ("b", "dir:stores/b")],
                    replicas=2).close()
    with open_context(repo, write=True) as ctx:
        result = ingest(ctx, None, table="images", files=[str(where / "src" / "one.jpg")])
    return repo, data, result.fileids[0]


def _corrupt(path: Path, keep_stat: bool = True) -> None:
    """Change a replica's bytes in place; its size and mtime (and inode) stay when asked."""
    before = path.stat()
    path.chmod(0o644)
    with open(path, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))
    path.chmod(before.st_mode & 0o777)
    if keep_stat:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def _replica_states(repo: Path) -> list[str]:
    with open_context(repo) as ctx, ctx.reading() as conn:
        return sorted(conn.execute(select(replicas.c.state)).scalars())


def test_a_corrupt_replica_gives_the_next_one_or_eio(tmp_path: Path) -> None:
    repo, data, fileid = _two_store_repo(tmp_path)
    lines: list[str] = []
    ns = _namespace(str(repo), tmp_path / "cache", lines, verify="always", timeout=1)
    ino = ns.resolve(f"/bxgrid/fileid/{fileid}").ino
    first = ns.open_file(ino)
    ns.close()
    _corrupt(first)  # the stat ingest recorded still matches: only --verify always sees it
    ns = _namespace(str(repo), tmp_path / "cache", lines, verify="always", timeout=1)
    ino = ns.resolve(f"/bxgrid/fileid/{fileid}").ino
    second = ns.open_file(ino)
    assert second != first and second.read_bytes() == data
    assert any("marked SUSPECT" in line for line in lines)
    assert _replica_states(repo) == ["OK", "SUSPECT"]
    ns.close()
    _corrupt(second, keep_stat=False)  # now untrusted, so hashed even with --verify auto
    lines.clear()
    ns = _namespace(str(repo), tmp_path / "cache", lines, timeout=1)
    assert _errno(ns.open_file, ns.resolve(f"/bxgrid/fileid/{fileid}").ino) == errno.EIO
    assert ns.stats["eio"] == 1 and lines
    assert [p for p in (tmp_path / "cache" / "objects").rglob("*") if p.is_file()] == []
    ns.close()


def test_verify_auto_trusts_only_what_fsck_or_ingest_checked(tmp_path: Path) -> None:
    repo, data, fileid = _two_store_repo(tmp_path)
    ns = _namespace(str(repo), tmp_path / "cache", [])
    ino = ns.resolve(f"/bxgrid/fileid/{fileid}").ino
    path = ns.open_file(ino)
    assert ns.stats["bytes_hashed"] == 0  # trusted: used in place unhashed
    ns.close()
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 1000))  # same bytes, another mtime
    ns = _namespace(str(repo), tmp_path / "cache", [])
    ino = ns.resolve(f"/bxgrid/fileid/{fileid}").ino
    assert ns.open_file(ino) == path and ns.open_file(ino) == path
    assert ns.stats["bytes_hashed"] == len(data)  # hashed once per run
    ns.close()
    ns = _namespace(str(repo), tmp_path / "cache", [], verify="always")
    ino = ns.resolve(f"/bxgrid/fileid/{fileid}").ino
    ns.open_file(ino)
    ns.open_file(ino)
    assert ns.stats["bytes_hashed"] == len(data)
    ns.close()


def test_a_service_serving_corrupt_bytes_gives_eio(served_repo: tuple[Filled, str],
                                                   tmp_path: Path) -> None:
    filled, url = served_repo
    fileid = min(filled.files)
    with open_context(filled.path) as ctx:
        checksum = ctx_file_checksum(ctx, fileid)
    _corrupt(filled.path / "stores" / "a" / object_relpath(checksum))
    lines: list[str] = []
    ns = _namespace(url, tmp_path / "cache", lines, timeout=1)
    assert _errno(ns.open_file, ns.resolve(f"/bxgrid/fileid/{fileid}").ino) == errno.EIO
    assert ns.cache.lookup(checksum) is None and lines
    ns.close()


def ctx_file_checksum(ctx: RepoContext, fileid: int) -> str:
    return fetch.file_info(ctx, fileid).checksum


def test_a_missing_store_is_eio_not_enoent(filled_repo: Filled, tmp_path: Path) -> None:
    fileid = min(filled_repo.files)
    lines: list[str] = []
    ns = _namespace(str(filled_repo.path), tmp_path / "cache", lines, timeout=1)
    ino = ns.resolve(f"/bxgrid/fileid/{fileid}").ino
    (filled_repo.path / "stores" / "a").rename(filled_repo.path / "elsewhere")
    assert _errno(ns.open_file, ino) == errno.EIO
    assert lines and all("fileid" not in line or "absent" not in line for line in lines)
    ns.close()


def _stop(server: subprocess.Popen[str]) -> None:
    server.terminate()
    server.wait(30)


def _serve(repo: Path, bind: str) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen([sys.executable, "-m", "treadle", "repo", "serve", str(repo),
                               "--bind", bind, "--no-auth"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert server.stdout is not None
    return server, server.stdout.readline().strip()


def test_a_stopped_service_is_eio_then_fails_fast_then_recovers(filled_repo: Filled,
                                                                 tmp_path: Path) -> None:
    server, url = _serve(filled_repo.path, "127.0.0.1:0")
    lines: list[str] = []
    ns = _namespace(url, tmp_path / "cache", lines, timeout=1)
    try:
        some = sorted(filled_repo.files)
        seen = ns.resolve(f"/bxgrid/fileid/{some[0]}")
        ns.open_file(seen.ino)
        _stop(server)
        assert ns.getattr(seen.ino) == seen  # what was seen still answers
        assert ns.open_file(seen.ino).read_bytes() == filled_repo.files[some[0]][0]
        started = time.monotonic()
        assert _errno(ns.resolve, f"/bxgrid/fileid/{some[1]}") == errno.EIO
        assert time.monotonic() - started >= 1  # retried for --timeout first
        assert len(lines) == 1 and url in lines[0]
        started = time.monotonic()
        assert _errno(ns.resolve, f"/bxgrid/fileid/{some[2]}") == errno.EIO
        assert _errno(ns.resolve, f"/bxgrid/fileid/{some[2]}") == errno.EIO
        assert time.monotonic() - started < 0.5  # down: at once
        assert len(lines) == 2  # one line per object
        server, _ = _serve(filled_repo.path, url.removeprefix("http://"))

        def answers() -> bool:
            try:
                return ns.resolve(f"/bxgrid/fileid/{some[2]}").size > 0
            except OSError as e:
                assert e.errno == errno.EIO
                return False
        wait_for(answers, timeout=20, what="the background probe to find the service again")
    finally:
        ns.close()
        _stop(server)


class _Refusing(http.server.BaseHTTPRequestHandler):
    """A server that is up but failing: every request gets 503."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass


def test_a_failing_service_is_eio(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    lines: list[str] = []
    ns = _namespace(f"http://127.0.0.1:{server.server_address[1]}", tmp_path / "c", lines,
                    timeout=0.5)
    try:
        assert _errno(ns.resolve, "/bxgrid/fileid/1") == errno.EIO
        assert _errno(ns.resolve, "/bxgrid/fileid/1") == errno.EIO
        assert _errno(ns.resolve, "/bxgrid/sha256/" + "a" * 64) == errno.EIO
        assert len(lines) == 2 and "503" in lines[0] and "fileid 1" in lines[0]
    finally:
        ns.close()
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_refused_token_is_eacces_said_once(filled_repo: Filled, tmp_path: Path) -> None:
    token = tmp_path / "t"
    token.write_text("wrong\n")
    server = subprocess.Popen([sys.executable, "-m", "treadle", "repo", "serve",
                               str(filled_repo.path), "--bind", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        lines: list[str] = []
        source = open_source(url, token_file=str(token), timeout=1)
        ns = Namespace([("/bxgrid", source)], Cache(tmp_path / "c", None), report=lines.append)
        for fileid in sorted(filled_repo.files)[:3]:
            assert _errno(ns.resolve, f"/bxgrid/fileid/{fileid}") == errno.EACCES
        assert len(lines) == 1 and url in lines[0] and str(token) in lines[0]
        ns.close()
    finally:
        _stop(server)


def test_absent_answers_expire_so_new_ingests_appear(filled_repo: Filled,
                                                     tmp_path: Path) -> None:
    ns = _namespace(str(filled_repo.path), tmp_path / "cache", [])
    new = max(filled_repo.files) + 1
    assert _errno(ns.resolve, f"/bxgrid/fileid/{new}") == errno.ENOENT
    (tmp_path / "new.txt").write_bytes(b"new\n")
    with open_context(filled_repo.path, write=True) as ctx:
        assert ingest(ctx, None, table="more", files=[str(tmp_path / "new.txt")]).fileids == [new]
    wait_for(lambda: _found(ns, f"/bxgrid/fileid/{new}"), timeout=5,
             what="the new file to appear")
    ns.close()


def _found(ns: Namespace, path: str) -> bool:
    try:
        ns.resolve(path)
    except FileNotFoundError:
        return False
    return True


def test_listings_cross_pages(filled_repo: Filled, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(namespace, "PAGE", 5)
    ns = _namespace(str(filled_repo.path), tmp_path / "cache", [])
    entries = ns.listdir(ns.resolve("/bxgrid/fileid").ino, 0, 1000)
    assert [n for n, _, _ in entries][2:] == [str(i) for i in sorted(filled_repo.files)]
    assert [a.size for _, a, _ in entries][2:] == \
        [len(filled_repo.files[i][0]) for i in sorted(filled_repo.files)]
    ns.close()


def test_a_full_cache_disk_is_eio(served_repo: tuple[Filled, str], tmp_path: Path) -> None:
    filled, url = served_repo
    fileid = max(filled.files)
    cache = tmp_path / "small"
    cache.mkdir()
    code = f"""
import errno, os, subprocess
from pathlib import Path
from treadle.vfs.cache import Cache
from treadle.vfs.namespace import Namespace
from treadle.vfs.sources import open_source
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "none", {str(cache)!r}], check=True)
lines = []
ns = Namespace([("/bxgrid", open_source({url!r}, token_file=None, timeout=1))],
               Cache(Path({str(cache)!r}), None), timeout=1, report=lines.append)
ino = ns.resolve("/bxgrid/fileid/{fileid}").ino
ballast = os.open({str(cache)!r} + "/ballast", os.O_WRONLY | os.O_CREAT)
try:  # the disk fills up after the start
    while True:
        os.write(ballast, bytes(4096))
except OSError:
    os.close(ballast)
try:
    ns.open_file(ino)
except OSError as e:
    print(errno.errorcode[e.errno], lines)
"""
    result = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c",
                             code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("EIO ") and f"cache full: {cache}" in result.stdout


def test_concurrent_opens_fetch_once(served_repo: tuple[Filled, str], tmp_path: Path) -> None:
    filled, url = served_repo
    fileid = max(filled.files)
    ns = _namespace(url, tmp_path / "cache", [])
    ino = ns.resolve(f"/bxgrid/fileid/{fileid}").ino
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(ns.open_file(ino).read_bytes()))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [filled.files[fileid][0]] * 8
    assert ns.stats["fetches"] == 1 and ns.stats["cache_hits"] == 7
    ns.close()


def test_verify_always_rehashes_a_cached_copy(served_repo: tuple[Filled, str],
                                              tmp_path: Path) -> None:
    filled, url = served_repo
    fileid = max(filled.files)
    ns = _namespace(url, tmp_path / "cache", [])
    cached = ns.open_file(ns.resolve(f"/bxgrid/fileid/{fileid}").ino)
    ns.close()
    _corrupt(cached)  # its fill's stat still matches: only --verify always can tell
    ns = _namespace(url, tmp_path / "cache", [], verify="always")
    again = ns.open_file(ns.resolve(f"/bxgrid/fileid/{fileid}").ino)
    assert again.read_bytes() == filled.files[fileid][0] and ns.stats["fetches"] == 1
    ns.close()
