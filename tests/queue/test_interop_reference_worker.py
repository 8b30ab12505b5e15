"""treadle's manager with the reference ``work_queue_worker`` (spec §4, first pairing)."""

from __future__ import annotations

import os
import signal
import time

import pytest
from tests._wait import wait_for
from tests.queue import _manager_fixtures as fx
from tests.queue._manager_fixtures import drain, wait_workers

from treadle.queue import Manager, Result, Task, TaskState

manager = fx.manager
workers = fx.workers

pytestmark = pytest.mark.reference


def test_cached_input_sent_once_and_reused(manager, workers, tmp_path):
    big = tmp_path / "shared.dat"
    big.write_bytes(os.urandom(200_000))
    workers.start(manager.port)
    wait_workers(manager, 1)
    for i in range(5):
        t = Task(f"wc -c < shared.dat > n{i}.txt", cores=1)
        t.add_input(str(big), "shared.dat")
        t.add_output(str(tmp_path / f"n{i}.txt"), f"n{i}.txt")
        manager.submit(t)
    done = drain(manager)
    assert all(t.result is Result.SUCCESS and t.exit_code == 0 for t in done.values())
    for i in range(5):
        assert (tmp_path / f"n{i}.txt").read_text().strip() == "200000"
    # the file crossed the wire once: total sent is one copy plus small messages
    assert 200_000 <= manager.stats.bytes_sent < 2 * 200_000


def test_buffer_env_and_exit_code(manager, workers):
    workers.start(manager.port)
    t = Task('cat buf.txt; echo "$GREETING"; test -z "$UNSET_ME"; exit 3', env={"GREETING": "hi there", "UNSET_ME": None})
    t.add_input_buffer(b"buffer-data\n", "buf.txt")
    manager.submit(t)
    (done,) = drain(manager).values()
    assert done.result is Result.SUCCESS  # a non-zero exit is not a queue failure
    assert done.exit_code == 3
    assert done.output == b"buffer-data\nhi there\n"


def test_directory_with_subdir_and_symlink_and_empty_dir(manager, workers, tmp_path):
    src = tmp_path / "indir"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("aaa\n")
    (src / "sub" / "b.txt").write_text("bbb\n")
    links = []
    for i in range(20):  # gotcha 7: many links, none may arrive corrupted
        os.symlink("a.txt", src / f"link{i}")
        links.append(f"link{i}")
    workers.start(manager.port)
    t = Task("ls -d empty && cat in/sub/b.txt && for l in in/link*; do readlink $l; done | sort -u && cat in/link0")
    t.add_input_dir(str(src), "in")
    t.add_empty_dir("empty")
    manager.submit(t)
    (done,) = drain(manager).values()
    assert done.result is Result.SUCCESS and done.exit_code == 0, done.output
    assert done.output == b"empty\nbbb\na.txt\naaa\n"


def test_output_file_and_directory_and_missing(manager, workers, tmp_path):
    workers.start(manager.port)
    t = Task("mkdir -p outdir/sub && echo v > outdir/sub/v.txt && ln -s sub/v.txt outdir/link && echo x > present.txt")
    t.add_output(str(tmp_path / "got" / "present.txt"), "present.txt")
    t.add_output(str(tmp_path / "outdir"), "outdir")
    manager.submit(t)
    t2 = Task("true")
    t2.add_output(str(tmp_path / "absent.txt"), "absent.txt")
    manager.submit(t2)
    done = drain(manager)
    assert done[1].result is Result.SUCCESS
    assert (tmp_path / "got" / "present.txt").read_text() == "x\n"
    assert (tmp_path / "outdir" / "sub" / "v.txt").read_text() == "v\n"
    # gotcha 13: outputs follow symlinks, the link comes back as a file
    assert not os.path.islink(tmp_path / "outdir" / "link")
    assert (tmp_path / "outdir" / "link").read_text() == "v\n"
    assert done[2].result is Result.OUTPUT_MISSING
    assert not (tmp_path / "absent.txt").exists()


def test_cached_output_feeds_next_task_without_resending(manager, workers, tmp_path):
    workers.start(manager.port)
    wait_workers(manager, 1)
    t = Task("head -c 300000 /dev/zero > mid.dat")
    t.add_output(str(tmp_path / "mid.dat"), "mid.dat", cache=True)
    manager.submit(t)
    drain(manager)
    sent = manager.stats.bytes_sent
    t2 = Task("wc -c < m")
    t2.add_input(str(tmp_path / "mid.dat"), "m")
    manager.submit(t2)
    (done,) = drain(manager).values()
    assert done.output.strip() == b"300000"
    assert manager.stats.bytes_sent - sent < 10_000


def test_wall_time_in_seconds(manager, workers):
    """Gotcha 8: running_time_max is seconds; the worker kills at about that time."""
    workers.start(manager.port)
    wait_workers(manager, 1)
    t = Task("sleep 30", running_time_max=2)
    manager.submit(t)
    start = time.monotonic()
    (done,) = drain(manager, timeout=25).values()
    assert done.result is Result.TASK_MAX_RUN_TIME
    assert done.exit_code == 9
    assert time.monotonic() - start >= 1.5  # not turned into 1 s


def test_signal_reported_as_exit_code(manager, workers):
    """Gotcha 6: the reference worker reports a signal N as exit N."""
    workers.start(manager.port)
    manager.submit(Task("kill -TERM $$"))
    (done,) = drain(manager).values()
    assert done.result is Result.SUCCESS
    assert done.exit_code == signal.SIGTERM and done.signal is None


def _task_processes(workers: fx.Workers, cmdline: list[str]) -> list:
    """The processes running ``cmdline`` under this test's workers.

    Only descendants of our own workers count: a global scan also finds the same
    command started by a test running beside this one, whose process outlives our kill.
    """
    import psutil

    found = []
    for worker in workers.procs:
        try:
            tree = psutil.Process(worker.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for p in tree:
            try:
                if p.cmdline() == cmdline:
                    found.append(p)
            except psutil.Error:  # it ended while we looked
                pass
    return found


def _gone(p) -> bool:
    """Ended, even if its worker has not reaped it yet (a zombie has done all it will do)."""
    import psutil

    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_kill_of_a_running_task(manager, workers, tmp_path):
    workers.start(manager.port)
    workers.start(manager.port)
    wait_workers(manager, 2, timeout=60)
    # `exec`: the reference worker kills only the shell (gotcha 15)
    command = ["sleep", "90"]  # longer than every wait below, so only the kill can end it in time
    tid = manager.submit(Task("exec " + " ".join(command), cores=1))
    wait_for(lambda: manager.task_state(tid) is TaskState.RUNNING, timeout=60, what="running")
    running: list = []
    wait_for(lambda: running.extend(_task_processes(workers, command)) or running, timeout=60,
             what="the task's process")
    cancelled = manager.cancel(tid)
    assert cancelled is not None and cancelled.state is TaskState.CANCELED
    assert manager.empty()
    # the kill's effect, not a guess at its timing: wait on the very process the task ran
    wait_for(lambda: all(_gone(p) for p in running), timeout=60, what="the killed process to end")
    # work goes on (the worker that killed gets nothing while the reference stalls in `kill`)
    manager.submit(Task("echo after", cores=1))
    (done,) = drain(manager, timeout=60).values()
    assert done.output == b"after\n"


def test_keepalive_check_and_alive(manager, workers):
    manager.keepalive_interval = 0.5
    manager.keepalive_timeout = 5
    workers.start(manager.port)
    wait_workers(manager, 1)
    manager.submit(Task("sleep 3"))
    (done,) = drain(manager).values()
    assert done.result is Result.SUCCESS
    assert manager.stats.workers_lost == 0 and manager.stats.workers_connected == 1


def test_release_on_close_and_exit_on_shutdown(workers):
    m = Manager(0, host="127.0.0.1")
    try:
        p1 = workers.start(m.port)
        p2 = workers.start(m.port, single_shot=False)
        wait_workers(m, 2)
        assert m.shutdown_workers(0) == 2
        assert p2.wait(15) == 0  # exit: even a non-single-shot worker goes away
        p1.wait(15)
    finally:
        m.close()
    m2 = Manager(0, host="127.0.0.1")
    p3 = workers.start(m2.port)
    wait_workers(m2, 1)
    m2.close()  # release: a single-shot worker leaves
    p3.wait(15)


def test_password_accepted_and_wrong_password_refused(workers, tmp_path, caplog):
    pw = tmp_path / "pw.txt"
    pw.write_text("secret\n")
    bad = tmp_path / "bad.txt"
    bad.write_text("other\n")
    with Manager(0, host="127.0.0.1", password_file=str(pw)) as m:
        wrong = workers.start(m.port, "-P", str(bad), "-i", "1")

        def refusals() -> int:
            return sum("failed the password step" in r.getMessage() for r in caplog.records)

        # it tries, is refused, and retries: the manager refused it twice, and it never joined
        wait_for(lambda: refusals() >= 2, 30, "two refused password steps")
        assert m.stats.workers_joined == 0
        wrong.kill()
        workers.start(m.port, "-P", str(pw))
        m.submit(Task("echo authenticated"))
        (done,) = drain(m).values()
        assert done.output == b"authenticated\n"


def test_forsaken_task_goes_elsewhere(manager, workers):
    """A task larger than a worker never reaches it; a big enough worker runs it."""
    workers.start(manager.port, cores=1)
    wait_workers(manager, 1)
    manager.submit(Task("echo big", cores=2))
    manager.submit(Task("echo small", cores=1))
    # the small task done on the one-core worker: the manager has scheduled since the big
    # one arrived, and kept the big one waiting
    small = manager.wait(30)
    assert small is not None and small.output == b"small\n"
    assert manager.stats.tasks_waiting == 1
    workers.start(manager.port, cores=2)
    (done,) = drain(manager).values()
    assert done.output == b"big\n"


def test_file_piece_and_command_input(manager, workers, tmp_path):
    (tmp_path / "piece.src").write_text("0123456789")
    workers.start(manager.port)
    t = Task("cat p.txt && cat gen.txt")
    t.add_input_piece(str(tmp_path / "piece.src"), "p.txt", 5, 9)
    t.add_input_command("gen.txt", "echo generated-by-cmd > %%")
    manager.submit(t)
    (done,) = drain(manager).values()
    assert done.result is Result.SUCCESS, done.output
    assert done.output == b"56789generated-by-cmd\n"


def test_watched_output_arrives_whole_and_once(manager, workers, tmp_path):
    """WATCH: the reference worker streams `update` blocks of a growing file; the local
    copy ends equal to the worker's file, with nothing repeated."""
    workers.start(manager.port)
    wait_workers(manager, 1)
    lines = "".join(f"line {i}\n" for i in range(6))
    t = Task("for i in 0 1 2 3 4 5; do echo line $i >> log.txt; sleep 0.4; done", cores=1)
    t.add_output(str(tmp_path / "log.txt"), "log.txt", watch=True)
    manager.submit(t)
    (done,) = drain(manager, 60).values()
    assert done.result is Result.SUCCESS and done.exit_code == 0
    assert (tmp_path / "log.txt").read_text() == lines
