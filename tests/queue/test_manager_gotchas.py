"""The reference gotchas of spec §4 that concern the manager, one test (or more) each."""

from __future__ import annotations

import itertools
import os
import socket
import time

import pytest
from tests._wait import wait_for
from tests.queue import _manager_fixtures as fx
from tests.queue._fake_worker import FakeWorker, greeting
from tests.queue._manager_fixtures import drain, wait_workers

from treadle.errors import UsageError
from treadle.queue import Manager, Result, Task
from treadle.queue import protocol as wp

manager = fx.manager
workers = fx.workers


def _serve_one(fw: FakeWorker, status: int = 0, exit_code: int = 0, output: bytes = b"") -> wp.Task:
    """Receive one task and report it finished."""
    task = fw.expect(wp.Task)
    fw.send(b"available_results\n")
    fw.expect(wp.SendResults)
    fw.send(fw.result(task.task_id, status, exit_code, output) + b"end\n")
    return task


def test_gotcha_1_wrong_version_drops_only_that_connection(manager):
    bad = FakeWorker(manager.port)
    bad.send(b"workqueue 8 fakehost Linux x86_64 8.0.0\n")
    assert bad.wait_closed()
    good = FakeWorker(manager.port)  # same host: not blocked
    good.send(greeting())
    manager.submit(Task("true"))
    _serve_one(good)
    assert manager.wait(10).result is Result.SUCCESS


def test_gotcha_2_no_task_before_tag_and_end_time(manager):
    fw = FakeWorker(manager.port)
    fw.send(greeting(gate=False))
    manager.submit(Task("true"))
    assert fw.next_event(1.0) is None  # nothing dispatched yet
    fw.send(b"resource tag 0\n")
    assert fw.next_event(0.5) is None  # still no worker-end-time
    fw.send(b"info worker-end-time 0\n")
    assert isinstance(fw.expect(wp.Task), wp.Task)


def test_gotcha_3_info_without_value_drops_that_peer_only(manager):
    bad = FakeWorker(manager.port)
    bad.send(greeting() + b"info lonely\n")
    assert bad.wait_closed()
    assert manager.stats.workers_connected == 0


def test_gotcha_4_integers_sent_and_decimals_accepted(manager):
    fw = FakeWorker(manager.port)
    fw.send(greeting(gate=False) + b"resource cores 1.5 1.5 1.5\nresource tag 0\ninfo worker-end-time 0\n")
    manager.submit(Task("true", running_time_max=1.5))
    fw.expect(wp.Task)
    raw = bytes(fw.raw)
    assert b"cores 2\n" in raw  # 1.5 rounded up, sent as an integer
    assert b"wall_time 2\n" in raw
    assert b"." not in raw.split(b"task ", 1)[1].split(b"cmd ", 1)[0]


def test_gotcha_5_async_lines_between_reply_items(manager, tmp_path):
    fw = FakeWorker(manager.port)
    fw.send(greeting())
    t = Task("x")
    t.add_output(str(tmp_path / "out"), "out")
    manager.submit(t)
    task = fw.expect(wp.Task)
    fw.send(b"available_results\nalive\ninfo tasks_running 0\n")
    fw.expect(wp.SendResults)
    # the result, with async lines between every item, and a second available_results while busy
    fw.send(fw.result(task.task_id, output=b"hello") + b"alive\ninfo tasks_running 0\nresource tag 1\navailable_results\nend\n")
    get = fw.expect(wp.Get)
    name = get.name
    fw.send(b"alive\nfile %s 3\nabcinfo x 1\nend\n" % name.encode())
    done = manager.wait(10)
    assert done is not None and done.output == b"hello"
    assert (tmp_path / "out").read_bytes() == b"abc"
    fw.expect(wp.SendResults)  # the pending available_results was remembered
    fw.send(b"end\n")


def test_gotcha_6_treadle_signal_code(manager):
    fw = FakeWorker(manager.port)
    fw.send(greeting())
    manager.submit(Task("sleep 100"))
    _serve_one(fw, status=8, exit_code=9)
    done = manager.wait(10)
    assert done.result is Result.SIGNAL and done.signal == 9 and done.exit_code is None


def test_gotcha_7_symlink_target_nul_terminated(manager, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.txt").write_text("a")
    os.symlink("a.txt", d / "lnk")
    fw = FakeWorker(manager.port)
    fw.send(greeting())
    t = Task("true")
    t.add_input_dir(str(d), "d")
    manager.submit(t)
    fw.expect(wp.Task)
    assert b"symlink lnk 6\na.txt\x00" in bytes(fw.raw)


def test_gotcha_8_wall_time_sent_in_seconds(manager):
    fw = FakeWorker(manager.port)
    fw.send(greeting())
    manager.submit(Task("sleep 30", running_time_max=2))
    task = fw.expect(wp.Task)
    assert task.wall_time == 2


@pytest.mark.reference
def test_gotcha_9_changed_file_is_sent_again(manager, workers, tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("old\n")
    workers.start(manager.port)
    wait_workers(manager, 1)
    t = Task("cat in.txt")
    t.add_input(str(f))
    manager.submit(t)
    assert drain(manager)[1].output == b"old\n"
    f.write_text("new\n")
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))
    t = Task("cat in.txt")
    t.add_input(str(f))
    manager.submit(t)
    assert drain(manager)[2].output == b"new\n"


def test_gotcha_10_forsaken_payload_consumed_and_task_requeued(manager):
    fw = FakeWorker(manager.port)
    fw.send(greeting())
    manager.submit(Task("true"))
    task = fw.expect(wp.Task)
    fw.send(b"available_results\n")
    fw.expect(wp.SendResults)
    fw.send(fw.result(task.task_id, status=40, output=b"junk!") + b"end\n")
    again = fw.expect(wp.Task)  # the same task comes back, the stream stayed in sync
    assert again.task_id == task.task_id
    fw.send(b"available_results\n")
    fw.expect(wp.SendResults)
    fw.send(fw.result(task.task_id, output=b"ok") + b"end\n")
    assert manager.wait(10).output == b"ok"


def test_gotcha_11_inputs_before_task_and_one_component_names(manager, tmp_path):
    d = tmp_path / "top"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "f").write_text("f")
    (tmp_path / "in").write_text("i")
    fw = FakeWorker(manager.port)
    fw.send(greeting())
    t = Task("true")
    t.add_input(str(tmp_path / "in"), "x/y/in")
    t.add_input_dir(str(d), "top")
    manager.submit(t)
    seen = []
    while True:
        ev = fw.next_event(10)
        assert ev is not None
        seen.append(ev)
        if isinstance(ev, wp.Task):
            break
    kinds = [type(e).__name__ for e in seen if not isinstance(e, (wp.Data, wp.EndOfData))]
    assert kinds.index("Task") == len(kinds) - 1 and "Put" in kinds and "Dir" in kinds
    for e in seen:
        if isinstance(e, (wp.Put, wp.Dir)):
            assert "/" not in e.name


def test_gotcha_12_framing(manager):
    fw = FakeWorker(manager.port)
    fw.send(greeting())
    t = Task("echo hi", env={"A": "1"})
    t.add_input_buffer(b"data", "buf")
    manager.submit(t)
    fw.expect(wp.Task)
    raw = bytes(fw.raw)
    assert b"cmd 7\necho hicategory default\n" in raw  # no newline after the command
    assert b"env 3\nA=1\n" in raw  # env payload followed by a newline
    assert b" 4 777\ndata" in raw or b" 4 0777\ndata" in raw  # buffers go with mode 777


def test_gotcha_14_unencodable_names_never_reach_a_reference_worker(manager):
    ref = FakeWorker(manager.port)
    ref.send(greeting())
    t = Task("true")
    t.add_input_buffer(b"x", "na\u00efve.txt")
    manager.submit(t)
    assert ref.next_event(1.0) is None
    tw = FakeWorker(manager.port)
    tw.send(greeting(treadle=True))
    task = tw.expect(wp.Task)
    assert any(getattr(i, "sandbox_name", "") == "na\u00efve.txt" for i in task.inputs)


def test_gotcha_16_cache_forgotten_on_disconnect(manager, tmp_path):
    (tmp_path / "in").write_text("payload")
    fw = FakeWorker(manager.port)
    fw.send(greeting())
    t = Task("true")
    t.add_input(str(tmp_path / "in"))
    manager.submit(t)
    fw.expect(wp.Put)
    fw.expect(wp.Task)
    fw.close()  # the workspace is wiped: the task and its input must be sent again
    fw2 = FakeWorker(manager.port)
    fw2.send(greeting())
    fw2.expect(wp.Put)
    fw2.expect(wp.Task)


def test_gotcha_17_password_step_is_asynchronous(tmp_path):
    with Manager(0, host="127.0.0.1", password=b"pw\n") as m:
        stalled = socket.create_connection(("127.0.0.1", m.port))  # says nothing at all
        fw = FakeWorker(m.port)
        hs = wp.PasswordHandshake(b"pw\n", wp.WORKER)
        fw.send(b"".join(fw.conn.send(e) for e in hs.start()))
        while hs.succeeded is None:
            ev = fw.next_event(5)
            assert ev is not None, "the manager stalled behind the silent client"
            fw.send(b"".join(fw.conn.send(e) for e in hs.receive(ev)))
        assert hs.succeeded
        fw.send(greeting())
        m.submit(Task("true"))
        fw.expect(wp.Task)
        stalled.close()


def test_gotcha_20_task_ids_stay_below_2_31(manager):
    assert manager.submit(Task("true")) == 1
    manager._ids = itertools.count(2**31 - 1)
    assert manager.submit(Task("true")) == 2**31 - 1
    with pytest.raises(UsageError):
        manager.submit(Task("true"))
    wait_for(lambda: manager.stats.tasks_waiting == 2)


def test_gotcha_13_outputs_followed_and_dangling_link_missing(manager, tmp_path):
    fw = FakeWorker(manager.port)
    fw.send(greeting())
    t = Task("x")
    t.add_output(str(tmp_path / "outdir"), "outdir")
    t.add_output(str(tmp_path / "other"), "other")
    manager.submit(t)
    task = fw.expect(wp.Task)
    _serve_one_result = fw.result(task.task_id)
    fw.send(b"available_results\n")
    fw.expect(wp.SendResults)
    fw.send(_serve_one_result + b"end\n")
    first = fw.expect(wp.Get).name
    second = fw.expect(wp.Get).name
    # a link comes back as the file it points to; a dangling one as `missing`
    fw.send(b"dir %s 0\nfile %s/link 2\nhimissing %s/dangling 2\nend\n" % (first.encode(), first.encode(), first.encode()))
    fw.send(b"file %s 3\nyesend\n" % second.encode())
    done = manager.wait(10)
    assert done.result is Result.OUTPUT_MISSING
    assert (tmp_path / "outdir" / "link").read_text() == "hi"
    assert (tmp_path / "other").read_text() == "yes"  # the other outputs are still retrieved


def test_gotcha_15_kill_of_running_task_goes_alone_then_pause(manager):
    fw = FakeWorker(manager.port)
    fw.send(greeting())  # no treadle-version: treated as a reference worker
    tid = manager.submit(Task("sleep 100"))
    fw.expect(wp.Task)
    manager.cancel(tid)
    manager.submit(Task("next"))
    fw.expect(wp.Kill)
    start = time.monotonic()
    nxt = fw.expect(wp.Task, timeout=10)
    assert nxt.command == "next"
    assert time.monotonic() - start >= 3.0  # nothing while the reference worker stalls in kill
