"""Run a workflow's jobs on Work Queue workers (``treadle run -T wq``).

Each job becomes a ``treadle.queue.Task``: its inputs (files and whole
directories, under their ``LOCAL->REMOTE`` names) are sent to the worker,
its outputs fetched back into the workflow's directory. Nothing assumes a
shared filesystem. Inputs and outputs are cached on the workers under
content-addressed names, so a file shared by many rules, or an output that
the next rule reads, crosses the network once per worker.

A lost worker is not a job failure: the manager sends the task elsewhere.
A missing output is reported by the engine, which checks outputs itself.

With ``--factory slurm:max=20,cores=4`` the backend also runs a worker
factory in a thread (:mod:`treadle.queue.factory`): it reads this manager
directly instead of asking over the network, is woken whenever a job is
submitted, and cancels every worker job it started when the backend closes
(docs/batch.md).

A task's output (stdout and stderr together: protocol 9 merges them on the
worker) is written to the job's ``Job.stdout`` file, capped
(:mod:`treadle.backends.logs`), and never to the engine's own output; the
result names that one file as both ``stdout`` and ``stderr``. A log that cannot
be written (a full disk) fails the job with the reason.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from treadle.backends.base import BackendConfig, FileSpec, Job, JobResult, on_shared_fs, own_options
from treadle.backends.logs import write_log
from treadle.queue.factory import (
    Factory,
    FactoryConfig,
    batch_options_for,
    build_provider,
    parse_factory_option,
)
from treadle.queue.manager import Manager
from treadle.queue.protocol import DEFAULT_PORT
from treadle.queue.task import Result, Task


@dataclass(frozen=True, slots=True)
class WorkQueueOptions:
    """The ``-T wq`` options, named as ``treadle run``'s option table names them.

    ``advertise`` (``-a``) and ``schedule`` (``-W``) are accepted for the
    reference's scripts: the catalog is used when a project name is given, and
    the manager always prefers the worker caching most of a task's input bytes.
    """

    port: int = DEFAULT_PORT
    bind: str = ""  # the manager's listening address; "" is every interface
    project_name: str | None = None
    port_file: str | None = None
    catalog: str | None = None
    password_file: str | None = None
    advertise: bool = False
    fast_abort: float | None = None
    keepalive_timeout: int | None = None
    keepalive_interval: int | None = None
    schedule: str | None = None
    factory: str | None = None  # KIND:key=value,... (parse_factory_option): workers started from the run
    batch_dir: str | None = None  # the factory's scripts and logs (default: DAGFILE.batch/factory)


class WorkQueueBackend:
    """The ``wq`` backend: a treadle Work Queue manager listening on ``port`` (of
    ``host`` only, when given)."""

    name = "wq"
    sandboxed = True
    runs_in_place = False
    default_max_remote = 1000
    log_suffix = "wqlog"
    options_type = WorkQueueOptions

    @classmethod
    def from_options(cls, config: BackendConfig) -> WorkQueueBackend:
        """A manager listening as the run's Work Queue options say, logging to the batch log."""
        o = own_options(WorkQueueOptions, config.settings)
        return cls(
            workdir=config.workdir,
            port=o.port,
            host=o.bind,
            name=o.project_name,
            password_file=o.password_file,
            port_file=o.port_file,
            catalog=o.catalog,
            fast_abort=o.fast_abort,
            keepalive_interval=o.keepalive_interval,
            keepalive_timeout=o.keepalive_timeout,
            log_path=config.log_path,
            send_environment=config.send_environment,
            keep_empty_logs=config.keep_logs,
            factory=o.factory,
            factory_dir=o.batch_dir or os.path.join(config.workdir, f"{config.dagfile}.batch", "factory"),
            factory_options=config.batch_options,  # -B: submit options of the factory's worker jobs
            shared_fs=config.shared_fs,
        )

    def __init__(
        self,
        *,
        workdir: str,
        port: int = DEFAULT_PORT,
        host: str = "",
        name: str | None = None,
        password_file: str | None = None,
        port_file: str | None = None,
        catalog: str | None = None,
        fast_abort: float | None = None,
        keepalive_interval: int | None = None,
        keepalive_timeout: int | None = None,
        log_path: str | None = None,
        send_environment: bool = False,
        keep_empty_logs: bool = True,
        factory: str | None = None,
        factory_dir: str | None = None,
        factory_options: str | None = None,
        shared_fs: tuple[str, ...] = (),
    ) -> None:
        self.workdir = os.path.abspath(workdir)
        self.shared_fs = shared_fs
        self.send_environment = send_environment
        # False: a job that exits 0 with no output gets no log file (its rule's log would be empty, and
        # the engine removes a successful rule's log anyway): two file operations per task fewer.
        self.keep_empty_logs = keep_empty_logs
        self.manager = Manager(
            port,
            host=host,
            name=name,
            password_file=password_file,
            catalog=catalog,
            transactions_log=log_path,
            port_file=port_file,
        )
        if keepalive_interval is not None:
            self.manager.keepalive_interval = keepalive_interval
        if keepalive_timeout is not None:
            self.manager.keepalive_timeout = keepalive_timeout
        if fast_abort is not None:
            self.manager.fast_abort(fast_abort)
        self.port = self.manager.port
        self._logs: dict[int, str | None] = {}  # task id -> the job's stdout file
        self.factory: Factory | None = None
        self._factory_thread: threading.Thread | None = None
        if factory is not None:
            try:
                self._start_factory(factory, host, password_file, factory_dir, factory_options)
            except BaseException:
                self.manager.close()
                raise

    def _start_factory(self, text: str, host: str, password_file: str | None, batch_dir: str | None,
                       batch_options: str | None) -> None:
        """Run a worker factory for this manager in a thread (the ``--factory`` option)."""
        kind, values = parse_factory_option(text)
        values.setdefault("batch_dir", batch_dir)
        config = FactoryConfig(host=host or socket.gethostname(), port=self.port, password_file=password_file,
                               options=batch_options_for(kind, batch_options), **values)
        self.factory = Factory(config, build_provider(kind, config), status=self._manager_status)
        self._factory_thread = threading.Thread(target=self.factory.run, name="treadle-factory", daemon=True)
        self._factory_thread.start()

    def _manager_status(self) -> Mapping[str, Any]:
        """What the factory would read from ``queue_status``, taken from the manager in this process."""
        status: dict[str, Any] = dataclasses.asdict(self.manager.stats)
        if self.manager.workers_wanted is not None:
            status["workers_wanted"] = self.manager.workers_wanted
        return status

    def greeting(self) -> str | None:
        """Where workers connect (the port matters most with ``-p 0``)."""
        return self.manager.listening

    def submit(self, job: Job) -> int:
        """Queue the job as a task; returns the task id."""
        r = job.resources
        env: dict[str, str | None] = dict(os.environ) if self.send_environment else {}
        env.update(job.environment)
        task = Task(
            job.command,
            tag=str(job.rule_id),
            category=job.category or "default",
            cores=r.cores,
            memory=r.memory,
            disk=r.disk,
            gpus=r.gpus,
            running_time_max=r.wall_time,
            env=env,
        )
        for f in _travelling(job.inputs, self.shared_fs):
            local = os.path.join(self.workdir, f.dag_name)
            if os.path.isdir(local):
                task.add_input_dir(local, f.task_name)
            else:
                task.add_input(local, f.task_name)
        for f in _travelling(job.outputs, self.shared_fs):
            task.add_output(os.path.join(self.workdir, f.dag_name), f.task_name, cache=True)
        task_id = self.manager.submit(task)
        self._logs[task_id] = job.stdout
        if self.factory is not None:
            self.factory.wake()
        return task_id

    def wait(self, timeout: float | None) -> JobResult | None:
        """The next finished job; the task's output goes to the job's log file, never to our stdout."""
        task = self.manager.wait(timeout if timeout is not None else -1)
        if task is None:
            return None
        error = None
        result = task.result
        if result not in (Result.SUCCESS, Result.OUTPUT_MISSING, Result.SIGNAL):
            detail = task.reason or (task.output.decode(errors="replace").strip() if result is Result.INPUT_MISSING else "")
            error = f"work queue result {result.name if result is not None else 'UNKNOWN'}"
            if detail:
                error += f": {detail}"
        log = self._logs.pop(task.id, None)
        if not task.output and task.exit_code == 0 and error is None and not self.keep_empty_logs:
            log = None
        if log is not None:
            try:
                write_log(os.path.join(self.workdir, log), task.output)
            except OSError as e:
                why = f"could not keep its output in {log}: {e.strerror}"
                error = why if error is None else f"{error}; {why}"
        return JobResult(
            job_id=task.id,
            exit_code=task.exit_code,
            signal=task.signal,
            error=error,
            started=task.time_started,
            finished=task.time_finished,
            stdout=log,
            stderr=log,
        )

    def cancel(self, job_id: int) -> None:
        """Kill the task on its worker (or drop it from the queue); no result is reported."""
        self._logs.pop(job_id, None)
        self.manager.cancel(job_id)

    def close(self) -> None:
        """Cancel the factory's worker jobs (waiting until they are gone), release the workers, stop listening."""
        if self.factory is not None and self._factory_thread is not None:
            self.factory.stop()
            self._factory_thread.join()
            self.factory = None
        self.manager.close()


def _travelling(files: tuple[FileSpec, ...], shared_fs: tuple[str, ...] = ()) -> list[FileSpec]:
    """The files that travel with a task: every file except absolute paths kept as they are
    and files on a ``--shared-fs`` directory.

    A task's sandbox can only hold relative names. A file the workflow names by an
    absolute path with no ``->`` rename is read and written by the command at that
    very path, so it must be visible there on the worker (a shared or replicated
    filesystem, or a worker on this machine), as with the reference makeflow. To
    ship such a file instead, rename it: ``/data/x.txt->x.txt``.
    """
    return [f for f in files if not (os.path.isabs(f.task_name) and f.task_name == f.dag_name)
            and on_shared_fs(f.dag_name, shared_fs) is None]
