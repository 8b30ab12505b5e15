"""Tasks as the application builds them, and what the manager fills in when they end.

A ``Task`` is a command plus the files it reads and writes, named twice: the
local path on the manager's side and the name inside the worker's sandbox.
Sandbox names are checked here, at the application's call, so a name that
could escape the sandbox (absolute, or with a ``..`` component) never reaches
a worker. The numeric values of ``Result``, ``TaskState`` and ``FileFlag`` are
the wire values of protocol 9, so they can be compared with the reference's.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from treadle.errors import UsageError
from treadle.queue.protocol import FileFlag, ResultCode

# the wire's numbers under the names users import (treadle.queue.Result, FileFlag)
Result = ResultCode
MAX_OUTPUT_BYTES = 1 << 30  # stdout kept per task; the rest is dropped (STDOUT_MISSING)


class TaskState(enum.IntEnum):
    """Where a task is in its life inside the manager."""

    UNKNOWN = 0
    READY = 1
    RUNNING = 2
    WAITING_RETRIEVAL = 3
    RETRIEVED = 4
    DONE = 5
    CANCELED = 6


class FileKind(enum.Enum):
    """What an input or output is, which decides how it is named and sent."""

    FILE = "file"
    DIR = "dir"
    EMPTY_DIR = "empty_dir"
    BUFFER = "buffer"
    PIECE = "piece"
    COMMAND = "command"
    URL = "url"


@dataclass(frozen=True, slots=True)
class TaskFile:
    """One input or output of a task.

    ``local`` is the manager-side path (None for buffers, commands, URLs and
    empty directories); ``remote`` the sandbox name; ``source`` the command
    (``%%`` = destination) or URL; ``when`` restricts when an output is fetched.
    """

    kind: FileKind
    remote: str
    local: str | None = None
    cache: bool = True
    data: bytes | None = None
    source: str | None = None
    start: int = 0
    end: int = 0
    when: str = "always"
    watch: bool = False

    def flags(self) -> int:
        """The FLAGS field of the ``infile``/``outfile`` line."""
        f = FileFlag.CACHE if self.cache else FileFlag.NOCACHE
        if self.watch:
            f |= FileFlag.WATCH
        if self.when == "success":
            f |= FileFlag.SUCCESS_ONLY
        elif self.when == "failure":
            f |= FileFlag.FAILURE_ONLY
        return int(f)


def check_sandbox_name(name: str) -> str:
    """Refuse a sandbox name that could land outside the task's sandbox."""
    if not isinstance(name, str) or not name:
        raise UsageError(f"empty sandbox name {name!r}")
    if name.startswith("/"):
        raise UsageError(f"sandbox name {name!r} is absolute; it must stay inside the sandbox")
    parts = name.split("/")
    if ".." in parts:
        raise UsageError(f"sandbox name {name!r} contains '..'; it must stay inside the sandbox")
    if "\0" in name or "\n" in name:
        raise UsageError(f"sandbox name {name!r} contains a NUL or newline")
    if all(p in ("", ".") for p in parts):
        raise UsageError(f"sandbox name {name!r} is the sandbox itself; name a file inside it")
    return name


def check_no_nul(what: str, value: str) -> str:
    """Refuse a NUL byte: no command, path or environment string can carry one to exec."""
    if "\0" in value:
        raise UsageError(f"{what} {value[:200]!r} contains a NUL byte")
    return value


def reference_safe(name: str) -> bool:
    """Whether a reference worker decodes ``name`` correctly (its URL decoding handles bytes 0x20-0x7E only)."""
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        return False
    return all(0x20 <= b <= 0x7E for b in raw)


def _positive_or_none(label: str, value: float | None) -> int | None:
    if value is None:
        return None
    if value < 0:
        raise UsageError(f"{label} must not be negative (got {value})")
    return int(value)


class Task:
    """A shell command with its files, resources and limits; later, its result.

    ``running_time_max`` is in seconds and is sent as seconds (the reference API sends up to 10**6 s as 1 s).
    ``signal`` is only set when the worker says the task was killed by a
    signal: a reference worker reports a signal N exactly like ``exit N``
    (the reference worker reports a signal as an exit code), so with reference workers ``exit_code`` may hold a signal
    number and ``signal`` stays None.
    """

    __slots__ = (
        "command", "tag", "category", "priority", "cores", "memory", "disk", "gpus", "env",
        "max_retries", "running_time_max", "running_time_min", "end_time", "features", "inputs",
        "outputs", "id", "state", "result", "exit_code", "signal", "output", "host", "hostname",
        "attempts", "time_submitted", "time_started", "time_finished", "execute_usec", "bytes_sent",
        "bytes_received", "resources_allocated", "avoid_workers", "reason", "__weakref__",
    )  # a queue may hold a million tasks

    def __init__(
        self,
        command: str,
        *,
        tag: str | None = None,
        category: str = "default",
        priority: float = 0,
        cores: int | None = None,
        memory: int | None = None,
        disk: int | None = None,
        gpus: int | None = None,
        env: Mapping[str, str | None] | None = None,
        max_retries: int = 0,
        running_time_max: float | None = None,
        running_time_min: float | None = None,
        end_time: float | None = None,
        features: Iterable[str] = (),
    ) -> None:
        if not isinstance(command, str):
            raise UsageError("a task's command must be a string")
        self.command = check_no_nul("command", command)
        self.tag = tag
        self.category = category or "default"
        self.priority = priority
        self.cores = _positive_or_none("cores", cores)
        self.memory = _positive_or_none("memory", memory)
        self.disk = _positive_or_none("disk", disk)
        self.gpus = _positive_or_none("gpus", gpus)
        self.env: dict[str, str | None] = dict(env) if env else {}
        self.max_retries = int(max_retries)
        self.running_time_max = running_time_max
        self.running_time_min = running_time_min
        self.end_time = end_time
        self.features = tuple(features)
        self.inputs: list[TaskFile] = []
        self.outputs: list[TaskFile] = []
        # filled in by the manager
        self.id = 0
        self.state = TaskState.UNKNOWN
        self.result: Result | None = None
        self.exit_code: int | None = None
        self.signal: int | None = None
        self.output = b""
        self.host: str | None = None
        self.hostname: str | None = None
        self.attempts = 0
        self.time_submitted = 0.0
        self.time_started = 0.0
        self.time_finished = 0.0
        self.execute_usec = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.resources_allocated: dict[str, int] = {}
        # Why the queue, not the command, failed the task (e.g. an output it could not
        # write), in words for the user; empty when the task ran and came back normally.
        self.reason = ""
        # Workers (host:port, as in ``host``) this task should not go to while another
        # worker is connected: a caller retrying a failure elsewhere adds the one it failed on.
        self.avoid_workers: set[str] = set()

    def __repr__(self) -> str:
        return f"Task(id={self.id}, command={self.command!r}, state={self.state.name})"

    # ----------------------------------------------------------------- inputs
    def add_input(self, local: str, remote: str | None = None, *, cache: bool = True) -> Task:
        """Send the local file (or directory) ``local`` as ``remote`` in the sandbox."""
        remote = check_sandbox_name(remote if remote is not None else os.path.basename(local))
        local = check_no_nul("input path", os.fspath(local))
        kind = FileKind.DIR if os.path.isdir(local) else FileKind.FILE
        self.inputs.append(TaskFile(kind, remote, local=local, cache=cache))
        return self

    def add_input_dir(self, local: str, remote: str | None = None, *, cache: bool = True) -> Task:
        """Send the local directory tree ``local`` (subdirectories and symlinks kept)."""
        remote = check_sandbox_name(remote if remote is not None else os.path.basename(local.rstrip("/")))
        local = check_no_nul("input directory", os.fspath(local))
        self.inputs.append(TaskFile(FileKind.DIR, remote, local=local, cache=cache))
        return self

    def add_empty_dir(self, remote: str) -> Task:
        """Create an empty directory ``remote`` in the sandbox."""
        self.inputs.append(TaskFile(FileKind.EMPTY_DIR, check_sandbox_name(remote), cache=False))
        return self

    def add_input_buffer(self, data: bytes | str, remote: str, *, cache: bool = False) -> Task:
        """Send ``data`` as the file ``remote``."""
        if isinstance(data, str):
            data = data.encode()
        self.inputs.append(TaskFile(FileKind.BUFFER, check_sandbox_name(remote), data=bytes(data), cache=cache))
        return self

    def add_input_piece(self, local: str, remote: str, start: int, end: int, *, cache: bool = True) -> Task:
        """Send bytes ``start``..``end`` (inclusive) of ``local`` as ``remote``."""
        if start < 0 or end < start:
            raise UsageError(f"bad piece {start}..{end} of {local}")
        check_no_nul("input path", local)
        self.inputs.append(
            TaskFile(FileKind.PIECE, check_sandbox_name(remote), local=local, start=start, end=end, cache=cache)
        )
        return self

    def add_input_command(self, remote: str, command: str, *, cache: bool = False) -> Task:
        """Have the worker make ``remote`` by running ``command`` (``%%`` = the destination)."""
        check_no_nul("input command", command)
        self.inputs.append(TaskFile(FileKind.COMMAND, check_sandbox_name(remote), source=command, cache=cache))
        return self

    def add_input_url(self, url: str, remote: str, *, cache: bool = True) -> Task:
        """Have the worker fetch ``url`` as ``remote``."""
        check_no_nul("input URL", url)
        self.inputs.append(TaskFile(FileKind.URL, check_sandbox_name(remote), source=url, cache=cache))
        return self

    # ---------------------------------------------------------------- outputs
    def add_output(
        self,
        local: str,
        remote: str | None = None,
        *,
        cache: bool = False,
        when: str = "always",
        watch: bool = False,
    ) -> Task:
        """Fetch ``remote`` from the sandbox into ``local`` when the task ends."""
        if when not in ("always", "success", "failure"):
            raise UsageError(f"when= must be always, success or failure (got {when!r})")
        remote = check_sandbox_name(remote if remote is not None else os.path.basename(local))
        local = check_no_nul("output path", os.fspath(local))
        self.outputs.append(
            TaskFile(FileKind.FILE, remote, local=local, cache=cache, when=when, watch=watch)
        )
        return self

    # ---------------------------------------------------------------- helpers
    @property
    def declared(self) -> dict[str, int | None]:
        """The resource requests, None where undeclared."""
        return {"cores": self.cores, "memory": self.memory, "disk": self.disk, "gpus": self.gpus}

    @property
    def reference_safe(self) -> bool:
        """Whether a reference worker can receive every name of this task (bytes 0x20-0x7E only)."""
        names = [f.remote for f in self.inputs] + [f.remote for f in self.outputs]
        return all(reference_safe(n) for n in names)

    @property
    def return_status(self) -> int | None:
        """The reference's name for ``exit_code``."""
        return self.exit_code
