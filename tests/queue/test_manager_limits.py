"""What a peer or a task can make the manager hold or do, and that it stays bounded (issue 9).

Each test performs the attack or the user's action against a live manager on
127.0.0.1 and checks what the user sees: the hostile peer dropped, the memory
and counters bounded, a clear error, and an honest worker still served.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from tests._wait import wait_for
from tests.queue._fake_worker import FakeWorker, greeting

from treadle.errors import UsageError
from treadle.queue import Manager, Result, Task
from treadle.queue import manager as mq
from treadle.queue import protocol as wp


@pytest.fixture
def mgr():
    m = Manager(0, host="127.0.0.1")
    yield m
    m.close()


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _serve_one(m: Manager, fw: FakeWorker, output: bytes = b"fine") -> Task:
    """``fw`` takes the next task, runs it, and the manager hands it back."""
    task = fw.expect(wp.Task)
    fw.send(b"available_results\n")
    fw.expect(wp.SendResults)
    fw.send(fw.result(task.task_id, output=output) + b"end\n")
    done = m.wait(10)
    assert done is not None and done.id == task.task_id
    return done


def _send_until_dropped(fw: FakeWorker, data: bytes) -> None:
    """Send ``data``; the manager may drop the peer before it has all been written."""
    try:
        fw.send(data)
    except OSError:
        pass


def _honest_worker_served(m: Manager) -> None:
    good = FakeWorker(m.port)
    good.send(greeting())
    m.submit(Task("true"))
    done = _serve_one(m, good)
    assert done.result is Result.SUCCESS and done.output == b"fine"
    good.close()


def test_a_feature_flood_drops_the_peer_and_keeps_no_more_than_the_limit(mgr):
    """300k distinct `feature` lines took the engine from 28 MB to 640 MB."""
    fw = FakeWorker(mgr.port)
    fw.send(greeting())
    _send_until_dropped(fw, b"".join(b"feature f%06d\n" % i for i in range(300_000)))
    assert fw.wait_closed(10)
    fw.close()
    wait_for(lambda: mgr.stats.workers_connected == 0, 10, "the flooding worker dropped")
    assert mgr._feature_bytes == 0  # what it held was released with it
    _honest_worker_served(mgr)


def test_name_queries_without_reading_the_replies_drop_the_peer(mgr):
    """A peer that asks the project name again and again, and never reads, piled up replies."""
    fw = FakeWorker(mgr.port)
    _send_until_dropped(fw, b"name\n" * 100_000)
    assert fw.wait_closed(10)
    fw.close()
    _honest_worker_served(mgr)


def test_features_are_kept_per_worker_and_released_with_it(mgr):
    fw = FakeWorker(mgr.port)
    fw.send(greeting() + b"feature gpu\nfeature gpu\nfeature big%20mem\n")
    wait_for(lambda: mgr._feature_bytes == len("gpu") + len("big mem"), 10, "two features")
    fw.close()
    wait_for(lambda: mgr._feature_bytes == 0, 10, "features released")


def test_the_features_of_all_workers_together_are_bounded(mgr, monkeypatch):
    monkeypatch.setattr(mq, "MAX_FEATURE_BYTES", 10)
    first = FakeWorker(mgr.port)
    first.send(greeting() + b"feature abcdef\n")
    wait_for(lambda: mgr._feature_bytes == 6, 10, "the first worker's feature")
    second = FakeWorker(mgr.port)
    second.send(greeting() + b"feature ghijkl\n")
    assert second.wait_closed(10)
    assert not first.wait_closed(0.2)
    assert mgr._feature_bytes == 6
    first.close()
    second.close()


def test_a_result_for_a_task_never_given_drops_the_peer_before_its_payload(mgr):
    """A result header for an id this worker does not hold is a lie: nothing of it is buffered."""
    fw = FakeWorker(mgr.port)
    fw.send(greeting() + b"available_results\n")
    fw.expect(wp.SendResults)
    _send_until_dropped(fw, b"result 0 0 800000000 100 4242\n" + b"x" * (1 << 20))
    assert fw.wait_closed(10)
    fw.close()
    assert mgr._output_budget.left == mq.MAX_OUTPUT_IN_FLIGHT
    _honest_worker_served(mgr)


def test_an_update_for_a_task_never_given_drops_the_peer(mgr):
    fw = FakeWorker(mgr.port)
    fw.send(greeting() + b"available_results\n")
    fw.expect(wp.SendResults)
    fw.send(b"update 77 out.txt 0 5\nhello")
    assert fw.wait_closed(10)
    fw.close()
    _honest_worker_served(mgr)


@pytest.mark.slow
def test_a_huge_result_for_a_killed_task_streams_through_without_being_held(mgr):
    """800 MB for a task the manager no longer wants took it to 2 GB: now it is dropped as it
    streams (the worker is honest here: a cancelled task's result may cross the kill)."""
    fw = FakeWorker(mgr.port)
    fw.send(greeting())
    tid = mgr.submit(Task("sleep 100"))
    fw.expect(wp.Task)
    assert mgr.cancel(tid) is not None
    fw.expect(wp.Kill)
    size = 800 << 20
    fw.send(b"available_results\n")
    fw.expect(wp.SendResults)
    fw.send(b"result 0 0 %d 100 %d\n" % (size, tid))
    chunk = memoryview(bytes(1 << 20))
    before = _rss()
    received_at_start = mgr.workers()[0]["total_bytes_transferred"]
    for _ in range(size >> 20):
        fw.send(chunk)
    # all but nothing is still owed: measure while a buffering manager would hold it all
    wait_for(lambda: mgr.workers()[0]["total_bytes_transferred"] - received_at_start >= size,
             60, "the payload received")
    grown = _rss() - before
    assert grown < 100 << 20, f"the manager grew by {grown >> 20} MB for a dropped payload"
    fw.send(b"end\n")
    assert mgr._output_budget.left == mq.MAX_OUTPUT_IN_FLIGHT
    assert not fw.wait_closed(0.2)  # the race is honest: the worker stays and keeps working
    mgr.submit(Task("true"))
    assert _serve_one(mgr, fw).result is Result.SUCCESS


def test_task_output_over_the_budget_in_flight_is_cut_not_held(mgr, monkeypatch):
    """All connections together buffer at most MAX_OUTPUT_IN_FLIGHT of stdout."""
    mgr._output_budget.left = 10
    fw = FakeWorker(mgr.port)
    fw.send(greeting())
    mgr.submit(Task("yes"))
    done = _serve_one(mgr, fw, output=b"y\n" * 50)
    assert done.output == b"y\n" * 5
    assert done.result is Result.STDOUT_MISSING
    assert mgr._output_budget.left == 10  # handed to the task, the budget is free again


@pytest.fixture
def full_disk(tmp_path: Path, small_disk):
    """A 1 MiB tmpfs: writing more than that fails with ENOSPC, for real."""
    return small_disk(tmp_path / "full", "1m")


def test_a_full_disk_fails_the_task_not_the_worker(mgr, full_disk):
    """ENOSPC while writing an output dropped the healthy worker and requeued the task forever."""
    fw = FakeWorker(mgr.port)
    fw.send(greeting())
    out = full_disk / "out.bin"
    t = Task("make-big")
    t.add_output(str(out), "out.bin")
    mgr.submit(t)
    task = fw.expect(wp.Task)
    fw.send(b"available_results\n")
    fw.expect(wp.SendResults)
    fw.send(fw.result(task.task_id) + b"end\n")
    get = fw.expect(wp.Get)
    size = 2 << 20
    fw.send(b"file %s %d\n" % (get.name.encode(), size) + bytes(size) + b"end\n")
    done = mgr.wait(10)
    assert done is not None, "the task never came back"
    assert done.result is Result.OUTPUT_TRANSFER_ERROR
    assert "No space left on device" in done.reason and str(out) in done.reason
    assert done.attempts == 1
    assert not out.exists()  # the half-written file is gone
    assert not fw.wait_closed(0.2)
    assert mgr.stats.workers_lost == 0
    mgr.submit(Task("true"))
    assert _serve_one(mgr, fw).result is Result.SUCCESS


def test_an_output_that_cannot_be_opened_fails_the_task_with_the_reason(mgr, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    fw = FakeWorker(mgr.port)
    fw.send(greeting())
    t = Task("x")
    t.add_output(str(blocker / "out.txt"), "out.txt")
    mgr.submit(t)
    task = fw.expect(wp.Task)
    fw.send(b"available_results\n")
    fw.expect(wp.SendResults)
    fw.send(fw.result(task.task_id) + b"end\n")
    get = fw.expect(wp.Get)
    fw.send(b"file %s 3\nabcend\n" % get.name.encode())
    done = mgr.wait(10)
    assert done is not None and done.result is Result.OUTPUT_TRANSFER_ERROR
    assert done.reason.startswith(f"cannot write output {blocker / 'out.txt'}: ")


def test_a_task_whose_encoded_name_passes_the_line_limit_is_refused_at_submit(mgr):
    """URL-encoding triples a blank: a valid 1500-byte name makes a 4500-byte line."""
    fw = FakeWorker(mgr.port)
    fw.send(greeting())
    bad = Task("cat in")
    bad.add_input_buffer(b"data", " " * 1500)
    with pytest.raises(UsageError, match="is 4500 bytes URL-encoded, too long for one protocol line"):
        mgr.submit(bad)
    mgr.submit(Task("true"))  # a task beside it runs
    assert _serve_one(mgr, fw).result is Result.SUCCESS
    assert mgr.empty()


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: Task("x" * (wp.MAX_COMMAND + 1)), "command of"),
        (lambda: Task("env", env={"BIG": "v" * wp.MAX_ENV_ENTRY}), "environment entry"),
        (lambda: Task("x").add_input_url("http://h/" + "u" * wp.MAX_URL, "in"), "url of"),
        (lambda: Task("x").add_input_command("in", "echo " * 1000), "line longer"),
        (lambda: Task("x").add_empty_dir("a b"), "cannot be sent raw"),
    ],
)
def test_a_task_a_worker_would_refuse_is_refused_at_submit(mgr, make, words):
    with pytest.raises(UsageError, match=words):
        mgr.submit(make())
    assert mgr.empty()


def test_a_task_that_fails_to_encode_at_dispatch_fails_instead_of_hanging(mgr, tmp_path):
    """A file in an input directory named with a newline cannot travel (found only at dispatch)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "bad\nname").write_text("x")
    first = FakeWorker(mgr.port)
    first.send(greeting())
    wait_for(lambda: mgr.stats.workers_able == 1, 10, "the worker")
    t = Task("ls tree")
    t.add_input_dir(str(tree), "tree")
    mgr.submit(t)
    done = mgr.wait(10)
    assert done is not None and done.result is Result.UNKNOWN
    assert "not one path component" in done.reason
    assert first.wait_closed(10)  # its stream stopped mid-directory: it goes
    _honest_worker_served(mgr)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Task("echo a\0b"),
        lambda: Task("x").add_input("in\0x", "in"),
        lambda: Task("x").add_output("out\0x", "out"),
        lambda: Task("x").add_input("in", "i\0n"),
        lambda: Task("x").add_input_command("in", "echo\0"),
    ],
)
def test_a_nul_byte_is_refused_when_the_task_is_made(make):
    with pytest.raises(UsageError, match="NUL"):
        make()


@pytest.mark.parametrize(
    "change",
    [
        lambda t: setattr(t, "command", "a\0b"),
        lambda t: t.env.__setitem__("X", "a\0b"),
        lambda t: t.env.__setitem__("X\0", "v"),
        lambda t: setattr(t, "category", "c\0"),
    ],
)
def test_a_nul_byte_set_after_creation_is_refused_at_submit(mgr, change):
    t = Task("true")
    change(t)
    with pytest.raises(UsageError, match="NUL|environment variable name"):
        mgr.submit(t)
    assert mgr.empty()


@pytest.mark.parametrize("name", [".", "./", "./.", "a/.."])
def test_the_sandbox_itself_is_not_a_file_name(name):
    with pytest.raises(UsageError):
        Task("x").add_output("out", name)
    with pytest.raises(UsageError):
        Task("x").add_input_buffer(b"", name)


def test_error_messages_quote_only_the_start_of_a_huge_line():
    """A 10 MB line produced 10-30 MB of stderr."""
    conn = wp.ManagerConnection()
    conn.receive_data(greeting() + b"frob " + b"\x01" * 3000 + b"\n")
    with pytest.raises(wp.ProtocolError) as e:
        list(conn.events())
    assert len(str(e.value)) < 4 * wp.QUOTE_LIMIT + 100


def test_a_local_encoding_error_quotes_only_the_start_of_the_value():
    with pytest.raises(wp.LocalProtocolError) as e:
        wp.ManagerConnection().send(wp.Get("x/" * 100_000))
    assert len(str(e.value)) < 4 * wp.QUOTE_LIMIT + 100


def test_quoted_marks_a_cut_value():
    assert wp.quoted("abc") == "'abc'"
    assert wp.quoted(b"a" * 300, 5) == "b'aaaaa'..."


def test_the_manager_stays_up_while_a_peer_is_flooding(mgr):
    """Many floods at once, then an honest worker: the manager answers throughout."""
    def flood() -> None:
        fw = FakeWorker(mgr.port)
        _send_until_dropped(fw, greeting() + b"".join(b"feature g%d\n" % i for i in range(5000)))
        fw.wait_closed(10)
        fw.close()

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    wait_for(lambda: mgr.stats.workers_connected == 0, 10, "the floods dropped")
    _honest_worker_served(mgr)
