"""The kernel FUSE protocol, read-only subset, as a sans-I/O state machine (see docs/vfs.md).

No file descriptors here: fusemode reads one message from ``/dev/fuse``, hands it to
``Connection.receive`` and gets back a request (a frozen dataclass); it asks a
``reply_*`` method for the answer and writes those bytes back in one ``write``. The
tests feed it bytes directly. We own this module instead of binding libfuse because no
Python binding exposes kernel passthrough (``FOPEN_PASSTHROUGH`` with a backing id),
and a read-only filesystem needs only a small part of the protocol.

Every structure layout, opcode number and flag bit below comes from the Linux uapi
header ``linux/fuse.h``. Integers are little-endian (x86-64; the kernel speaks the
host's byte order).

Version
-------
The kernel proposes 7.K in INIT. We answer ``min(K, NEWEST_MINOR)`` and refuse K below
``OLDEST_MINOR`` (``ProtocolError`` naming both versions). Between those, the
structures we use differ only in INIT itself: ``max_pages`` (7.28), ``flags2`` and
the extended INIT request (7.36), STATX (7.39), ``max_stack_depth`` and the backing id
of an OPEN reply (7.40, passthrough).

Requests
--------
``Init``, ``Lookup``, ``Forget``, ``BatchForget``, ``GetAttr``, ``Statx``, ``Open``,
``Read``, ``Release``, ``Flush``, ``OpenDir``, ``ReadDir``, ``ReadDirPlus``,
``ReleaseDir``, ``StatFs``, ``GetXattr``, ``ListXattr``, ``Access``, ``Interrupt``,
``Destroy``; ``Mutating`` for every opcode that would change something (answer it
``EROFS``) and ``Unknown`` for the rest (answer ``ENOSYS``: the kernel then stops
sending most of them). ``Forget``, ``BatchForget`` and ``Interrupt`` get no reply.
Each READDIRPLUS entry with a non-zero inode, other than ``.`` and ``..``, counts as
one lookup of that inode, to be balanced by FORGETs like a LOOKUP.

What ``receive`` checks
-----------------------
The length field equals the message's length; each opcode's body is at least its
structure; names end in NUL, are not empty, hold no ``/`` and fit the kernel's limits;
a READ or READDIR asks for at most ``MAX_REQUEST_BYTES``; a BATCH_FORGET's count
matches its body; INIT comes first and only once; nothing follows DESTROY. Anything
else is a broken peer: ``ProtocolError``, after which the connection is to be
aborted. Misuse by our own caller (a reply to an INIT that was not received, a backing
id before 7.40) is a ``ValueError``: a bug, not the kernel's fault.
"""

from __future__ import annotations

import errno as errno_codes
import functools
import mmap
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

KERNEL_MAJOR = 7
# 7.27 is the oldest minor whose INIT reply, entry and attribute layouts are the ones
# below (Linux 4.19, 2018); older kernels are refused rather than half-supported.
OLDEST_MINOR = 27
# 7.45 (Linux 6.18) is the newest minor whose changelog we have read; later minors may
# add structures, and the kernel speaks our minor when it is older than its own.
NEWEST_MINOR = 45
ROOT_ID = 1

# --- Opcodes ---------------------------------------------------------------------------
LOOKUP = 1
FORGET = 2
GETATTR = 3
SETATTR = 4
READLINK = 5
SYMLINK = 6
MKNOD = 8
MKDIR = 9
UNLINK = 10
RMDIR = 11
RENAME = 12
LINK = 13
OPEN = 14
READ = 15
WRITE = 16
STATFS = 17
RELEASE = 18
FSYNC = 20
SETXATTR = 21
GETXATTR = 22
LISTXATTR = 23
REMOVEXATTR = 24
FLUSH = 25
INIT = 26
OPENDIR = 27
READDIR = 28
RELEASEDIR = 29
FSYNCDIR = 30
GETLK = 31
SETLK = 32
SETLKW = 33
ACCESS = 34
CREATE = 35
INTERRUPT = 36
BMAP = 37
DESTROY = 38
IOCTL = 39
POLL = 40
NOTIFY_REPLY = 41
BATCH_FORGET = 42
FALLOCATE = 43
READDIRPLUS = 44
RENAME2 = 45
LSEEK = 46
COPY_FILE_RANGE = 47
SETUPMAPPING = 48
REMOVEMAPPING = 49
SYNCFS = 50
TMPFILE = 51
STATX = 52
COPY_FILE_RANGE_64 = 53

# Opcodes that would change the tree or a file: the filesystem is read-only, so EROFS.
MUTATING_OPCODES = frozenset({
    SETATTR, SYMLINK, MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK, WRITE, SETXATTR,
    REMOVEXATTR, CREATE, FALLOCATE, RENAME2, COPY_FILE_RANGE, TMPFILE, COPY_FILE_RANGE_64,
})

# --- INIT flags (bits 32..63 travel in flags2) ------------------------------------------
ASYNC_READ = 1 << 0
DO_READDIRPLUS = 1 << 13
PARALLEL_DIROPS = 1 << 18
MAX_PAGES = 1 << 22
INIT_EXT = 1 << 30
PASSTHROUGH = 1 << 37

# --- OPEN reply flags -------------------------------------------------------------------
FOPEN_DIRECT_IO = 1 << 0
FOPEN_KEEP_CACHE = 1 << 1
FOPEN_CACHE_DIR = 1 << 3
FOPEN_NOFLUSH = 1 << 5
FOPEN_PARALLEL_DIRECT_WRITES = 1 << 6
FOPEN_PASSTHROUGH = 1 << 7
# The only flags a passthrough open may carry (the kernel's FOPEN_PASSTHROUGH_MASK).
PASSTHROUGH_OPEN_FLAGS = FOPEN_PASSTHROUGH | FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES | FOPEN_NOFLUSH

GETATTR_FH = 1 << 0

# STATX_TYPE..STATX_BLOCKS (statx(2)): everything but the birth time, which we do not
# know for an object, and the mount id.
STATX_BASIC_STATS = 0x7FF

# --- Passthrough: ioctls on /dev/fuse (Linux >= 6.9) ------------------------------------
# _IOW(229, 1, struct fuse_backing_map) and _IOW(229, 2, uint32_t). BACKING_OPEN returns
# the backing id as the ioctl's result: with fcntl.ioctl pass a bytearray (mutate), since
# an immutable argument makes Python return the buffer instead of the result.
_IOC_WRITE = 1
_DEV_IOC_MAGIC = 229
_BACKING_MAP = struct.Struct("<iIQ")  # fd, flags, padding


def _iow(nr: int, size: int) -> int:
    return (_IOC_WRITE << 30) | (size << 16) | (_DEV_IOC_MAGIC << 8) | nr


FUSE_DEV_IOC_BACKING_OPEN = _iow(1, _BACKING_MAP.size)
FUSE_DEV_IOC_BACKING_CLOSE = _iow(2, 4)


def pack_backing_map(fd: int) -> bytes:
    """The ``struct fuse_backing_map`` argument of FUSE_DEV_IOC_BACKING_OPEN for ``fd``."""
    return _BACKING_MAP.pack(fd, 0, 0)


def pack_backing_id(backing_id: int) -> bytes:
    """The ``uint32_t`` argument of FUSE_DEV_IOC_BACKING_CLOSE."""
    return struct.pack("<I", backing_id)


# --- Limits (why each number) -----------------------------------------------------------
PAGE_SIZE = mmap.PAGESIZE
# We ask for 1 MiB requests (docs/vfs.md: 1 MiB reads measured best); a READ or READDIR
# asking for more than we negotiated is a broken peer.
MAX_REQUEST_BYTES = 1 << 20
MAX_PAGES_WANTED = MAX_REQUEST_BYTES // PAGE_SIZE
# The kernel refuses a read of /dev/fuse into a buffer smaller than one WRITE request
# (in header + write_in + max_write), so the daemon's buffer is this size.
READ_BUFFER_SIZE = 40 + 40 + MAX_REQUEST_BYTES
# A name in LOOKUP: the kernel's FUSE_NAME_MAX is PATH_MAX - 1 in recent kernels (1024
# before); the larger bound accepts both.
MAX_NAME = 4095
# An xattr name: XATTR_NAME_MAX.
MAX_XATTR_NAME = 255
# The xattr value size a request may name: XATTR_SIZE_MAX.
MAX_XATTR_SIZE = 1 << 16

# --- Layouts ----------------------------------------------------------------------------
_IN_HEADER = struct.Struct("<IIQQIIIHH")  # len opcode unique nodeid uid gid pid total_extlen pad
_OUT_HEADER = struct.Struct("<IiQ")  # len error unique
_INIT_IN = struct.Struct("<IIII")  # major minor max_readahead flags (+ flags2 from 7.36)
_INIT_OUT = struct.Struct("<IIIIHHIIHHII24x")  # ... flags2 max_stack_depth unused[6]
_ATTR = struct.Struct("<QQQQQQIIIIIIIIII")
_ENTRY_OUT = struct.Struct("<QQQQII")  # nodeid generation entry_valid attr_valid nsec nsec
_ATTR_OUT = struct.Struct("<QII")  # attr_valid attr_valid_nsec dummy
_OPEN_OUT = struct.Struct("<QIi")  # fh open_flags backing_id
_KSTATFS = struct.Struct("<QQQQQIIII24x")
_XATTR_OUT = struct.Struct("<II")
_DIRENT = struct.Struct("<QQII")  # ino off namelen type
_STATX_OUT = struct.Struct("<QIIQQ")  # attr_valid attr_valid_nsec flags spare[2]
_STATX_HEAD = struct.Struct("<IIQIIIHHQQQQ")
_SX_TIME = struct.Struct("<qIi")
_STATX_TAIL = struct.Struct("<IIII112x")
_U32_PAIR = struct.Struct("<II")
_U64 = struct.Struct("<Q")
_GETATTR_IN = struct.Struct("<IIQ")
_STATX_IN = struct.Struct("<IIQII")
_READ_IN = struct.Struct("<QQIIQII")
_RELEASE_IN = struct.Struct("<QIIQ")
_FORGET_ONE = struct.Struct("<QQ")

_BLOCK = 512  # st_blocks counts 512-byte units whatever the block size


class ProtocolError(Exception):
    """The kernel side broke the protocol (or is too old); abort the connection, keep the process."""


# --- Requests ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Init:
    """The kernel's proposal; answer with ``Connection.reply_init``."""

    unique: int
    major: int
    minor: int
    max_readahead: int
    flags: int
    flags2: int


@dataclass(frozen=True)
class Lookup:
    """Look ``name`` up in the directory ``nodeid``: ``reply_entry`` or an error."""

    unique: int
    nodeid: int
    name: bytes


@dataclass(frozen=True)
class Forget:
    """The kernel dropped ``nlookup`` references to ``nodeid``; no reply."""

    nodeid: int
    nlookup: int


@dataclass(frozen=True)
class BatchForget:
    """Several ``(nodeid, nlookup)`` forgets in one message; no reply."""

    items: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class GetAttr:
    """The attributes of ``nodeid`` (``fh`` when asked through an open file)."""

    unique: int
    nodeid: int
    fh: int | None


@dataclass(frozen=True)
class Statx:
    """GETATTR's successor (7.39+), sent when a caller wants more than the basic fields."""

    unique: int
    nodeid: int
    fh: int | None
    sx_flags: int
    sx_mask: int


@dataclass(frozen=True)
class Open:
    """Open the file ``nodeid`` (``flags`` as given to open(2)): ``reply_open``."""

    unique: int
    nodeid: int
    flags: int


@dataclass(frozen=True)
class Read:
    """``size`` bytes at ``offset`` of the open file ``fh`` (never sent for a passthrough open)."""

    unique: int
    nodeid: int
    fh: int
    offset: int
    size: int


@dataclass(frozen=True)
class Release:
    """The last close of the open file ``fh``."""

    unique: int
    nodeid: int
    fh: int


@dataclass(frozen=True)
class Flush:
    """A close(2) of a descriptor of ``fh``: nothing to write back in a read-only file."""

    unique: int
    nodeid: int
    fh: int


@dataclass(frozen=True)
class OpenDir:
    """Open the directory ``nodeid``: ``reply_open``."""

    unique: int
    nodeid: int
    flags: int


@dataclass(frozen=True)
class ReadDir:
    """Entries from ``offset`` (0 or a ``next_offset`` we gave), at most ``size`` bytes."""

    unique: int
    nodeid: int
    fh: int
    offset: int
    size: int


@dataclass(frozen=True)
class ReadDirPlus:
    """READDIR with each entry's attributes; each entry counts as a lookup."""

    unique: int
    nodeid: int
    fh: int
    offset: int
    size: int


@dataclass(frozen=True)
class ReleaseDir:
    """The last close of the open directory ``fh``."""

    unique: int
    nodeid: int
    fh: int


@dataclass(frozen=True)
class StatFs:
    """statfs(2) of the filesystem."""

    unique: int
    nodeid: int


@dataclass(frozen=True)
class GetXattr:
    """``size`` 0 asks only for the value's length."""

    unique: int
    nodeid: int
    name: bytes
    size: int


@dataclass(frozen=True)
class ListXattr:
    """The names of ``nodeid``'s extended attributes; ``size`` 0 asks only for their length."""

    unique: int
    nodeid: int
    size: int


@dataclass(frozen=True)
class Access:
    """access(2) of ``nodeid`` with ``mask`` (R_OK, W_OK, X_OK)."""

    unique: int
    nodeid: int
    mask: int


@dataclass(frozen=True)
class Interrupt:
    """Cancel the request ``target`` (answer it EINTR if it is still waiting); no reply."""

    unique: int
    target: int


@dataclass(frozen=True)
class Destroy:
    """The filesystem is going away; answer, then expect nothing more."""

    unique: int


@dataclass(frozen=True)
class Mutating:
    """A request that would change something: answer ``reply_error(unique, EROFS)``."""

    unique: int
    opcode: int


@dataclass(frozen=True)
class Unknown:
    """A request we do not implement: answer ``reply_error(unique, ENOSYS)``."""

    unique: int
    opcode: int


Request = (
    Init | Lookup | Forget | BatchForget | GetAttr | Statx | Open | Read | Release | Flush
    | OpenDir | ReadDir | ReadDirPlus | ReleaseDir | StatFs | GetXattr | ListXattr | Access
    | Interrupt | Destroy | Mutating | Unknown
)


class AttrFields(Protocol):
    """What a reply needs to know of a node: namespace's ``Attr`` has these fields."""

    @property
    def ino(self) -> int: ...

    @property
    def mode(self) -> int: ...

    @property
    def size(self) -> int: ...

    @property
    def mtime(self) -> float: ...

    @property
    def nlink(self) -> int: ...


@dataclass(frozen=True)
class DirEntry:
    """One directory entry of a READDIR(PLUS) reply.

    ``next_offset`` is the offset the kernel passes back to continue after this entry;
    the timeouts matter only to READDIRPLUS, where the entry is also a lookup.
    """

    name: str | bytes
    attr: AttrFields
    next_offset: int
    entry_timeout: float = 0.0
    attr_timeout: float = 0.0


# --- Decoding ---------------------------------------------------------------------------


def _name(body: bytes, limit: int) -> bytes:
    """A NUL-terminated name at the start of ``body``: one path component."""
    end = body.find(b"\0")
    if end < 0:
        raise ProtocolError("a name without its terminating NUL")
    name = body[:end]
    if not name or len(name) > limit or b"/" in name:
        raise ProtocolError(f"a name the kernel never sends: {name[:64]!r}")
    return name


def _need(body: bytes, layout: struct.Struct, opcode: int) -> tuple[int, ...]:
    if len(body) < layout.size:
        raise ProtocolError(f"opcode {opcode}: body of {len(body)} bytes, expected {layout.size}")
    return layout.unpack_from(body)


def _split_time(seconds: float) -> tuple[int, int]:
    """Seconds and nanoseconds for a timestamp or a timeout (before 1970 counts as 1970)."""
    seconds = max(seconds, 0.0)
    whole = int(seconds)
    nanos = min(int(round((seconds - whole) * 1e9)), 999_999_999)
    return whole, nanos


class Connection:
    """One FUSE session: the kernel's requests in, our replies out (see module docstring).

    ``minor`` is the negotiated minor version once INIT is answered (``None`` before);
    ``flags`` the INIT flags in force (64 bits); ``passthrough`` whether the kernel
    accepted passthrough, so that FUSE_DEV_IOC_BACKING_OPEN is worth trying.
    """

    def __init__(self) -> None:
        self.minor: int | None = None
        self.flags = 0
        self.passthrough = False
        self._init: Init | None = None
        self._destroyed = False

    # -- receiving ------------------------------------------------------------------------
    def receive(self, data: bytes) -> Request:
        """Parse one message read from ``/dev/fuse``; ``ProtocolError`` if it is malformed."""
        if len(data) < _IN_HEADER.size:
            raise ProtocolError(f"a message of {len(data)} bytes is shorter than its header")
        length, opcode, unique, nodeid, _uid, _gid, _pid, extlen, _pad = _IN_HEADER.unpack_from(data)
        if length != len(data):
            raise ProtocolError(f"length field {length} for a message of {len(data)} bytes")
        if self._destroyed:
            raise ProtocolError(f"opcode {opcode} after DESTROY")
        end = len(data)
        if self.minor is not None and self.minor >= 38:
            # 7.38 added extensions after the arguments (security context, groups); none
            # concern the opcodes we answer, so they are skipped.
            end -= extlen * 8
            if end < _IN_HEADER.size:
                raise ProtocolError(f"extensions of {extlen * 8} bytes overrun the message")
        body = bytes(data[_IN_HEADER.size:end])
        if self._init is None:
            if opcode != INIT:
                raise ProtocolError(f"opcode {opcode} before INIT")
            return self._receive_init(unique, body)
        if opcode == INIT:
            raise ProtocolError("a second INIT")
        return self._decode(opcode, unique, nodeid, body)

    def _receive_init(self, unique: int, body: bytes) -> Init:
        major, minor, max_readahead, flags = _need(body, _INIT_IN, INIT)
        if major != KERNEL_MAJOR:
            raise ProtocolError(
                f"the kernel speaks FUSE {major}.{minor}; treadle speaks {KERNEL_MAJOR}.x only")
        if minor < OLDEST_MINOR:
            raise ProtocolError(
                f"the kernel speaks FUSE {major}.{minor}; treadle needs "
                f"{KERNEL_MAJOR}.{OLDEST_MINOR} or newer (Linux 4.19)")
        flags2 = 0
        if minor >= 36 and flags & INIT_EXT and len(body) >= _INIT_IN.size + 4:
            (flags2,) = struct.unpack_from("<I", body, _INIT_IN.size)
        request = Init(unique, major, minor, max_readahead, flags, flags2)
        self._init = request
        return request

    def _decode(self, opcode: int, unique: int, nodeid: int, body: bytes) -> Request:
        if opcode == LOOKUP:
            return Lookup(unique, nodeid, _name(body, MAX_NAME))
        if opcode == FORGET:
            (nlookup,) = _need(body, _U64, opcode)
            return Forget(nodeid, nlookup)
        if opcode == BATCH_FORGET:
            return BatchForget(self._forgets(body))
        if opcode == GETATTR:
            flags, _dummy, fh = _need(body, _GETATTR_IN, opcode)
            return GetAttr(unique, nodeid, fh if flags & GETATTR_FH else None)
        if opcode == STATX and self._known_minor() >= 39:
            flags, _reserved, fh, sx_flags, sx_mask = _need(body, _STATX_IN, opcode)
            return Statx(unique, nodeid, fh if flags & GETATTR_FH else None, sx_flags, sx_mask)
        if opcode in (OPEN, OPENDIR):
            flags, _open_flags = _need(body, _U32_PAIR, opcode)
            return Open(unique, nodeid, flags) if opcode == OPEN else OpenDir(unique, nodeid, flags)
        if opcode in (READ, READDIR, READDIRPLUS):
            fh, offset, size, *_rest = _need(body, _READ_IN, opcode)
            if size > MAX_REQUEST_BYTES:
                raise ProtocolError(f"opcode {opcode} asks for {size} bytes")
            if opcode == READ:
                return Read(unique, nodeid, fh, offset, size)
            if opcode == READDIR:
                return ReadDir(unique, nodeid, fh, offset, size)
            return ReadDirPlus(unique, nodeid, fh, offset, size)
        if opcode in (RELEASE, RELEASEDIR, FLUSH):
            fh = _need(body, _RELEASE_IN, opcode)[0]
            if opcode == RELEASE:
                return Release(unique, nodeid, fh)
            if opcode == RELEASEDIR:
                return ReleaseDir(unique, nodeid, fh)
            return Flush(unique, nodeid, fh)
        if opcode == STATFS:
            return StatFs(unique, nodeid)
        if opcode in (GETXATTR, LISTXATTR):
            size, _pad = _need(body, _U32_PAIR, opcode)
            if size > MAX_XATTR_SIZE:
                raise ProtocolError(f"an xattr buffer of {size} bytes")
            if opcode == LISTXATTR:
                return ListXattr(unique, nodeid, size)
            return GetXattr(unique, nodeid, _name(body[_U32_PAIR.size:], MAX_XATTR_NAME), size)
        if opcode == ACCESS:
            mask, _pad = _need(body, _U32_PAIR, opcode)
            return Access(unique, nodeid, mask)
        if opcode == INTERRUPT:
            (target,) = _need(body, _U64, opcode)
            return Interrupt(unique, target)
        if opcode == DESTROY:
            self._destroyed = True
            return Destroy(unique)
        if opcode in MUTATING_OPCODES:
            return Mutating(unique, opcode)
        return Unknown(unique, opcode)

    def _known_minor(self) -> int:
        """The minor in force: negotiated, or (before the INIT reply) what we will answer."""
        if self.minor is not None:
            return self.minor
        assert self._init is not None  # receive() parses INIT before anything else
        return min(self._init.minor, NEWEST_MINOR)

    @staticmethod
    def _forgets(body: bytes) -> tuple[tuple[int, int], ...]:
        count, _dummy = _need(body, _U32_PAIR, BATCH_FORGET)
        if len(body) < _U32_PAIR.size + count * _FORGET_ONE.size:
            raise ProtocolError(f"BATCH_FORGET of {count} entries in {len(body)} bytes")
        items = []
        for i in range(count):
            nodeid, nlookup = _FORGET_ONE.unpack_from(body, _U32_PAIR.size + i * _FORGET_ONE.size)
            items.append((nodeid, nlookup))
        return tuple(items)

    # -- replying -------------------------------------------------------------------------
    def reply_init(self, unique: int, *, passthrough: bool = True, stack_depth: int = 1,
                   max_background: int = 0, congestion_threshold: int = 0) -> bytes:
        """Answer INIT: the minor we speak, and the features of docs/vfs.md the kernel offered.

        We ask for asynchronous reads, parallel directory operations, READDIRPLUS,
        1 MiB requests (from 7.28) and, from 7.40 when ``passthrough``, passthrough with
        ``stack_depth``. The kernel takes a backing file only from a filesystem stacked
        less deep than that: with 1, a backing file on an overlayfs (a container's root)
        is refused with ELOOP at FUSE_DEV_IOC_BACKING_OPEN; with 2 (the kernel's
        maximum) it is taken, and nothing can be stacked on our mount in turn. No
        writeback cache, POSIX ACLs or export support. ``max_background`` and
        ``congestion_threshold`` 0 keep the kernel's defaults.
        """
        init = self._init
        if init is None or self.minor is not None:
            raise ValueError("reply_init without an unanswered INIT")
        if stack_depth not in (1, 2):
            raise ValueError(f"a passthrough stack depth of {stack_depth} (the kernel allows 1 or 2)")
        minor = min(init.minor, NEWEST_MINOR)
        offered = init.flags | (init.flags2 << 32 if init.flags & INIT_EXT else 0)
        wanted = ASYNC_READ | PARALLEL_DIROPS | DO_READDIRPLUS
        if minor >= 28:
            wanted |= MAX_PAGES
        if passthrough and minor >= 40:
            wanted |= PASSTHROUGH
        flags = wanted & offered
        if minor >= 36 and init.flags & INIT_EXT:
            flags |= INIT_EXT
        self.minor = minor
        self.flags = flags
        self.passthrough = bool(flags & PASSTHROUGH)
        body = _INIT_OUT.pack(
            KERNEL_MAJOR, minor, init.max_readahead, flags & 0xFFFF_FFFF,
            max_background, congestion_threshold, MAX_REQUEST_BYTES, 1,
            MAX_PAGES_WANTED if flags & MAX_PAGES else 0, 0,
            flags >> 32 if minor >= 36 else 0,
            stack_depth if self.passthrough else 0)
        return self._reply(unique, body)

    def reply_error(self, unique: int, errno: int) -> bytes:
        """A failed request: ``errno`` is a positive error number (``errno.ENOENT``)."""
        if not 0 < errno < 4096:
            raise ValueError(f"not an errno: {errno}")
        return _OUT_HEADER.pack(_OUT_HEADER.size, -errno, unique)

    def reply_ok(self, unique: int) -> bytes:
        """Success with no data: RELEASE, RELEASEDIR, FLUSH, ACCESS, DESTROY."""
        return self._reply(unique, b"")

    def reply_entry(self, unique: int, attr: AttrFields, *, entry_timeout: float,
                    attr_timeout: float, uid: int = 0, gid: int = 0) -> bytes:
        """A successful LOOKUP: the node and how long the kernel may keep name and attributes."""
        return self._reply(unique, _entry(attr, entry_timeout, attr_timeout, uid, gid))

    def reply_negative_entry(self, unique: int, *, timeout: float) -> bytes:
        """An absent name the kernel may remember as absent for ``timeout`` seconds."""
        seconds, nanos = _split_time(timeout)
        return self._reply(unique, _ENTRY_OUT.pack(0, 0, seconds, 0, nanos, 0) + bytes(_ATTR.size))

    def reply_attr(self, unique: int, attr: AttrFields, *, attr_timeout: float, uid: int = 0,
                   gid: int = 0) -> bytes:
        """A GETATTR answer."""
        seconds, nanos = _split_time(attr_timeout)
        return self._reply(unique, _ATTR_OUT.pack(seconds, nanos, 0) + _attr(attr, uid, gid))

    def reply_statx(self, unique: int, attr: AttrFields, *, attr_timeout: float, uid: int = 0,
                    gid: int = 0) -> bytes:
        """A STATX answer (7.39+): the basic fields, no birth time."""
        if self._negotiated() < 39:
            raise ValueError(f"STATX does not exist in 7.{self.minor}")
        seconds, nanos = _split_time(attr_timeout)
        m_sec, m_nsec = _split_time(attr.mtime)
        when = _SX_TIME.pack(m_sec, m_nsec, 0)
        body = (_STATX_OUT.pack(seconds, nanos, 0, 0, 0)
                + _STATX_HEAD.pack(STATX_BASIC_STATS, PAGE_SIZE, 0, attr.nlink, uid, gid,
                                   attr.mode & 0xFFFF, 0, attr.ino, attr.size, _blocks(attr.size), 0)
                + when + _SX_TIME.pack(0, 0, 0) + when + when
                + _STATX_TAIL.pack(0, 0, 0, 0))
        return self._reply(unique, body)

    def reply_open(self, unique: int, fh: int, open_flags: int, backing_id: int = 0) -> bytes:
        """An OPEN or OPENDIR answer; ``FOPEN_PASSTHROUGH`` goes with a ``backing_id``.

        The kernel fails the open (EIO) when a passthrough open carries any flag outside
        ``PASSTHROUGH_OPEN_FLAGS`` (``FOPEN_KEEP_CACHE`` included: the page cache is the
        backing file's), or when passthrough was not negotiated; both are refused here.
        """
        passthrough = bool(open_flags & FOPEN_PASSTHROUGH)
        if passthrough != bool(backing_id):
            raise ValueError("FOPEN_PASSTHROUGH and a backing id go together")
        if passthrough and not self.passthrough:
            raise ValueError("passthrough was not negotiated on this connection")
        if passthrough and open_flags & ~PASSTHROUGH_OPEN_FLAGS:
            raise ValueError(f"open flags {open_flags:#x} are not allowed with FOPEN_PASSTHROUGH")
        self._negotiated()
        return self._reply(unique, _OPEN_OUT.pack(fh, open_flags, backing_id))

    def reply_data(self, unique: int, data: bytes) -> bytes:
        """A READ answer: the bytes (fewer than asked means end of file)."""
        return self._reply(unique, data)

    def reply_dirents(self, unique: int, size: int, entries: Iterable[DirEntry]) -> bytes:
        """A READDIR answer: as many of ``entries`` as fit in ``size`` bytes (none means the end)."""
        parts: list[bytes] = []
        used = 0
        for entry in entries:
            record = _dirent(entry)
            if used + len(record) > size:
                break
            parts.append(record)
            used += len(record)
        return self._reply(unique, b"".join(parts))

    def reply_direntplus(self, unique: int, size: int, entries: Iterable[DirEntry], *,
                         uid: int = 0, gid: int = 0) -> bytes:
        """A READDIRPLUS answer: entries with attributes, as many as fit in ``size`` bytes."""
        parts: list[bytes] = []
        used = 0
        for entry in entries:
            record = _plus_record(entry, uid, gid)
            if used + len(record) > size:
                break
            parts.append(record)
            used += len(record)
        return self._reply(unique, b"".join(parts))

    def reply_statfs(self, unique: int, *, blocks: int, bfree: int, bavail: int, files: int,
                     ffree: int, bsize: int, namelen: int, frsize: int) -> bytes:
        """A STATFS answer (statvfs fields)."""
        return self._reply(unique, _KSTATFS.pack(blocks, bfree, bavail, files, ffree, bsize,
                                                 namelen, frsize, 0))

    def reply_xattr(self, unique: int, value: bytes, size: int) -> bytes:
        """A GETXATTR answer: the length when ``size`` is 0, ERANGE when it does not fit."""
        if size == 0:
            return self._reply(unique, _XATTR_OUT.pack(len(value), 0))
        if len(value) > size:
            return self.reply_error(unique, errno_codes.ERANGE)
        return self._reply(unique, value)

    def reply_listxattr(self, unique: int, names: Iterable[str | bytes], size: int) -> bytes:
        """A LISTXATTR answer: the NUL-terminated names, under the same size rules."""
        return self.reply_xattr(unique, b"".join(os.fsencode(n) + b"\0" for n in names), size)

    def _negotiated(self) -> int:
        if self.minor is None:
            raise ValueError("a reply before INIT was answered")
        return self.minor

    @staticmethod
    def _reply(unique: int, body: bytes) -> bytes:
        return _OUT_HEADER.pack(_OUT_HEADER.size + len(body), 0, unique) + body


def _blocks(size: int) -> int:
    return (size + _BLOCK - 1) // _BLOCK


def _attr(attr: AttrFields, uid: int, gid: int) -> bytes:
    seconds, nanos = _split_time(attr.mtime)
    return _ATTR.pack(attr.ino, attr.size, _blocks(attr.size), seconds, seconds, seconds,
                      nanos, nanos, nanos, attr.mode, attr.nlink, uid, gid, 0, PAGE_SIZE, 0)


def _entry(attr: AttrFields, entry_timeout: float, attr_timeout: float, uid: int, gid: int) -> bytes:
    e_sec, e_nsec = _split_time(entry_timeout)
    a_sec, a_nsec = _split_time(attr_timeout)
    return _ENTRY_OUT.pack(attr.ino, 0, e_sec, a_sec, e_nsec, a_nsec) + _attr(attr, uid, gid)


# A listing is asked for again and again (every `ls`, every `find`) and its entries do not change
# within a run, so the packed bytes of an entry are kept: packing cost ~10 µs an entry, a hit ~1.
@functools.lru_cache(maxsize=1 << 16)
def _plus_record(entry: DirEntry, uid: int, gid: int) -> bytes:
    """One READDIRPLUS record: the entry's lookup answer followed by its dirent."""
    return _entry(entry.attr, entry.entry_timeout, entry.attr_timeout, uid, gid) + _dirent(entry)


def _dirent(entry: DirEntry) -> bytes:
    """One ``fuse_dirent``, padded to 8 bytes; its type is the mode's file-type bits."""
    name = os.fsencode(entry.name)
    record = _DIRENT.pack(entry.attr.ino, entry.next_offset, len(name), (entry.attr.mode >> 12) & 0xF) + name
    return record + bytes(-len(record) % 8)
