"""Workers as Slurm array jobs: the factory's provider for ``-T slurm``.

One ``sbatch --array=0-<count-1> --job-name=treadle-workers-<tag>`` per
submission, one ``squeue`` per status round and one ``scancel`` per cancel,
through :class:`treadle.batch.slurm.SlurmSystem`. The batch script carries the
worker zipapp as base64 (about 53 KB; Slurm's default limit is 4 MB) and
unpacks it into ``$TMPDIR`` on the node, so the worker needs neither treadle
installed there nor a shared filesystem; only the password file, which must
never be text in a script (slurmctld keeps scripts), is copied, mode 0600, into
the batch directory, which is assumed shared (docs/batch.md).

A loopback manager address only works when every node is this host (a
one-node test cluster): it is refused unless ``sinfo`` lists no other node,
or ``allow_loopback`` says the user knows better.
"""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import socket
import uuid
from collections.abc import Iterable

from treadle.batch.base import BatchJob, Observation, Request, State
from treadle.batch.slurm import Runner, SlurmSettings, SlurmSystem, node_names, run_command
from treadle.errors import UsageError
from treadle.queue.bundle import write_bundle
from treadle.queue.providers.base import (
    JobState,
    WorkerSpec,
    accepted,
    is_loopback,
    resource_options,
    states_of,
)

CORES = "${SLURM_CPUS_PER_TASK:-1}"  # what Slurm granted; without --cpus-per-task a job gets one CPU
BUNDLE_END = "TREADLE_WORKER_BUNDLE"  # ends the here-document that holds the zipapp


class SlurmProvider:
    """Starts workers as elements of Slurm job arrays; ``batch_dir`` holds scripts, logs, the password."""

    name = "slurm"

    def __init__(self, batch_dir: str, *, manager_host: str | None = None, allow_loopback: bool = False,
                 settings: SlurmSettings | None = None, runner: Runner | None = None) -> None:
        self._dir = os.path.abspath(batch_dir)
        self._system = SlurmSystem(self._dir, settings=settings or SlurmSettings(), runner=runner,
                                   wrapper=False)
        if manager_host and not allow_loopback:
            check_reachable(manager_host, node_names(runner or run_command))
        self._tag = f"workers-{uuid.uuid4().hex[:8]}"
        self._scripts: dict[WorkerSpec, str] = {}
        self._copies: dict[str, str] = {}  # a file the workers read -> its copy in the batch directory
        self._bundle: str | None = None

    @property
    def job_name(self) -> str:
        """The name every job of this provider has in ``squeue`` (so tests and users can find them)."""
        return f"treadle-{self._tag}"

    def submit(self, spec: WorkerSpec, count: int) -> list[str]:
        """One ``sbatch`` for ``count`` workers (an array); its element ids, ``1234_0`` ...

        Raises the scheduler's refusal as :class:`BatchError`.
        """
        job = BatchJob(tag=self._tag, script=self._script(spec), workdir=self._dir,
                       request=Request(cores=spec.cores, memory=spec.memory, disk=spec.disk,
                                       gpus=spec.gpus, wall=spec.wall),
                       options=spec.options, comment="worker")
        return accepted(self._system, self._system.submit([job] * count))

    def status(self, ids: Iterable[str]) -> dict[str, JobState]:
        """One ``squeue`` for every worker of this provider; jobs it no longer lists are DONE."""
        ids = list(ids)
        if not ids:
            return {}  # nothing to ask about: no query
        return states_of(ids, self._system.poll(self._tag), _state)

    def cancel(self, ids: Iterable[str]) -> None:
        """One ``scancel`` (array elements as ``1234_7``)."""
        self._system.cancel(list(ids))

    def close(self) -> None:
        """Cancel every job of this provider, and delete the password copies."""
        self._system.cancel_tag(self._tag)
        for copy in self._copies.values():
            try:
                os.unlink(copy)
            except FileNotFoundError:
                pass
        self._copies.clear()

    def log_path(self, id: str) -> str | None:  # noqa: A002 - the contract's name
        """``logs/1234_5.out``, as SlurmSystem names an array element's output."""
        return os.path.join(self._dir, "logs", f"{id}.out")

    def _script(self, spec: WorkerSpec) -> str:
        """The batch script for ``spec``, written once."""
        if spec not in self._scripts:
            args = tuple(self._copy(a) if a in spec.files else a for a in spec.args)
            bundle = self._bundle_text() if spec.command == "bundle" else None
            path = os.path.join(self._dir, "workers", f"worker-{len(self._scripts) + 1}.sh")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(render_worker_script(spec, args, bundle))
            self._scripts[spec] = path
        return self._scripts[spec]

    def _copy(self, path: str) -> str:
        """A copy of ``path`` in the batch directory, readable by its owner only."""
        if path not in self._copies:
            copy = os.path.join(self._dir, "files", f"{len(self._copies) + 1}-{os.path.basename(path)}")
            os.makedirs(os.path.dirname(copy), mode=0o700, exist_ok=True)
            fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out, open(path, "rb") as source:
                shutil.copyfileobj(source, out)
            self._copies[path] = copy
        return self._copies[path]

    def _bundle_text(self) -> str:
        """The worker zipapp as base64 lines, made once per provider."""
        if self._bundle is None:
            pyz = write_bundle(os.path.join(self._dir, "worker.pyz"))
            self._bundle = base64.encodebytes(pyz.read_bytes()).decode("ascii")
        return self._bundle


def render_worker_script(spec: WorkerSpec, args: Iterable[str], bundle: str | None) -> str:
    """The batch script of one worker: a scratch directory, the worker in it, the directory removed.

    ``bundle`` is the zipapp as base64, unpacked and run by ``spec.python``
    (which may be a command line such as ``env -i PATH=/usr/bin:/bin python3 -I``);
    without it ``spec.command`` is the program to run. Every word is quoted
    but the cores, which Slurm's variable says.
    """
    if bundle is not None:
        program = [*shlex.split(spec.python), "worker.pyz"]
    else:
        program = shlex.split(spec.command)
    options = resource_options(spec, cores=CORES)
    words = [shlex.quote(w) for w in program]
    words += [w if w == CORES else shlex.quote(w) for w in options]
    words += [shlex.quote(a) for a in args]
    lines = [
        "#!/bin/sh",
        "# a treadle worker, started by `treadle factory` (docs/batch.md)",
        'dir=$(mktemp -d "${TMPDIR:-/tmp}/treadle-worker.XXXXXX") || exit 1',
        "trap 'rm -rf \"$dir\"' EXIT",
        "trap 'exit 143' TERM",
        "trap 'exit 130' INT",
        'cd "$dir" || exit 1',
    ]
    if bundle is not None:
        lines += [f"base64 -d > worker.pyz <<'{BUNDLE_END}'", bundle.rstrip("\n"), BUNDLE_END]
    lines.append(" ".join(words))
    return "\n".join(lines) + "\n"


def check_reachable(host: str, nodes: list[str]) -> None:
    """Refuse a loopback ``host`` unless the cluster's only node is this machine."""
    if not is_loopback(host):
        return
    here = socket.gethostname().split(".")[0]
    others = sorted({n for n in nodes if n.split(".")[0] != here})
    if others:
        raise UsageError(
            f"workers on node {others[0]} cannot reach a manager at {host} (a loopback address): give "
            "--manager-host with an address the nodes reach, or --allow-loopback")


def _state(o: Observation) -> JobState:
    if o.state is State.ENDED:
        return JobState.DONE if o.word in ("COMPLETED", "CANCELLED") else JobState.FAILED
    return {State.PENDING: JobState.PENDING, State.RUNNING: JobState.RUNNING,
            State.HELD: JobState.HELD}.get(o.state, JobState.DONE)
