"""The worker's command line: its parser and the one dataclass of its options and defaults.

Standard library only and Python 3.8 syntax: the worker zipapp ships this module
(``treadle worker-bundle``). ``treadle worker`` uses the same parser, so its help,
ranges and defaults are the zipapp's.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import NoReturn

RESOURCE_NAMES = ("cores", "memory", "disk", "gpus")


def treadle_version() -> str:
    try:
        from .. import __version__

        return str(__version__)
    except ImportError:  # inside the zipapp the package root is a stub
        return "0"


class WorkerUsageError(Exception):
    """A bad command line or option value (printed as one line)."""


@dataclass
class WorkerOptions:
    """Everything the worker's command line can set; the defaults live here only."""

    managers: list = field(default_factory=list)  # [(host, port)], tried in turn
    project: str | None = None  # -M regex: find the manager through the catalog
    catalog: str | None = None
    password: bytes | None = None
    cores: int | None = None
    memory: int | None = None
    disk: int | None = None
    gpus: int | None = None
    idle_timeout: float = 900.0
    connect_timeout: float = 900.0
    single_shot: bool = False
    wall_time: float | None = None
    features: tuple = ()
    workdir: str | None = None
    disable_symlinks: bool = False
    disable_third_party: bool = False  # refuse thirdget, thirdput and non-HTTP url inputs
    tls: bool = False  # TLS to a treadle manager (the reference speaks plain TCP only)
    tls_ca: str | None = None  # trust certificates signed by this CA file
    min_backoff: float = 1.0
    max_backoff: float = 60.0
    parent_death: bool = False
    arch: str | None = None
    os_name: str | None = None
    debug: tuple = ()
    debug_file: str | None = None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise WorkerUsageError(message)


class _Bounded:
    """An argparse type for a number in [low, high], so a negative or absurd value is
    refused while parsing, in one line (``treadle`` uses click's ranges; the worker
    travels without click). ``low`` and ``high`` stay readable for the CLI's tests."""

    def __init__(self, kind: type, low: float, high: float) -> None:
        self.kind, self.low, self.high = kind, low, high
        self.__name__ = kind.__name__  # argparse names the type in "invalid int value"

    def __call__(self, text: str) -> float:
        value = self.kind(text)  # ValueError: argparse says "invalid int value: 'x'"
        if not self.low <= value <= self.high:
            raise argparse.ArgumentTypeError(f"{text} is not in the range {self.low} to {self.high}")
        return value


_SECONDS = _Bounded(float, 0, 10**9)  # a billion seconds is thirty years
_AMOUNT = _Bounded(int, 0, 10**9)  # cores, MB, GPUs


def build_parser(prog: str = "treadle worker") -> argparse.ArgumentParser:
    """The worker's options, with the reference worker's letters (``treadle worker --help``)."""
    ap = _Parser(
        prog=prog,
        description="Connect to a Work Queue manager and run its tasks.",
        epilog="example: %(prog)s --cores 2 -t 300 127.0.0.1 9123",
    )
    ap.add_argument("address", nargs="*", help="HOST PORT, HOST:PORT or 'h1:p1;h2:p2'")
    ap.add_argument("-M", "--manager-name", dest="project", metavar="PROJECT", help="find the manager whose "
                    "project matches this regex through the catalog")
    ap.add_argument("-C", "--catalog", metavar="HOST:PORT", help="catalog server HOST:PORT")
    ap.add_argument("-P", "--password", metavar="FILE", help="password file")
    ap.add_argument("-t", "--timeout", type=_SECONDS, metavar="S",
                    help="idle and connect timeout (default 900)")
    ap.add_argument("--idle-timeout", type=_SECONDS, metavar="S",
                    help="leave after this long without a task (default: -t)")
    ap.add_argument("--connect-timeout", type=_SECONDS, metavar="S",
                    help="give up after this long without reaching a manager (default: -t)")
    ap.add_argument("--single-shot", action="store_true", help="exit after one connection")
    for name in RESOURCE_NAMES:
        ap.add_argument(f"--{name}", type=_AMOUNT, metavar="N",
                        help=f"{name} to offer (also ${name.upper()})")
    ap.add_argument("--wall-time", type=_SECONDS, metavar="S", help="worker lifetime")
    ap.add_argument("--feature", action="append", default=[], metavar="NAME", help="a feature tasks can require")
    ap.add_argument("-s", "--workdir", metavar="DIR", help="parent of the workspace")
    ap.add_argument("--disable-symlinks", action="store_true",
                    help="never symlink an input into a sandbox: hard-link it, or copy it where that fails")
    ap.add_argument("--disable-third-party", action="store_true",
                    help="refuse thirdget, thirdput and file:// (any non-HTTP) url inputs, "
                         "with which a manager reads or writes files outside the workspace")
    ap.add_argument("--tls", action="store_true",
                    help="connect with TLS (treadle managers only), checking the manager's "
                         "certificate against the system's CAs")
    ap.add_argument("--tls-ca", metavar="FILE",
                    help="with TLS, trust the manager certificates this CA file signed")
    ap.add_argument("-i", "--min-backoff", type=_SECONDS, metavar="S",
                    help="first wait before reconnecting (default 1)")
    ap.add_argument("-b", "--max-backoff", type=_SECONDS, metavar="S",
                    help="longest wait between reconnection attempts (default 60)")
    ap.add_argument("--parent-death", action="store_true", help="exit when the parent exits")
    ap.add_argument("-A", "--arch", metavar="ARCH", help="architecture reported to the manager")
    ap.add_argument("-O", "--os", dest="os_name", metavar="OS", help="operating system reported")
    ap.add_argument("-d", "--debug", action="append", default=[], metavar="FLAG",
                    help="debug output (any flag, e.g. all, turns it on)")
    ap.add_argument("-o", "--debug-file", metavar="FILE", help="write debug output to FILE")
    ap.add_argument("-v", "--version", action="version",
                    version=f"treadle worker {treadle_version()} (protocol 9)")
    return ap


def parse_address(words: list) -> list:
    """``HOST PORT``, ``HOST:PORT`` or ``"h1:p1;h2:p2"`` as [(host, port)]."""
    if len(words) == 2 and ":" not in words[0]:
        words = [f"{words[0]}:{words[1]}"]
    if len(words) != 1:
        raise WorkerUsageError("give the manager as HOST PORT, HOST:PORT or 'h1:p1;h2:p2'")
    out = []
    for item in words[0].split(";"):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise WorkerUsageError(f"bad manager address {item!r} (want HOST:PORT)")
        out.append((host, int(port)))
    return out


def parse_options(argv: list, prog: str = "treadle worker") -> WorkerOptions:
    """Command line plus the CORES/MEMORY/DISK/GPUS environment variables."""
    ns = build_parser(prog).parse_args(argv)
    opts = WorkerOptions()
    if ns.project:
        if ns.address:
            raise WorkerUsageError("give either -M NAME or a manager address, not both")
        opts.project = ns.project
    else:
        opts.managers = parse_address(ns.address)
    opts.catalog = ns.catalog
    if ns.password:
        try:
            with open(ns.password, "rb") as f:
                opts.password = f.read()
        except OSError as e:
            raise WorkerUsageError(f"cannot read password file {ns.password}: {e.strerror}") from None
    if ns.timeout is not None:
        opts.idle_timeout = opts.connect_timeout = ns.timeout
    if ns.idle_timeout is not None:
        opts.idle_timeout = ns.idle_timeout
    if ns.connect_timeout is not None:
        opts.connect_timeout = ns.connect_timeout
    for name in RESOURCE_NAMES:
        value = getattr(ns, name)
        if value is None and os.environ.get(name.upper(), "").strip():
            try:
                value = int(os.environ[name.upper()])
            except ValueError:
                raise WorkerUsageError(f"${name.upper()} is not an integer") from None
        if value is not None and value < 0:
            raise WorkerUsageError(f"--{name} must not be negative")
        setattr(opts, name, value)
    opts.single_shot = ns.single_shot
    opts.wall_time = ns.wall_time
    opts.features = tuple(ns.feature)
    opts.workdir = ns.workdir
    opts.disable_symlinks = ns.disable_symlinks
    opts.disable_third_party = ns.disable_third_party
    opts.tls = ns.tls or ns.tls_ca is not None
    if ns.tls_ca is not None and not os.path.isfile(ns.tls_ca):
        raise WorkerUsageError(f"CA file {ns.tls_ca} does not exist")
    opts.tls_ca = ns.tls_ca
    if ns.min_backoff is not None:
        opts.min_backoff = max(0.01, ns.min_backoff)
    if ns.max_backoff is not None:
        opts.max_backoff = ns.max_backoff
    opts.max_backoff = max(opts.min_backoff, opts.max_backoff)
    opts.parent_death = ns.parent_death
    opts.arch = ns.arch
    opts.os_name = ns.os_name
    opts.debug = tuple(ns.debug)
    opts.debug_file = ns.debug_file
    return opts
