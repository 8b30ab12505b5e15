"""The reference Work Queue Python names, mapped onto treadle's API.

An existing reference program runs after changing only its import::

    from treadle.queue.compat import *      # instead of: from work_queue import *

Every name here forwards to ``treadle.queue.Manager`` / ``Task``; nothing adds
behaviour, except that text comes back as ``str`` where the reference binding
returns ``str`` (``output``, ``std_output``, ``result_str``; ``command``, ``tag``,
``category``, ``host`` and ``hostname`` are ``str`` in treadle already), so a
script's ``"out: " + t.output`` keeps working. One deliberate difference:
``specify_running_time_max`` takes seconds and sends seconds, where
the reference binding turns any value up to 10**6 into one second.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from treadle.errors import UsageError
from treadle.queue.manager import Manager
from treadle.queue.protocol import DEFAULT_PORT
from treadle.queue.task import FileFlag, Result, TaskState
from treadle.queue.task import Task as _Task

WORK_QUEUE_DEFAULT_PORT = DEFAULT_PORT
WORK_QUEUE_RANDOM_PORT = 0
WORK_QUEUE_WAITFORTASK = -1

WORK_QUEUE_INPUT = 0
WORK_QUEUE_OUTPUT = 1

WORK_QUEUE_NOCACHE = int(FileFlag.NOCACHE)
WORK_QUEUE_CACHE = int(FileFlag.CACHE)
WORK_QUEUE_SYMLINK = int(FileFlag.SYMLINK)
WORK_QUEUE_PREEXIST = int(FileFlag.PREEXIST)
WORK_QUEUE_THIRDGET = int(FileFlag.THIRDGET)
WORK_QUEUE_THIRDPUT = int(FileFlag.THIRDGET)
WORK_QUEUE_WATCH = int(FileFlag.WATCH)
WORK_QUEUE_FAILURE_ONLY = int(FileFlag.FAILURE_ONLY)
WORK_QUEUE_SUCCESS_ONLY = int(FileFlag.SUCCESS_ONLY)

WORK_QUEUE_RESULT_SUCCESS = int(Result.SUCCESS)
WORK_QUEUE_RESULT_INPUT_MISSING = int(Result.INPUT_MISSING)
WORK_QUEUE_RESULT_OUTPUT_MISSING = int(Result.OUTPUT_MISSING)
WORK_QUEUE_RESULT_STDOUT_MISSING = int(Result.STDOUT_MISSING)
WORK_QUEUE_RESULT_SIGNAL = int(Result.SIGNAL)
WORK_QUEUE_RESULT_RESOURCE_EXHAUSTION = int(Result.RESOURCE_EXHAUSTION)
WORK_QUEUE_RESULT_TASK_TIMEOUT = int(Result.TASK_TIMEOUT)
WORK_QUEUE_RESULT_UNKNOWN = int(Result.UNKNOWN)
WORK_QUEUE_RESULT_FORSAKEN = int(Result.FORSAKEN)
WORK_QUEUE_RESULT_MAX_RETRIES = int(Result.MAX_RETRIES)
WORK_QUEUE_RESULT_TASK_MAX_RUN_TIME = int(Result.TASK_MAX_RUN_TIME)
WORK_QUEUE_RESULT_DISK_ALLOC_FULL = int(Result.DISK_ALLOC_FULL)
WORK_QUEUE_RESULT_RMONITOR_ERROR = int(Result.RMONITOR_ERROR)
WORK_QUEUE_RESULT_OUTPUT_TRANSFER_ERROR = int(Result.OUTPUT_TRANSFER_ERROR)

WORK_QUEUE_TASK_UNKNOWN = int(TaskState.UNKNOWN)
WORK_QUEUE_TASK_READY = int(TaskState.READY)
WORK_QUEUE_TASK_RUNNING = int(TaskState.RUNNING)
WORK_QUEUE_TASK_WAITING_RETRIEVAL = int(TaskState.WAITING_RETRIEVAL)
WORK_QUEUE_TASK_RETRIEVED = int(TaskState.RETRIEVED)
WORK_QUEUE_TASK_DONE = int(TaskState.DONE)
WORK_QUEUE_TASK_CANCELED = int(TaskState.CANCELED)

WORK_QUEUE_ALLOCATION_MODE_FIXED = 0
WORK_QUEUE_ALLOCATION_MODE_MAX = 1
WORK_QUEUE_ALLOCATION_MODE_MIN_WASTE = 2
WORK_QUEUE_ALLOCATION_MODE_MAX_THROUGHPUT = 3
_MODES = {0: "FIXED", 1: "MAX", 2: "MIN_WASTE", 3: "MAX_THROUGHPUT"}


def _cache(flags: int | None, cache: bool | None) -> bool:
    if flags is not None:
        return bool(flags & WORK_QUEUE_CACHE)
    return True if cache is None else bool(cache)


def _when(flags: int | None) -> str:
    if flags and flags & WORK_QUEUE_SUCCESS_ONLY:
        return "success"
    if flags and flags & WORK_QUEUE_FAILURE_ONLY:
        return "failure"
    return "always"


# Where the manager's Task keeps its output bytes (a slot), under the text property below.
_OUTPUT_SLOT: Any = _Task.__dict__["output"]


class Task(_Task):
    """``work_queue.Task``: a treadle Task with the reference's ``specify_*`` methods."""

    def __init__(self, command: str) -> None:
        super().__init__(command)

    def specify_command(self, command: str) -> None:
        self.command = command

    def specify_tag(self, tag: str) -> None:
        self.tag = tag

    def specify_category(self, name: str) -> None:
        self.category = name

    def specify_priority(self, priority: float) -> None:
        self.priority = priority

    def specify_cores(self, cores: int) -> None:
        self.cores = cores

    def specify_memory(self, memory: int) -> None:
        self.memory = memory

    def specify_disk(self, disk: int) -> None:
        self.disk = disk

    def specify_gpus(self, gpus: int) -> None:
        self.gpus = gpus

    def specify_max_retries(self, max_retries: int) -> None:
        self.max_retries = max_retries

    def specify_running_time_max(self, seconds: float) -> None:
        self.running_time_max = seconds

    def specify_running_time_min(self, seconds: float) -> None:
        self.running_time_min = seconds

    def specify_end_time(self, seconds: float) -> None:
        self.end_time = seconds

    def specify_feature(self, name: str) -> None:
        self.features = (*self.features, name)

    def specify_environment_variable(self, name: str, value: str | None = None) -> None:
        self.env[name] = value

    def specify_file(
        self,
        local_name: str,
        remote_name: str | None = None,
        type: int = WORK_QUEUE_INPUT,  # noqa: A002 - the reference's keyword
        flags: int | None = None,
        cache: bool | None = None,
    ) -> None:
        if type == WORK_QUEUE_OUTPUT:
            self.specify_output_file(local_name, remote_name, flags, cache)
        else:
            self.specify_input_file(local_name, remote_name, flags, cache)

    def specify_input_file(
        self, local_name: str, remote_name: str | None = None, flags: int | None = None, cache: bool | None = None
    ) -> None:
        self.add_input(local_name, remote_name, cache=_cache(flags, cache))

    def specify_output_file(
        self, local_name: str, remote_name: str | None = None, flags: int | None = None, cache: bool | None = None
    ) -> None:
        watch = bool(flags and flags & WORK_QUEUE_WATCH)
        self.add_output(local_name, remote_name, cache=_cache(flags, cache), when=_when(flags), watch=watch)

    def specify_buffer(self, buffer: bytes | str, remote_name: str, flags: int | None = None, cache: bool | None = None) -> None:
        self.add_input_buffer(buffer, remote_name, cache=_cache(flags, cache) if flags is not None or cache is not None else False)

    def specify_directory(
        self,
        local_name: str | None,
        remote_name: str | None = None,
        type: int = WORK_QUEUE_INPUT,  # noqa: A002
        flags: int | None = None,
        recursive: bool = False,
        cache: bool | None = None,
    ) -> None:
        if type == WORK_QUEUE_OUTPUT:
            if local_name is None:
                raise UsageError("an output directory needs a local name")
            self.add_output(local_name, remote_name, cache=_cache(flags, cache), when=_when(flags))
        elif local_name is None:
            if remote_name is None:
                raise UsageError("an empty directory needs a remote name")
            self.add_empty_dir(remote_name)
        else:
            self.add_input_dir(local_name, remote_name, cache=_cache(flags, cache))

    def specify_file_piece(
        self,
        local_name: str,
        remote_name: str,
        start_byte: int,
        end_byte: int,
        type: int = WORK_QUEUE_INPUT,  # noqa: A002
        flags: int | None = None,
        cache: bool | None = None,
    ) -> None:
        if type == WORK_QUEUE_OUTPUT:
            raise UsageError("file pieces can only be inputs")
        self.add_input_piece(local_name, remote_name, start_byte, end_byte, cache=_cache(flags, cache))

    def specify_file_command(self, remote_name: str, cmd: str, type: int = WORK_QUEUE_INPUT, cache: bool | None = None) -> None:  # noqa: A002
        if type == WORK_QUEUE_OUTPUT:
            raise UsageError("file commands for outputs (thirdput) are not supported")
        self.add_input_command(remote_name, cmd, cache=bool(cache))

    def specify_url(self, url: str, remote_name: str, type: int = WORK_QUEUE_INPUT, flags: int | None = None, cache: bool | None = None) -> None:  # noqa: A002
        if type == WORK_QUEUE_OUTPUT:
            raise UsageError("URL outputs are not supported")
        self.add_input_url(url, remote_name, cache=_cache(flags, cache))

    @property  # type: ignore[override]  # text here, where the manager's Task holds bytes
    def output(self) -> str:
        """The task's standard output as text, as the reference binding's SWIG layer decodes it.

        The manager stores bytes; undecodable bytes survive as surrogate escapes, so
        ``t.output.encode("utf-8", "surrogateescape")`` gives them back exactly.
        """
        return _OUTPUT_SLOT.__get__(self).decode("utf-8", "surrogateescape")

    @output.setter
    def output(self, data: bytes) -> None:
        _OUTPUT_SLOT.__set__(self, data)

    @property
    def std_output(self) -> str:
        return self.output

    @property
    def result_str(self) -> str:
        """The result's name (``"SUCCESS"``, ``"SIGNAL"``, ...), as ``work_queue_result_str`` gives it."""
        return Result(self.result).name if self.result is not None else "UNKNOWN"

    @property
    def total_submissions(self) -> int:
        return self.attempts

    @property
    def taskid(self) -> int:
        return self.id


class WorkQueue(Manager):
    """``work_queue.WorkQueue``: a treadle Manager with the reference's method names."""

    def __init__(
        self,
        port: int = WORK_QUEUE_DEFAULT_PORT,
        name: str | None = None,
        shutdown: bool = False,
        stats_log: str | None = None,
        transactions_log: str | None = None,
        debug_log: str | None = None,
        host: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(port, name=name, host=host, stats_log=stats_log, transactions_log=transactions_log, **kwargs)
        self._shutdown_on_close = shutdown

    def close(self) -> None:
        if self._shutdown_on_close and not self._closed:
            self.shutdown_workers(0)
        super().close()

    def specify_log(self, path: str) -> None:
        self.log_stats(path)

    def specify_transactions_log(self, path: str) -> None:
        self.log_transactions(path)

    def specify_name(self, name: str) -> None:
        self.name = name

    def specify_password(self, password: str | bytes) -> None:
        self._password = password.encode() if isinstance(password, str) else password

    def specify_password_file(self, path: str) -> None:
        with open(path, "rb") as f:
            self._password = f.read()

    def specify_catalog_server(self, hostname: str, port: int) -> None:
        self.catalog = f"{hostname}:{port}"

    def specify_keepalive_interval(self, seconds: float) -> None:
        self.keepalive_interval = seconds

    def specify_keepalive_timeout(self, seconds: float) -> None:
        self.keepalive_timeout = seconds

    def specify_category_max_resources(self, category: str, rmd: Mapping[str, int]) -> None:
        self.set_category(category, max=_resources(rmd))

    def specify_category_min_resources(self, category: str, rmd: Mapping[str, int]) -> None:
        self.set_category(category, min=_resources(rmd))

    def specify_category_first_allocation_guess(self, category: str, rmd: Mapping[str, int]) -> None:
        self.set_category(category, first=_resources(rmd))

    def specify_category_mode(self, category: str | None, mode: int) -> None:
        self.set_category(category or "default", mode=_MODES.get(mode, "FIXED"))

    def activate_fast_abort(self, multiplier: float) -> None:
        self.fast_abort(multiplier)

    def activate_fast_abort_category(self, name: str, multiplier: float) -> None:
        self.fast_abort(multiplier, name)

    def cancel_by_taskid(self, id: int) -> _Task | None:  # noqa: A002 - the reference's name
        return self.cancel(id)

    def cancel_by_tasktag(self, tag: str) -> _Task | None:
        cancelled = self.cancel_by_tag(tag)
        return cancelled[0] if cancelled else None

    def stats_category(self, category: str) -> dict[str, Any]:
        return self.category_stats(category)

    def workers_summary(self) -> list[dict[str, Any]]:
        return self.workers()

    def block_host_with_timeout(self, host: str, timeout: float) -> None:
        self.block_host(host, timeout)

    blacklist = Manager.block_host
    blacklist_with_timeout = block_host_with_timeout

    def blacklist_clear(self, host: str | None = None) -> None:
        self.unblock_host(host)

    def shut_down_workers(self, n: int) -> int:
        return self.shutdown_workers(n)

    def wait(self, timeout: float | None = WORK_QUEUE_WAITFORTASK) -> _Task | None:
        return super().wait(timeout)


def _resources(rmd: Mapping[str, int]) -> dict[str, int]:
    return {k: v for k, v in rmd.items() if k in ("cores", "memory", "disk", "gpus") and v is not None and v >= 0}


__all__ = [n for n in dir() if n.startswith("WORK_QUEUE_")] + ["Task", "WorkQueue"]
