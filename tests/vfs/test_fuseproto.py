"""fuseproto: the kernel's messages in, replies out, checked against a model and a real kernel.

The model below encodes requests from the kernel header's layouts on its own (it shares
no code with the module): hypothesis draws valid messages from it, mutates them and
makes random bytes, and the connection must answer each with a request or
``ProtocolError``, never another exception. Replies are checked for every negotiated
minor from 7.27 to the newest. The last tests speak to the real kernel: the passthrough
ioctl numbers, and a FUSE mount served through this module alone.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import signal
import stat
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests._wait import wait_for

from treadle.vfs import fuseproto as fp

pytestmark = pytest.mark.vfs

# --- The model: layouts written from the header, independently of the module ------------
IN_HEADER = "<IIQQIIIHH"
IN_HEADER_SIZE = 40
OUT_HEADER_SIZE = 16
ENTRY_OUT_SIZE = 128  # fuse_entry_out with its 88-byte fuse_attr
ATTR_OUT_SIZE = 104
STATX_OUT_SIZE = 288
OPEN_OUT_SIZE = 16
INIT_OUT_SIZE = 64
STATFS_OUT_SIZE = 80
MINORS = range(fp.OLDEST_MINOR, fp.NEWEST_MINOR + 1)
HANDLED = {1, 2, 3, 14, 15, 17, 18, 22, 23, 25, 26, 27, 28, 29, 34, 36, 38, 42, 44, 52}
MUTATING = {4, 6, 8, 9, 10, 11, 12, 13, 16, 21, 24, 35, 43, 45, 47, 51, 53}
OFFER_ALL = (1 << 0) | (1 << 13) | (1 << 18) | (1 << 22) | (1 << 30)  # async, readdirplus, dirops, max_pages, ext
OFFER_PASSTHROUGH_HIGH = 1 << 5  # FUSE_PASSTHROUGH is bit 37, bit 5 of flags2


def message(opcode: int, unique: int, nodeid: int, body: bytes, extlen: int = 0) -> bytes:
    return struct.pack(IN_HEADER, IN_HEADER_SIZE + len(body), opcode, unique, nodeid, 0, 0, 1, extlen, 0) + body


def init_message(minor: int, flags: int = OFFER_ALL, flags2: int = OFFER_PASSTHROUGH_HIGH,
                 major: int = 7) -> bytes:
    body = struct.pack("<IIII", major, minor, 128 << 10, flags)
    if minor >= 36:
        body += struct.pack("<I", flags2) + bytes(44)
    return message(26, 1, 0, body)


def connected(minor: int, *, passthrough: bool = True) -> tuple[fp.Connection, bytes]:
    conn = fp.Connection()
    conn.receive(init_message(minor))
    return conn, conn.reply_init(1, passthrough=passthrough)


@dataclass(frozen=True)
class Case:
    """A request as the kernel would send it, and what the connection should make of it."""

    opcode: int
    nodeid: int
    body: bytes
    expected: Callable[[int, int], object]  # (unique, minor) -> request


u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
names = st.binary(min_size=1, max_size=300).map(lambda b: b.replace(b"\0", b"a").replace(b"/", b"b"))
xattr_names = st.binary(min_size=1, max_size=255).map(lambda b: b.replace(b"\0", b"u").replace(b"/", b"."))
sizes = st.integers(0, 1 << 20)


def _read_like(opcode: int, kind: type) -> st.SearchStrategy[Case]:
    return st.builds(
        lambda n, fh, off, size, rest: Case(
            opcode, n, struct.pack("<QQIIQII", fh, off, size, *rest, 0),
            lambda u, _m: kind(u, n, fh, off, size)),
        u64, u64, u64, sizes, st.tuples(u32, u64, u32))


def _release_like(opcode: int, kind: type) -> st.SearchStrategy[Case]:
    return st.builds(
        lambda n, fh, a, b, owner: Case(opcode, n, struct.pack("<QIIQ", fh, a, b, owner),
                                        lambda u, _m: kind(u, n, fh)),
        u64, u64, u32, u32, u64)


def _getattr_like() -> st.SearchStrategy[Case]:
    return st.builds(
        lambda n, flags, fh: Case(3, n, struct.pack("<IIQ", flags, 0, fh),
                                  lambda u, _m: fp.GetAttr(u, n, fh if flags & 1 else None)),
        u64, u32, u64)


def _statx() -> st.SearchStrategy[Case]:
    def expected(n: int, flags: int, fh: int, sx_flags: int, mask: int) -> Callable[[int, int], object]:
        return lambda u, m: (fp.Statx(u, n, fh if flags & 1 else None, sx_flags, mask) if m >= 39
                             else fp.Unknown(u, 52))
    return st.builds(
        lambda n, flags, fh, sx_flags, mask: Case(52, n, struct.pack("<IIQII", flags, 0, fh, sx_flags, mask),
                                                  expected(n, flags, fh, sx_flags, mask)),
        u64, u32, u64, u32, u32)


def _batch_forget() -> st.SearchStrategy[Case]:
    pairs = st.lists(st.tuples(u64, u64), max_size=20)
    return st.builds(
        lambda items: Case(42, 0, struct.pack("<II", len(items), 0) + b"".join(struct.pack("<QQ", *p) for p in items),
                           lambda _u, _m: fp.BatchForget(tuple(items))),
        pairs)


valid_cases: st.SearchStrategy[Case] = st.one_of(
    st.builds(lambda n, name: Case(1, n, name + b"\0", lambda u, _m: fp.Lookup(u, n, name)), u64, names),
    st.builds(lambda n, k: Case(2, n, struct.pack("<Q", k), lambda _u, _m: fp.Forget(n, k)), u64, u64),
    _batch_forget(),
    _getattr_like(),
    _statx(),
    st.builds(lambda n, f, o: Case(14, n, struct.pack("<II", f, o), lambda u, _m: fp.Open(u, n, f)), u64, u32, u32),
    st.builds(lambda n, f, o: Case(27, n, struct.pack("<II", f, o), lambda u, _m: fp.OpenDir(u, n, f)),
              u64, u32, u32),
    _read_like(15, fp.Read),
    _read_like(28, fp.ReadDir),
    _read_like(44, fp.ReadDirPlus),
    _release_like(18, fp.Release),
    _release_like(29, fp.ReleaseDir),
    _release_like(25, fp.Flush),
    st.builds(lambda n: Case(17, n, b"", lambda u, _m: fp.StatFs(u, n)), u64),
    st.builds(lambda n, size, name: Case(22, n, struct.pack("<II", size, 0) + name + b"\0",
                                         lambda u, _m: fp.GetXattr(u, n, name, size)),
              u64, st.integers(0, 1 << 16), xattr_names),
    st.builds(lambda n, size: Case(23, n, struct.pack("<II", size, 0), lambda u, _m: fp.ListXattr(u, n, size)),
              u64, st.integers(0, 1 << 16)),
    st.builds(lambda n, mask: Case(34, n, struct.pack("<II", mask, 0), lambda u, _m: fp.Access(u, n, mask)),
              u64, u32),
    st.builds(lambda t: Case(36, 0, struct.pack("<Q", t), lambda u, _m: fp.Interrupt(u, t)), u64),
    st.builds(lambda op, n, body: Case(op, n, body, lambda u, _m: fp.Mutating(u, op)),
              st.sampled_from(sorted(MUTATING)), u64, st.binary(max_size=64)),
    st.builds(lambda op, n, body: Case(op, n, body, lambda u, _m: fp.Unknown(u, op)),
              u32.filter(lambda op: op not in HANDLED | MUTATING), u64, st.binary(max_size=64)),
)

minors = st.sampled_from(list(MINORS))
fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- Receiving ------------------------------------------------------------------------------


@fuzz
@given(minor=minors, case=valid_cases, unique=u64)
def test_valid_messages_parse_to_what_the_model_says(minor: int, case: Case, unique: int) -> None:
    conn, _ = connected(minor)
    assert conn.receive(message(case.opcode, unique, case.nodeid, case.body)) == case.expected(unique, minor)


@fuzz
@given(minor=st.integers(38, fp.NEWEST_MINOR), case=valid_cases, words=st.integers(1, 4))
def test_extensions_after_the_arguments_are_skipped_from_7_38(minor: int, case: Case, words: int) -> None:
    conn, _ = connected(minor)
    request = conn.receive(message(case.opcode, 9, case.nodeid, case.body + b"\xff" * (8 * words), extlen=words))
    assert request == case.expected(9, minor)


def _mutate(data: bytes, how: str, where: int, value: int) -> bytes:
    if not data:
        return data
    where %= len(data)
    if how == "flip":
        return data[:where] + bytes([data[where] ^ (value or 1)]) + data[where + 1:]
    if how == "truncate":
        return data[:where]
    if how == "extend":
        return data + bytes([value]) * (where % 17 + 1)
    # keep the length field honest after cutting or growing the body, so that the
    # body checks, not the length check, meet the damage
    body = data[IN_HEADER_SIZE:][: where] + bytes([value]) * (value % 5)
    return struct.pack("<I", IN_HEADER_SIZE + len(body)) + data[4:IN_HEADER_SIZE] + body


@fuzz
@given(minor=minors, case=valid_cases, how=st.sampled_from(["flip", "truncate", "extend", "resize"]),
       where=st.integers(0, 10_000), value=st.integers(0, 255))
def test_mutated_messages_give_a_request_or_protocol_error(minor: int, case: Case, how: str, where: int,
                                                           value: int) -> None:
    conn, _ = connected(minor)
    data = _mutate(message(case.opcode, 5, case.nodeid, case.body), how, where, value)
    try:
        request = conn.receive(data)
    except fp.ProtocolError:
        return
    assert type(request).__module__ == fp.__name__


@fuzz
@given(minor=minors, junk=st.binary(max_size=200), honest_length=st.booleans(), before_init=st.booleans())
def test_random_bytes_give_a_request_or_protocol_error(minor: int, junk: bytes, honest_length: bool,
                                                       before_init: bool) -> None:
    conn = fp.Connection() if before_init else connected(minor)[0]
    if honest_length and len(junk) >= 4:
        junk = struct.pack("<I", len(junk)) + junk[4:]
    try:
        request = conn.receive(junk)
    except fp.ProtocolError:
        return
    assert type(request).__module__ == fp.__name__


def test_init_refuses_7_26_naming_the_version() -> None:
    with pytest.raises(fp.ProtocolError, match=r"7\.26.*7\.27"):
        fp.Connection().receive(init_message(26))


def test_init_refuses_another_major() -> None:
    with pytest.raises(fp.ProtocolError, match=r"8\.1"):
        fp.Connection().receive(init_message(1, major=8))


def test_init_comes_first_and_once() -> None:
    with pytest.raises(fp.ProtocolError, match="before INIT"):
        fp.Connection().receive(message(1, 2, 1, b"x\0"))
    conn, _ = connected(45)
    with pytest.raises(fp.ProtocolError, match="second INIT"):
        conn.receive(init_message(45))


def test_nothing_follows_destroy() -> None:
    conn, _ = connected(45)
    assert conn.receive(message(38, 3, 0, b"")) == fp.Destroy(3)
    with pytest.raises(fp.ProtocolError, match="after DESTROY"):
        conn.receive(message(3, 4, 1, bytes(16)))


@pytest.mark.parametrize("body", [b"no-nul", b"\0", b"a/b\0", b"x" * 4096 + b"\0"])
def test_lookup_names_the_kernel_never_sends_are_refused(body: bytes) -> None:
    conn, _ = connected(45)
    with pytest.raises(fp.ProtocolError):
        conn.receive(message(1, 2, 1, body))


def test_oversized_read_and_short_batch_forget_are_refused() -> None:
    conn, _ = connected(45)
    with pytest.raises(fp.ProtocolError, match="asks for"):
        conn.receive(message(15, 2, 2, struct.pack("<QQIIQII", 0, 0, (1 << 20) + 1, 0, 0, 0, 0)))
    with pytest.raises(fp.ProtocolError, match="BATCH_FORGET of 3"):
        conn.receive(message(42, 2, 0, struct.pack("<II", 3, 0) + bytes(32)))


# --- Negotiation -----------------------------------------------------------------------------


def _init_reply(reply: bytes) -> tuple[int, ...]:
    return struct.unpack_from("<IIIIHHIIHHII", reply, OUT_HEADER_SIZE)


@pytest.mark.parametrize("minor", [*MINORS, 46, 60])
def test_init_answers_the_smaller_minor_with_the_features_it_may(minor: int) -> None:
    conn, reply = connected(minor)
    major, answered, readahead, flags, _bg, _ct, max_write, _gran, max_pages, _align, flags2, depth = \
        _init_reply(reply)
    assert len(reply) == OUT_HEADER_SIZE + INIT_OUT_SIZE == struct.unpack_from("<I", reply)[0]
    assert (major, answered) == (7, min(minor, fp.NEWEST_MINOR)) and conn.minor == answered
    assert readahead == 128 << 10 and max_write == 1 << 20
    assert flags & (1 | 1 << 13 | 1 << 18) == 1 | 1 << 13 | 1 << 18
    assert max_pages == (256 if answered >= 28 else 0)
    assert (flags2, depth, conn.passthrough) == ((OFFER_PASSTHROUGH_HIGH, 1, True) if answered >= 40
                                                 else (0, 0, False))


def test_init_asks_only_for_what_the_kernel_offered() -> None:
    conn = fp.Connection()
    conn.receive(init_message(45, flags=1 | 1 << 30, flags2=0))
    _maj, _min, _ra, flags, *_mid, flags2, depth = _init_reply(conn.reply_init(1))
    assert (flags, flags2, depth, conn.passthrough) == (1 | 1 << 30, 0, 0, False)


def test_init_without_passthrough_when_told_so() -> None:
    conn, reply = connected(45, passthrough=False)
    assert not conn.passthrough and _init_reply(reply)[-2:] == (0, 0)


def test_init_passes_the_stack_depth_asked_for() -> None:
    conn = fp.Connection()
    conn.receive(init_message(45))
    assert _init_reply(conn.reply_init(1, stack_depth=2))[-1] == 2
    conn = fp.Connection()
    conn.receive(init_message(45))
    with pytest.raises(ValueError, match="stack depth of 3"):
        conn.reply_init(1, stack_depth=3)


def test_reply_init_needs_an_unanswered_init() -> None:
    with pytest.raises(ValueError):
        fp.Connection().reply_init(1)
    conn, _ = connected(45)
    with pytest.raises(ValueError):
        conn.reply_init(1)


# --- Replies ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    ino: int
    mode: int
    size: int
    mtime: float
    nlink: int


nodes = st.builds(Node, st.integers(1, 2**64 - 1), st.sampled_from([0o40555, 0o100444]),
                  st.integers(0, 2**63 - 1), st.floats(0, 2e9), st.integers(1, 2**32 - 1))
timeouts = st.floats(0, 1e6)


def _well_formed(reply: bytes, unique: int, body_size: int | None = None) -> bytes:
    length, error, echoed = struct.unpack_from("<IiQ", reply)
    assert length == len(reply) and echoed == unique
    if error == 0 and body_size is not None:
        assert length == OUT_HEADER_SIZE + body_size
    return reply[OUT_HEADER_SIZE:]


@fuzz
@given(minor=minors, unique=u64, node=nodes, t1=timeouts, t2=timeouts, fh=u64, data=st.binary(max_size=300),
       value=st.binary(max_size=300), size=st.integers(0, 400), err=st.integers(1, 4095))
def test_every_reply_is_well_formed_at_every_minor(minor: int, unique: int, node: Node, t1: float, t2: float,
                                                   fh: int, data: bytes, value: bytes, size: int,
                                                   err: int) -> None:
    conn, _ = connected(minor)
    body = _well_formed(conn.reply_entry(unique, node, entry_timeout=t1, attr_timeout=t2, uid=5, gid=6),
                        unique, ENTRY_OUT_SIZE)
    assert struct.unpack_from("<Q", body)[0] == node.ino
    assert struct.unpack_from("<QQ", body, 40) == (node.ino, node.size)
    _well_formed(conn.reply_negative_entry(unique, timeout=t1), unique, ENTRY_OUT_SIZE)
    body = _well_formed(conn.reply_attr(unique, node, attr_timeout=t2), unique, ATTR_OUT_SIZE)
    assert struct.unpack_from("<I", body, 16 + 60)[0] == node.mode
    if minor >= 39:
        _well_formed(conn.reply_statx(unique, node, attr_timeout=t2), unique, STATX_OUT_SIZE)
    else:
        with pytest.raises(ValueError):
            conn.reply_statx(unique, node, attr_timeout=t2)
    _well_formed(conn.reply_open(unique, fh, fp.FOPEN_KEEP_CACHE), unique, OPEN_OUT_SIZE)
    if minor >= 40:
        body = _well_formed(conn.reply_open(unique, fh, fp.FOPEN_PASSTHROUGH, backing_id=7), unique, OPEN_OUT_SIZE)
        assert struct.unpack("<QIi", body) == (fh, fp.FOPEN_PASSTHROUGH, 7)
    else:
        with pytest.raises(ValueError):
            conn.reply_open(unique, fh, fp.FOPEN_PASSTHROUGH, backing_id=7)
    assert _well_formed(conn.reply_data(unique, data), unique) == data
    _well_formed(conn.reply_statfs(unique, blocks=1, bfree=0, bavail=0, files=2, ffree=0, bsize=4096,
                                   namelen=255, frsize=4096), unique, STATFS_OUT_SIZE)
    _well_formed(conn.reply_xattr(unique, value, size), unique)
    _well_formed(conn.reply_listxattr(unique, ["user.a", "user.b"], size), unique)
    _well_formed(conn.reply_ok(unique), unique, 0)
    assert struct.unpack("<IiQ", conn.reply_error(unique, err)) == (16, -err, unique)


def _parse_dirents(body: bytes, plus: bool) -> list[tuple[bytes, int, int, int]]:
    out = []
    at = 0
    while at < len(body):
        if plus:
            at += ENTRY_OUT_SIZE
        ino, off, namelen, kind = struct.unpack_from("<QQII", body, at)
        out.append((body[at + 24:at + 24 + namelen], ino, off, kind))
        at += (24 + namelen + 7) // 8 * 8
    assert at == len(body)
    return out


@fuzz
@given(minor=minors, plus=st.booleans(), size=st.integers(0, 4096),
       listing=st.lists(st.tuples(names, nodes), max_size=40))
def test_directory_replies_pack_whole_aligned_records_that_fit(minor: int, plus: bool, size: int,
                                                               listing: list[tuple[bytes, Node]]) -> None:
    conn, _ = connected(minor)
    entries = [fp.DirEntry(name, node, i + 1, 300.0, 300.0) for i, (name, node) in enumerate(listing)]
    reply = (conn.reply_direntplus if plus else conn.reply_dirents)(3, size, entries)
    parsed = _parse_dirents(_well_formed(reply, 3), plus)
    assert len(reply) - OUT_HEADER_SIZE <= size
    expected = [(e.name, e.attr.ino, e.next_offset, stat.S_IFMT(e.attr.mode) >> 12) for e in entries]
    assert parsed == expected[:len(parsed)]
    if len(parsed) < len(entries):  # the next record would not have fitted
        name = os.fsencode(entries[len(parsed)].name)
        record = (ENTRY_OUT_SIZE if plus else 0) + (24 + len(name) + 7) // 8 * 8
        assert len(reply) - OUT_HEADER_SIZE + record > size


def test_xattr_size_rules() -> None:
    conn, _ = connected(45)
    assert _well_formed(conn.reply_xattr(1, b"12345", 0), 1) == struct.pack("<II", 5, 0)
    assert struct.unpack("<IiQ", conn.reply_xattr(1, b"12345", 4)) == (16, -errno.ERANGE, 1)
    assert _well_formed(conn.reply_xattr(1, b"12345", 5), 1) == b"12345"
    assert _well_formed(conn.reply_listxattr(1, ["user.treadle.fileid", "user.treadle.sha256"], 100), 1) \
        == b"user.treadle.fileid\0user.treadle.sha256\0"


def test_replies_refuse_our_own_misuse() -> None:
    with pytest.raises(ValueError):
        fp.Connection().reply_statx(1, Node(2, 0o100444, 1, 0.0, 1), attr_timeout=1)
    conn, _ = connected(45)
    # the kernel fails such opens with EIO (seen on a real mount: test_the_kernel_accepts_every_reply)
    for flags, backing_id in ((fp.FOPEN_PASSTHROUGH | fp.FOPEN_KEEP_CACHE, 3), (fp.FOPEN_PASSTHROUGH, 0),
                              (fp.FOPEN_KEEP_CACHE, 3)):
        with pytest.raises(ValueError):
            conn.reply_open(1, 1, flags, backing_id)
    with pytest.raises(ValueError, match="not negotiated"):
        connected(45, passthrough=False)[0].reply_open(1, 1, fp.FOPEN_PASSTHROUGH, 3)
    for bad in (0, -2, 4096):
        with pytest.raises(ValueError):
            conn.reply_error(1, bad)


# --- The real kernel -------------------------------------------------------------------------


def _need_fuse() -> None:
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse (treadle vfs doctor says why)")


def test_the_kernel_knows_the_backing_ioctls() -> None:
    """An unmounted /dev/fuse answers our numbers EPERM (no connection yet), not ENOTTY (unknown)."""
    _need_fuse()
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    try:
        for request, arg in ((fp.FUSE_DEV_IOC_BACKING_OPEN, fp.pack_backing_map(0)),
                             (fp.FUSE_DEV_IOC_BACKING_CLOSE, fp.pack_backing_id(1))):
            with pytest.raises(OSError) as caught:
                fcntl.ioctl(fd, request, bytearray(arg))
            assert caught.value.errno != errno.ENOTTY
    finally:
        os.close(fd)


CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 1 << 14, 1 << 18
STATX_BTIME = 0x800
AT_STATX_FORCE_SYNC = 0x2000
CONTENT = b"the bytes of one repository object\n" * 3000


class _TinyFs:
    """A root holding one file, ``object``, served through fuseproto only (the test's daemon)."""

    FILE = Node(2, 0o100444, len(CONTENT), 1_700_000_000.25, 1)
    ROOT = Node(1, 0o40555, 0, 1_700_000_000.0, 2)

    def __init__(self, fd: int, backing: Path, passthrough: bool, stack_depth: int) -> None:
        self.fd = fd
        self.backing = os.open(backing, os.O_RDONLY | os.O_CLOEXEC)
        self.conn = fp.Connection()
        self.want_passthrough = passthrough
        self.stack_depth = stack_depth
        self.seen: dict[str, int] = {}
        self.failures: list[str] = []

    def serve(self) -> None:
        """Answer until unmounted; closing the device on the way out aborts the connection.

        A request already read from the device waits for its answer uninterruptibly, even
        against SIGKILL; without the close, a daemon thread that died would leave the
        process that made the request (this very one) stuck for good.
        """
        try:
            self._loop()
        finally:
            os.close(self.fd)

    def _loop(self) -> None:
        while True:
            try:
                data = os.read(self.fd, fp.READ_BUFFER_SIZE)
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                return  # ENODEV: unmounted
            request = self.conn.receive(data)
            self.seen[type(request).__name__] = self.seen.get(type(request).__name__, 0) + 1
            try:
                reply = self.answer(request)
            except Exception as e:  # the program gets EIO, the test gets the reason
                self.failures.append(f"{request}: {e!r}")
                reply = self.conn.reply_error(getattr(request, "unique", 0), errno.EIO)
            if reply is not None:
                try:
                    os.write(self.fd, reply)
                except FileNotFoundError:  # the request was interrupted meanwhile
                    pass

    def answer(self, r: fp.Request) -> bytes | None:
        c = self.conn
        node = {1: self.ROOT, 2: self.FILE}
        match r:
            case fp.Init():
                return c.reply_init(r.unique, passthrough=self.want_passthrough, stack_depth=self.stack_depth)
            case fp.Lookup(unique=u, nodeid=1, name=b"object"):
                return c.reply_entry(u, self.FILE, entry_timeout=300, attr_timeout=300)
            case fp.Lookup():
                return c.reply_negative_entry(r.unique, timeout=1)
            case fp.GetAttr():
                return c.reply_attr(r.unique, node[r.nodeid], attr_timeout=1)
            case fp.Statx():
                return c.reply_statx(r.unique, node[r.nodeid], attr_timeout=1)
            case fp.Open():
                if c.passthrough:
                    backing_id = fcntl.ioctl(self.fd, fp.FUSE_DEV_IOC_BACKING_OPEN,
                                             bytearray(fp.pack_backing_map(self.backing)))
                    return c.reply_open(r.unique, backing_id, fp.FOPEN_PASSTHROUGH, backing_id)
                return c.reply_open(r.unique, 0, fp.FOPEN_KEEP_CACHE)
            case fp.Read():
                return c.reply_data(r.unique, os.pread(self.backing, r.size, r.offset))
            case fp.Release():
                if c.passthrough:
                    fcntl.ioctl(self.fd, fp.FUSE_DEV_IOC_BACKING_CLOSE, bytearray(fp.pack_backing_id(r.fh)))
                return c.reply_ok(r.unique)
            case fp.OpenDir():
                return c.reply_open(r.unique, 0, 0)
            case fp.ReadDir() | fp.ReadDirPlus():
                entries = [fp.DirEntry("object", self.FILE, 1, 300, 300)][r.offset:]
                send = c.reply_direntplus if isinstance(r, fp.ReadDirPlus) else c.reply_dirents
                return send(r.unique, r.size, entries)
            case fp.StatFs():
                return c.reply_statfs(r.unique, blocks=10, bfree=0, bavail=0, files=1, ffree=0, bsize=4096,
                                      namelen=255, frsize=4096)
            case fp.GetXattr(name=b"user.treadle.fileid"):
                return c.reply_xattr(r.unique, b"12", r.size)
            case fp.GetXattr():
                return c.reply_error(r.unique, errno.ENODATA)
            case fp.ListXattr():
                return c.reply_listxattr(r.unique, ["user.treadle.fileid"] if r.nodeid == 2 else [], r.size)
            case fp.Mutating():
                return c.reply_error(r.unique, errno.EROFS)
            case fp.Unknown():
                return c.reply_error(r.unique, errno.ENOSYS)
            case fp.Forget() | fp.BatchForget() | fp.Interrupt():
                return None
        return c.reply_ok(r.unique)  # Release/ReleaseDir/Flush/Access/Destroy


def _statx_size(path: Path) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(256)
    if libc.statx(-100, os.fsencode(path), AT_STATX_FORCE_SYNC, STATX_BTIME, buf) != 0:
        return -ctypes.get_errno()
    return struct.unpack_from("<Q", buf, 40)[0]  # stx_size


def _exercise(mnt: Path) -> dict[str, object]:
    """What a program sees through the mount, as JSON-able facts."""
    def err(call: Callable[[], object]) -> str:
        try:
            call()
        except OSError as e:
            return errno.errorcode[e.errno or 0]
        return "ok"
    obj = mnt / "object"
    st_ = obj.stat()
    return {
        "listing": sorted(os.listdir(mnt)),
        "bytes_ok": obj.read_bytes() == CONTENT and obj.read_bytes() == CONTENT,
        "size": st_.st_size, "mode": st_.st_mode, "mtime_ns": st_.st_mtime_ns,
        "statx_size": _statx_size(obj),
        "xattr": os.getxattr(obj, "user.treadle.fileid").decode(),
        "xattrs": os.listxattr(obj),
        "absent": err(lambda: (mnt / "absent").stat()),
        "mkdir": err(lambda: (mnt / "new").mkdir()),
        "statvfs_blocks": os.statvfs(mnt).f_blocks,
    }


@dataclass(frozen=True)
class Setup:
    """How the child mounts and serves: passthrough wanted, its stack depth, the backing file on an overlayfs."""

    passthrough: bool = True
    stack_depth: int = 1
    overlay: bool = False
    exercise: Callable[[Path], dict[str, object]] = _exercise


def _mount(libc: ctypes.CDLL, source: bytes, target: Path, fstype: bytes, flags: int, options: bytes) -> None:
    if libc.mount(source, os.fsencode(target), fstype, flags, options) != 0:
        raise OSError(ctypes.get_errno(), f"mount {fstype.decode()} on {target}")


def _child(tmp: Path, setup: Setup, out: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0 or libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "private mount namespace")
    mnt, backing = tmp / "mnt", tmp / "lower" / "backing"
    if setup.overlay:
        options = f"lowerdir={tmp / 'lower'},upperdir={tmp / 'upper'},workdir={tmp / 'work'}".encode()
        _mount(libc, b"overlay", tmp / "overlay", b"overlay", 0, options)
        backing = tmp / "overlay" / "backing"
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    options = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
    _mount(libc, b"treadle-test", mnt, b"fuse.treadle-test", MS_NOSUID | MS_NODEV, options)
    fs = _TinyFs(fd, backing, setup.passthrough, setup.stack_depth)
    daemon = threading.Thread(target=fs.serve, daemon=True)
    daemon.start()
    facts = setup.exercise(mnt)
    facts |= {"passthrough": fs.conn.passthrough, "minor": fs.conn.minor, "seen": fs.seen,
              "failures": fs.failures}
    os.write(out, json.dumps(facts).encode())


def _run_mounted(tmp_path: Path, setup: Setup) -> dict[str, object]:
    """Run ``setup`` in a forked child with its own mount namespace; the facts it saw."""
    for name in ("mnt", "lower", "upper", "work", "overlay"):
        (tmp_path / name).mkdir()
    (tmp_path / "lower" / "backing").write_bytes(CONTENT)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own mount namespace, which dies (with the mount) when it exits
        status = 0
        try:
            os.close(read_end)
            _child(tmp_path, setup, write_end)
        except BaseException as e:  # report anything to the parent; never run pytest on
            os.write(write_end, json.dumps({"error": repr(e)}).encode())
            status = 1
        os._exit(status)
    os.close(write_end)
    def reaped() -> bool:
        return os.waitpid(pid, os.WNOHANG)[0] == pid

    try:
        wait_for(reaped, timeout=30, what="the mounted child to finish")
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        wait_for(reaped, timeout=10, what="the killed child to be reaped")
        raise
    with os.fdopen(read_end, "rb") as f:
        facts: dict[str, object] = json.loads(f.read() or b"{}")
    assert "error" not in facts, facts["error"]
    # nothing stayed mounted outside the child's namespace
    assert not any((tmp_path / "mnt").iterdir()) and not any((tmp_path / "overlay").iterdir())
    return facts


@pytest.mark.parametrize("passthrough", [True, False], ids=["passthrough", "daemon-reads"])
def test_the_kernel_accepts_every_reply(tmp_path: Path, passthrough: bool) -> None:
    _need_fuse()
    facts = _run_mounted(tmp_path, Setup(passthrough=passthrough))
    assert facts["failures"] == []
    assert facts["listing"] == ["object"] and facts["bytes_ok"] is True
    assert (facts["size"], facts["statx_size"]) == (len(CONTENT), len(CONTENT))
    assert facts["mode"] == 0o100444 and facts["mtime_ns"] == 1_700_000_000_250_000_000
    assert (facts["xattr"], facts["xattrs"]) == ("12", ["user.treadle.fileid"])
    assert (facts["absent"], facts["mkdir"], facts["statvfs_blocks"]) == ("ENOENT", "EROFS", 10)
    seen = facts["seen"]
    assert isinstance(seen, dict) and seen.get("Statx", 0) >= 1
    if not passthrough:
        assert seen.get("Read", 0) >= 1 and facts["passthrough"] is False
    elif facts["passthrough"]:
        assert "Read" not in seen  # the kernel read the backing file itself
    else:
        pytest.skip(f"the kernel (FUSE 7.{facts['minor']}) did not offer passthrough")


def _read_once(mnt: Path) -> dict[str, object]:
    try:
        return {"read": (mnt / "object").read_bytes() == CONTENT}
    except OSError as e:
        return {"read": errno.errorcode[e.errno or 0]}


@pytest.mark.parametrize("depth", [1, 2])
def test_a_backing_file_on_overlayfs_needs_stack_depth_2(tmp_path: Path, depth: int) -> None:
    """The kernel takes a backing file only from a filesystem stacked less deep than we said."""
    _need_fuse()
    facts = _run_mounted(tmp_path, Setup(stack_depth=depth, overlay=True, exercise=_read_once))
    if not facts["passthrough"]:
        pytest.skip(f"the kernel (FUSE 7.{facts['minor']}) did not offer passthrough")
    failures, seen = facts["failures"], facts["seen"]
    assert isinstance(failures, list) and isinstance(seen, dict)
    if depth == 1:  # ELOOP at FUSE_DEV_IOC_BACKING_OPEN; our daemon answers that open EIO
        assert facts["read"] == "EIO" and len(failures) == 1 and "Too many levels" in failures[0]
    else:
        assert facts["read"] is True and failures == [] and "Read" not in seen
