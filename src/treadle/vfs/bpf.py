"""The seccomp filter of trace mode: a small classic-BPF assembler, the program, its installation.

The filter fails closed (docs/vfs.md, "Trace mode"): a foreign ABI (i386 ``int 0x80``,
the x32 bit) and calls that carry paths out of the tracer's sight get ENOSYS from the
filter itself; the path-free calls of :mod:`treadle.vfs.syscalls` run natively; every
other number, known or not, stops at the tracer. A search over ranges of numbers keeps
each call's walk through the program to about a dozen instructions.

Installed through ctypes (``prctl`` and ``syscall(SYS_seccomp)``), with no libseccomp:
Debian 12's libseccomp cannot name the newest path calls, and a filter built from names
would let them by.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from treadle.vfs.syscalls import TRAPPED_IOCTLS, Syscall

# linux/filter.h, linux/bpf_common.h
BPF_LD_W_ABS = 0x00 | 0x00 | 0x20
BPF_JMP_JA = 0x05 | 0x00
BPF_JEQ_K = 0x05 | 0x10
BPF_JGE_K = 0x05 | 0x30
BPF_JSET_K = 0x05 | 0x40
BPF_RET_K = 0x06

# linux/seccomp.h, linux/audit.h
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ENOSYS = SECCOMP_RET_ERRNO | errno.ENOSYS
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
SECCOMP_SET_MODE_FILTER = 1
SYS_SECCOMP = 317
PR_SET_NO_NEW_PRIVS = 38

# Offsets into struct seccomp_data: nr, arch, instruction pointer, six 64-bit arguments
# (x86-64 is little-endian, so an argument's low word comes first).
OFF_NR = 0
OFF_ARCH = 4


def arg_low(index: int) -> int:
    """The offset of argument ``index``'s low 32 bits in ``struct seccomp_data``."""
    return 16 + 8 * index


INSN = struct.Struct("<HBBI")  # struct sock_filter: code, jt, jf, k


@dataclass(frozen=True)
class Insn:
    """One instruction; ``jt``/``jf`` are labels until :func:`assemble` turns them into offsets."""

    code: int
    k: int = 0
    jt: str | None = None
    jf: str | None = None
    label: str | None = None  # this instruction's own label


def assemble(program: list[Insn]) -> bytes:
    """Resolve labels into forward offsets and pack a ``sock_filter`` array.

    A conditional jump reaches at most 255 instructions ahead; the builder below routes
    longer ones through ``JA`` (32-bit offsets), so a jump out of range here is our bug.
    """
    where = {insn.label: i for i, insn in enumerate(program) if insn.label is not None}
    out = bytearray()
    for i, insn in enumerate(program):
        offsets = []
        for target in (insn.jt, insn.jf):
            offsets.append(0 if target is None else where[target] - i - 1)
        jt, jf = offsets
        if insn.code == BPF_JMP_JA and jt >= 0:
            out += INSN.pack(insn.code, 0, 0, jt)
            continue
        if not (0 <= jt <= 255 and 0 <= jf <= 255):
            raise ValueError(f"BPF jump out of range at instruction {i}")
        out += INSN.pack(insn.code, jt, jf, insn.k)
    if len(program) > 4096:  # BPF_MAXINSNS
        raise ValueError(f"BPF program of {len(program)} instructions is too long")
    return bytes(out)


def verdict(call: Syscall) -> int | None:
    """The filter's action for a call, or None for an ioctl-like call decided by its request."""
    if isinstance(call.write_intent, str) and call.write_intent.startswith("request:"):
        return None
    if call.cls == "A" or call.under_m == "native":
        return SECCOMP_RET_ALLOW
    if call.cls == "X" or call.under_m == "enosys":
        return SECCOMP_RET_ENOSYS
    return SECCOMP_RET_TRACE


class _Builder:
    def __init__(self) -> None:
        self.program: list[Insn] = []
        self.labels = 0

    def label(self) -> str:
        self.labels += 1
        return f"L{self.labels}"

    def emit(self, code: int, k: int = 0, jt: str | None = None, jf: str | None = None,
             label: str | None = None) -> None:
        self.program.append(Insn(code, k, jt, jf, label))

    def leaf(self, call: Syscall, label: str | None) -> None:
        action = verdict(call)
        if action is not None:
            self.emit(BPF_RET_K, action, label=label)
            return
        # ioctl-like: the request (an unsigned int, so the low word) decides.
        index = int(str(call.write_intent).split(":")[1])
        trace = self.label()
        self.emit(BPF_LD_W_ABS, arg_low(index), label=label)
        for request in sorted(TRAPPED_IOCTLS):
            self.emit(BPF_JEQ_K, request, jt=trace)
        self.emit(BPF_RET_K, SECCOMP_RET_ALLOW)
        self.emit(BPF_RET_K, SECCOMP_RET_TRACE, label=trace)

    def search(self, runs: list[tuple[int, Syscall]], label: str | None) -> None:
        """Binary search over runs (first number, a call standing for the run); nr is in A."""
        if len(runs) == 1:
            self.leaf(runs[0][1], label)
            return
        mid = len(runs) // 2
        go_right, left, right = self.label(), self.label(), self.label()
        # nr >= start of the right half: through JA, whose 32-bit offset reaches any distance.
        self.emit(BPF_JGE_K, runs[mid][0], jt=go_right, jf=left, label=label)
        self.emit(BPF_JMP_JA, jt=right, label=go_right)
        self.search(runs[:mid], left)
        self.search(runs[mid:], right)


def _runs(table: Mapping[int, Syscall]) -> list[tuple[int, Syscall]]:
    """Consecutive numbers with the same action, each as (first number, a representative)."""
    runs: list[tuple[int, Syscall]] = []
    previous: object = object()
    for nr in range(max(table) + 1):
        call = table[nr]
        action = verdict(call)
        key = ("request", nr) if action is None else action
        if key != previous:
            runs.append((nr, call))
            previous = key
    return runs


def build_filter(table: Mapping[int, Syscall]) -> bytes:
    """The seccomp program (a packed ``sock_filter`` array) for a complete call table.

    Order of checks: the architecture (anything but x86-64 gets ENOSYS), the x32 bit
    (ENOSYS), numbers above the table (TRACE, so the tracer warns and answers ENOSYS),
    then a search over the table's ranges.
    """
    if sorted(table) != list(range(max(table) + 1)):
        raise ValueError("the call table must cover every number from 0 up")
    b = _Builder()
    native, unforeign, known = b.label(), b.label(), b.label()
    b.emit(BPF_LD_W_ABS, OFF_ARCH)
    b.emit(BPF_JEQ_K, AUDIT_ARCH_X86_64, jt=native)
    b.emit(BPF_RET_K, SECCOMP_RET_ENOSYS)
    b.emit(BPF_LD_W_ABS, OFF_NR, label=native)
    b.emit(BPF_JSET_K, X32_SYSCALL_BIT, jf=unforeign)
    b.emit(BPF_RET_K, SECCOMP_RET_ENOSYS)
    b.emit(BPF_JGE_K, max(table) + 1, jf=known, label=unforeign)
    b.emit(BPF_RET_K, SECCOMP_RET_TRACE)
    b.search(_runs(table), known)
    return assemble(b.program)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(program: bytes) -> None:
    """Set no-new-privileges and install ``program`` as this thread's seccomp filter.

    Called in the command's child after the tracer seized it and before exec, so that
    set-uid bits are ignored (as under Parrot) and an unprivileged process may filter.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                           ctypes.c_ulong]
    libc.syscall.restype = ctypes.c_long
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // INSN.size, ctypes.addressof(buffer))
    if libc.syscall(ctypes.c_long(SYS_SECCOMP), ctypes.c_long(SECCOMP_SET_MODE_FILTER),
                    ctypes.c_long(0), ctypes.byref(fprog)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp(SECCOMP_SET_MODE_FILTER): {os.strerror(err)}")
