"""``treadle vfs doctor``: what this host offers each mode, and what ``auto`` picks (docs/vfs.md).

Every finding is tried, not guessed from versions: namespaces are made in a throw-away child,
and the mode modules answer for their own needs (``fuse_available``, ``passthrough_available``,
``trace_available``), so the doctor and a real run cannot disagree about a mode.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field

from treadle.errors import VfsError

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000

_YAMA = {
    0: "classic: a process may trace its own children",
    1: "restricted: a process may trace its descendants",
    2: "admin only: tracing needs CAP_SYS_PTRACE",
    3: "disabled: no process may trace another",
}
_IO_URING = {
    0: "enabled",
    1: "limited to the io_uring_group",
    2: "disabled",
}


@dataclass(frozen=True)
class Finding:
    """One line of the doctor's report: what was checked, whether it works, and why."""

    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    """All findings, and the mode ``auto`` picks (None when no mode works here)."""

    findings: list[Finding] = field(default_factory=list)
    auto: str | None = None
    auto_why: str = ""

    @property
    def works(self) -> bool:
        return self.auto is not None

    def lines(self) -> list[str]:
        """The report as aligned lines for a terminal."""
        width = max(len(f.name) for f in self.findings)
        out = [f"{f.name:<{width}}  {'ok ' if f.ok else 'no '} {f.detail}" for f in self.findings]
        picked = self.auto or "nothing"
        out.append(f"{'auto':<{width}}  {'ok ' if self.works else 'no '} picks {picked}: "
                   f"{self.auto_why}")
        return out

    def as_dict(self) -> dict[str, object]:
        """The report for ``--json``."""
        return {"checks": [{"name": f.name, "ok": f.ok, "detail": f.detail}
                           for f in self.findings],
                "auto": self.auto, "why": self.auto_why}


def _unshare_errno(flags: int) -> int:
    """Try ``unshare(flags)`` in a forked child that then exits; 0 when it worked, else the errno.

    A child, so that the doctor's own process keeps its namespaces.
    """
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(flags) != 0:
                code = ctypes.get_errno() or 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _kernel() -> Finding:
    machine = platform.machine()
    return Finding("kernel", machine == "x86_64",
                   f"Linux {platform.release()} on {machine}"
                   + ("" if machine == "x86_64" else " (trace mode needs x86-64)"))


def _namespaces() -> list[Finding]:
    found = []
    for name, flags in (("mount namespace", CLONE_NEWNS), ("user namespace", CLONE_NEWUSER)):
        err = _unshare_errno(flags)
        found.append(Finding(name, err == 0, "can be made" if err == 0
                             else f"unshare refused: {os.strerror(err)}"))
    return found


def _ptrace() -> Finding:
    scope = _read_int("/proc/sys/kernel/yama/ptrace_scope")
    if scope is None:
        return Finding("ptrace", True, "no Yama restriction")
    allowed = scope < 2 or (scope == 2 and os.geteuid() == 0)
    return Finding("ptrace", allowed, f"Yama ptrace_scope {scope}, {_YAMA.get(scope, 'unknown')}")


def _seccomp() -> Finding:
    try:
        with open("/proc/sys/kernel/seccomp/actions_avail") as f:
            actions = f.read().split()
    except OSError:
        return Finding("seccomp", False, "no seccomp filters in this kernel")
    if "trace" in actions:
        return Finding("seccomp", True, "filters with the TRACE action")
    return Finding("seccomp", False, "filters lack the TRACE action: " + " ".join(actions))


def _io_uring() -> Finding:
    disabled = _read_int("/proc/sys/kernel/io_uring_disabled")
    state = "enabled" if disabled is None else _IO_URING.get(disabled, f"setting {disabled}")
    return Finding("io_uring", True, f"{state}; fuse mode serves it, trace mode refuses "
                                     "io_uring_setup with ENOSYS")


def _mode_check(name: str, check: Callable[[], tuple[bool, str]]) -> Finding:
    ok, why = check()
    return Finding(name, ok, why)


def examine() -> Report:
    """Run every check of docs/vfs.md, "Choosing a mode", in the order the doctor prints them."""
    from treadle.vfs.fusemode import fuse_available, passthrough_available
    from treadle.vfs.launcher import choose_mode
    from treadle.vfs.trace import trace_available

    report = Report()
    report.findings.append(_kernel())
    report.findings.append(_mode_check("fuse", fuse_available))
    report.findings.append(_mode_check("passthrough", passthrough_available))
    report.findings.extend(_namespaces())
    report.findings.append(_ptrace())
    report.findings.append(_seccomp())
    report.findings.append(_io_uring())
    report.findings.append(_mode_check("trace", trace_available))
    try:
        report.auto, report.auto_why = choose_mode("auto")
    except VfsError as e:
        report.auto_why = str(e)
    return report
