"""The differential probe (docs/vfs.md, "The completeness test"), in Python through ctypes.

Usage: probe.py CASES M FILEID EXT HEX MISSING OUTSIDE. Same cases, targets and output
lines as probe.c: every case is one raw ``syscall()`` in a child of its own. It runs
under any python3 with only the standard library, since it runs inside ``treadle vfs run``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
AT_FDCWD = -100
BUFSZ = 4096
# glibc's names (strerrorname_np) where Python's table picks an alias of the same number
ERRNO_NAMES = {**errno.errorcode, errno.EOPNOTSUPP: "EOPNOTSUPP", errno.EDEADLK: "EDEADLK",
               errno.EAGAIN: "EAGAIN"}


class Target:
    def __init__(self, name: str, path: str, *, privileged_ok: bool = True, chdir_to: str = "",
                 dir_of: str = "") -> None:
        self.name, self.path, self.privileged_ok = name, path, privileged_ok
        self.chdir_to, self.dir_of = chdir_to, dir_of


def escaped(label: str, data: bytes, root: bytes) -> str:
    text = "".join(chr(b) if 32 < b < 127 and b != 92 else f"\\x{b:02x}"
                   for b in data.replace(root, b"M"))
    return f" {label}={text}"


def mode_fields(mode: int, size: int) -> str:
    kinds = {stat.S_IFREG: "reg", stat.S_IFDIR: "dir", stat.S_IFLNK: "lnk"}
    sized = f" size={size}" if stat.S_ISREG(mode) else ""
    return f"{sized} mode={mode & 0o7777:04o} type={kinds.get(stat.S_IFMT(mode), 'other')}"


def read_fields(fd: int) -> str:
    digest, total = 1469598103934665603, 0
    try:
        while chunk := os.read(fd, BUFSZ):
            for b in chunk:
                digest = ((digest ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
            total += len(chunk)
        out = f" read={total} hash={digest:016x}"
    except OSError as e:
        out = f" read={ERRNO_NAMES[e.errno or 0]}"
    try:
        st = os.fstat(fd)
        out += mode_fields(st.st_mode, st.st_size)
    except OSError:
        pass
    return out


def run_case(tokens: list[str], target: Target, root: str, outside: str) -> str:
    dirfd = AT_FDCWD
    try:
        if target.chdir_to:
            os.chdir(target.chdir_to)
        if target.dir_of:
            dirfd = os.open(target.dir_of, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        return f" setup={ERRNO_NAMES[e.errno or 0]}"
    keep: list[object] = []  # buffers that must live until the call returns

    def buffer(size: int) -> ctypes.Array[ctypes.c_char]:
        buf = ctypes.create_string_buffer(size)
        keep.append(buf)
        return buf

    def text(value: str) -> int:
        return ctypes.addressof(buffer_of(value.encode()))

    def buffer_of(data: bytes) -> ctypes.Array[ctypes.c_char]:
        buf = ctypes.create_string_buffer(data, len(data) + 1)
        keep.append(buf)
        return buf

    args: list[int] = []
    marks: set[str] = set()
    decode: tuple[str, ctypes.Array[ctypes.c_char]] | None = None
    for a in tokens[2:]:
        if a in ("R", "W", "cwd"):
            marks.add(a)
            continue
        if a == "D":
            v = dirfd
        elif a == "P":
            v = text(target.path)
        elif a == "P+":
            v = text(target.path + ".new")
        elif a == "O":
            v = text(outside + ".new")
        elif a == "F":
            v = libc.syscall(ctypes.c_long(257), ctypes.c_long(dirfd), ctypes.c_char_p(target.path.encode()),
                             ctypes.c_long(os.O_RDONLY))
        elif a.startswith("i:"):
            v = int(a[2:], 0)
        elif a.startswith("s:"):
            v = text(a[2:])
        elif a == "0":
            v = 0
        elif a.startswith("how:"):
            v = ctypes.addressof(buffer_of(struct.pack("<QQQ", int(a[4:], 0), 0, 0)))
        elif a in ("st", "stx", "sfs", "lk", "xv", "xl", "b"):
            buf = buffer({"st": 144, "stx": 256, "sfs": 120}.get(a, BUFSZ))
            decode, v = (a, buf), ctypes.addressof(buf)
        elif a in ("xargs", "xset"):
            value = buffer(BUFSZ) if a == "xargs" else buffer_of(b"1")
            size = BUFSZ if a == "xargs" else 1
            v = ctypes.addressof(buffer_of(struct.pack("<QII", ctypes.addressof(value), size, 0)))
            if a == "xargs":
                decode = ("xv", value)
        elif a in ("fa", "fsx", "flags", "mid"):
            v = ctypes.addressof(buffer(32))
        elif a == "fh":
            v = ctypes.addressof(buffer_of(struct.pack("<I", 128) + bytes(132)))
        elif a == "ino":
            v = libc.syscall(ctypes.c_long(294), ctypes.c_long(0))
        elif a == "fan":
            v = libc.syscall(ctypes.c_long(300), ctypes.c_long(0), ctypes.c_long(os.O_RDONLY))
        elif a == "fsfd":
            v = libc.syscall(ctypes.c_long(430), ctypes.c_char_p(b"tmpfs"), ctypes.c_long(0))
        elif a == "argv":
            v = ctypes.addressof((ctypes.c_char_p * 2)(target.path.encode(), None))
        elif a == "envp":
            v = ctypes.addressof((ctypes.c_char_p * 1)(None))
        else:
            return f" bad-token={a}"
        args.append(v)
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(int(tokens[1], 0)), *(ctypes.c_long(x) for x in args))
    err = ctypes.get_errno()
    if ret < 0:
        return f" ret=-1 errno={ERRNO_NAMES.get(err, str(err))}"
    out = " ret=ok" if marks & {"R", "W"} else f" ret={ret}"
    if "R" in marks:
        out += read_fields(ret)
    if decode is not None:
        kind, buf = decode
        raw = buf.raw
        if kind == "st":
            out += mode_fields(struct.unpack_from("<I", raw, 24)[0], struct.unpack_from("<q", raw, 48)[0])
        elif kind == "stx":
            out += mode_fields(struct.unpack_from("<H", raw, 0x1C)[0], struct.unpack_from("<Q", raw, 0x28)[0])
        elif kind == "sfs":
            out += f" ro={struct.unpack_from('<Q', raw, 80)[0] & 1}"
        elif kind in ("lk", "xv"):
            out += escaped(kind, raw[:ret], root.encode())
        elif kind == "xl":
            out += " names=" + ",".join(sorted(n.decode() for n in raw[:ret].split(b"\0") if n))
    if "cwd" in marks:
        try:
            out += escaped("cwd", os.getcwd().encode(), root.encode())
        except OSError as e:
            out += f" cwd={ERRNO_NAMES[e.errno or 0]}"
    return out


def main(argv: list[str]) -> int:
    cases, root, fileid, ext, hexdigest, missing, outside = argv
    base = os.path.basename(outside)
    targets = [
        Target("obj", f"{root}/fileid/{fileid}"),
        Target("ext", f"{root}/fileid/{fileid}.{ext}"),
        Target("sha", f"{root}/sha256/{hexdigest}"),
        Target("table", f"{root}/table/images/{fileid}.{ext}"),
        Target("missing", f"{root}/fileid/{missing}"),
        Target("dir", f"{root}/fileid"),
        Target("top", root, privileged_ok=False),
        Target("up", f"{root}/fileid/../../{base}", privileged_ok=False),
        Target("rel", fileid, chdir_to=f"{root}/fileid"),
        Target("dirfd", fileid, dir_of=f"{root}/fileid"),
    ]
    with open(cases) as f:
        lines = [line.split() for line in f if line.strip() and not line.startswith("#")]
    for tokens in lines:
        has_dirfd = "D" in tokens[2:] or "F" in tokens[2:]
        for target in targets:
            if tokens[0].startswith("!") and not target.privileged_ok:
                continue
            if target.dir_of and not has_dirfd:
                continue
            sys.stdout.write(f"{target.name} {tokens[0]}")
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                os.write(1, (run_case(tokens, target, root, outside) + "\n").encode())
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            if status != 0:
                sys.stdout.write(f" died={status}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
