"""Content-addressed cache names (spec §3.8, gotcha 9)."""

from __future__ import annotations

import os
import time

from treadle.queue.cache import NAME_MAX, Namer
from treadle.queue.task import FileKind, TaskFile


def _file(path, cache=True):
    return TaskFile(FileKind.FILE, os.path.basename(path), local=str(path), cache=cache)


def test_same_content_same_key_any_path(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("same\n")
    b.write_text("same\n")
    n = Namer()
    ia, ib = n.resolve(_file(a)), n.resolve(_file(b))
    assert ia.key == ib.key
    assert ia.name.startswith("file-0-") and ia.name.endswith("-a.txt")
    assert ia.size == 5


def test_changed_file_gets_new_name(tmp_path):
    """Gotcha 9: a stale copy is never used, because the name follows the content."""
    f = tmp_path / "in.txt"
    f.write_text("one\n")
    n = Namer()
    first = n.resolve(_file(f))
    time.sleep(0.01)
    f.write_text("two\n")
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    second = n.resolve(_file(f))
    assert first.name != second.name and first.key != second.key


def test_uncached_items_get_unique_names(tmp_path):
    f = tmp_path / "x"
    f.write_text("x")
    n = Namer()
    a, b = n.resolve(_file(f, cache=False)), n.resolve(_file(f, cache=False))
    assert a.key is None and b.key is None and a.name != b.name


def test_buffer_and_directory_names(tmp_path):
    n = Namer()
    buf = n.resolve(TaskFile(FileKind.BUFFER, "b", data=b"hello", cache=True))
    assert buf.name.startswith("buffer-0-") and buf.size == 5
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "f").write_text("f")
    os.symlink("sub/f", d / "link")
    item = n.resolve(TaskFile(FileKind.DIR, "d", local=str(d)))
    assert item.name.startswith("dir-0-") and item.name.endswith("-d")
    (d / "sub" / "f").write_text("g")
    os.utime(d / "sub" / "f", ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert n.resolve(TaskFile(FileKind.DIR, "d", local=str(d))).name != item.name


def test_names_are_one_short_printable_component(tmp_path):
    f = tmp_path / ("x" * 150 + " é%/")[:-1]
    f.write_text("x")
    name = Namer().resolve(_file(f)).name
    assert len(name.encode()) <= NAME_MAX
    assert all(0x21 <= b <= 0x7E for b in name.encode())
    assert "/" not in name


def test_checksum_memoized_by_identity(tmp_path):
    """An unchanged (dev, inode, size, mtime_ns) is not read again; any change of them is."""
    f = tmp_path / "big"
    f.write_bytes(b"a" * 100000)
    n = Namer()
    first = n.file_digest(str(f))
    st = os.stat(f)
    with open(f, "r+b") as fh:  # same size, mtime put back: the memo answers
        fh.write(b"b")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert n.file_digest(str(f)) == first
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert n.file_digest(str(f)) != first
