"""Run options: the one place where every default of ``treadle run`` lives.

The command line (``treadle.cli.run``), the environment variables it honours
and programmatic callers (Weaver's ``--run``) all build a :class:`RunOptions`;
the engine, the journal, recovery, clean and GC read it and never invent a
default of their own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from treadle.backends.base import on_shared_fs

BATCH_TYPES = ("local", "wq", "slurm", "condor", "dryrun")
CLEAN_MODES = ("all", "outputs", "intermediates", "cache")
GC_METHODS = ("none", "ref_cnt", "on_demand", "all")
DEFAULT_RETRIES_WITH_R = 5  # -R means -r 5
TRANSIENT_EXIT_CODE = 101  # a command exiting 101 asks to be retried (reference convention)
TRANSIENT_RETRIES = 5
DEFAULT_GC_COUNT = 16


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Everything a run of one workflow needs to know, already validated."""

    dagfile: str = "Makeflow"
    batch_type: str = "local"
    fmt: str = "make"  # make, json or jx
    jx_args: tuple[str, ...] = ()
    jx_define: tuple[str, ...] = ()
    max_local: int | None = None  # None: the number of cores
    max_remote: int | None = None  # None: 100, or 1000 for wq
    clean: str | None = None  # None: no clean; else one of CLEAN_MODES
    log_path: str | None = None  # None: <dagfile>.makeflowlog
    batch_log: str | None = None  # None: <dagfile>.<suffix of the batch type>
    retries: int = 0
    gc: str = "none"
    gc_count: int | None = None  # None: 16 for on_demand
    gc_size: int = 0
    summary_log: str | None = None
    debug: tuple[str, ...] = ()
    debug_file: str | None = None
    skip_file_check: bool = False
    checksum_sources: bool = False
    batch_options: str | None = None
    local_cores: int | None = None
    local_memory: int | None = None
    local_disk: int | None = None
    log_verbose: bool = False
    change_directory: str | None = None
    send_environment: bool = False
    save_failed_output: bool = True
    keep_logs: bool = False  # keep successful rules' stdout/stderr logs too (failed ones are always kept)
    wait_for_files: int = 0  # seconds to keep re-checking a finished job's missing outputs (NFS delay)
    shared_fs: tuple[str, ...] = ()  # absolute directories the workers share: files under them never travel
    mounts: str | None = None  # a mount file (treadle.flow.mounts): files fetched before the run
    cache: str | None = None  # where mounted files are kept; None: DAGFILE.cache
    zero_length_error: bool = False
    sandbox: bool = False
    storage_type: int | None = None
    storage_limit: int | None = None
    storage_print: str | None = None
    progress: bool = True
    # Containers and wrappers (treadle.flow.wrappers): how each job runs, not what it runs.
    wrappers: tuple[str, ...] = ()
    wrapper_inputs: tuple[str, ...] = ()
    wrapper_outputs: tuple[str, ...] = ()
    docker: str | None = None  # image
    docker_tar: str | None = None  # loaded with `CLI load` once before the run
    docker_opt: str = ""
    docker_cmd: str = "docker"  # or podman (TREADLE_DOCKER, --docker-cmd)
    singularity: str | None = None  # image
    singularity_opt: str = ""
    # The archive of finished rules (treadle.flow.archive): look up before running, store after success.
    archive_read: bool = False
    archive_write: bool = False
    archive_dir: str | None = None  # None: treadle.flow.archive.default_dir()
    command_line: tuple[str, ...] = field(default=())  # for the summary file
    # The options one backend understands (Work Queue's port...), by option name: the
    # backend reads its own in from_options (treadle.backends.base.BackendConfig).
    backend_settings: Mapping[str, Any] = field(default_factory=dict)

    def with_changes(self, **changes: Any) -> RunOptions:
        """A copy with some fields replaced (options are immutable once built)."""
        return replace(self, **changes)

    @property
    def dry_run(self) -> bool:
        return self.batch_type == "dryrun"

    @property
    def remote(self) -> bool:
        """True when rules go to a remote executor (anything but local and dryrun)."""
        return self.batch_type not in ("local", "dryrun")

    def resolved_log_path(self) -> str:
        return self.log_path or f"{self.dagfile}.makeflowlog"

    def resolved_logs_dir(self) -> str:
        """Where rules' stdout and stderr files go: beside the log, ``wf.mf.makeflowlog`` -> ``.wf.mf.logs``.

        Derived from the log, not the workflow file, so two nested runs of one
        sub-workflow (each with its own ``-l``) never share a directory. Hidden,
        like Snakemake's ``.snakemake/log``, so a rule that lists its directory
        sees what it would see under the reference makeflow.
        """
        head, log = os.path.split(self.resolved_log_path())
        return os.path.join(head, "." + log.removesuffix(".makeflowlog") + ".logs")

    def resolved_batch_log(self, suffix: str = "batchlog") -> str:
        """``-L``, else ``DAGFILE.<suffix>`` (the backend's ``log_suffix``)."""
        return self.batch_log or f"{self.dagfile}.{suffix}"

    @property
    def container_image(self) -> str:
        """The container a rule runs in, as part of its identity (empty: none).

        A different image is different software, so its results are different
        results; a wrapper only changes how a command is started, so it is not
        here.
        """
        if self.docker:
            return f"docker:{self.docker}"
        if self.singularity:
            return f"singularity:{self.singularity}"
        return ""

    def on_shared_fs(self, path: str) -> str | None:
        """The ``--shared-fs`` directory ``path`` lies under, or ``None``."""
        return on_shared_fs(path, self.shared_fs)

    def job_limits(self, cores: int, default_remote: int = 100) -> tuple[int, int]:
        """(max local jobs, max remote jobs) after the reference's rules.

        With ``-T local`` either option sets both (the smaller if both are
        given); otherwise local defaults to the core count and remote to the
        backend's ``default_max_remote`` (100; 1000 for ``wq``).
        """
        if not self.remote:
            given = [n for n in (self.max_local, self.max_remote) if n is not None]
            n = min(given) if given else cores
            return n, n
        local = self.max_local if self.max_local is not None else cores
        remote = self.max_remote if self.max_remote is not None else default_remote
        return local, remote


def local_cores() -> int:
    """Cores this process may use (the affinity mask, not just the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1
