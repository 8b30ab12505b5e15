"""Random and mutated message streams against a live manager.

The manager must never crash, must drop a peer that breaks the protocol,
and must keep serving a good worker throughout.
"""

from __future__ import annotations

import logging
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.queue._fake_worker import FakeWorker, greeting

from treadle.queue import Manager, Result, Task
from treadle.queue import protocol as wp

VALID_SESSION = (
    greeting()
    + b"alive\navailable_results\n"
    + b"result 0 0 5 100 1\nhello"
    + b"info tasks_running 0\nend\n"
    + b"file file-1-x-out 3\nabc"
    + b"end\n"
    + b"missing file-1-x-out/sub 2\nend\n"
)


class _Errors(logging.Handler):
    """Collects ERROR records: an exception escaping the manager's handlers is a bug."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def live():
    errors = _Errors()
    for name in ("asyncio", "treadle"):
        logging.getLogger(name).addHandler(errors)
    m = Manager(0, host="127.0.0.1")
    good = FakeWorker(m.port)
    good.send(greeting())
    yield m, good
    good.close()
    m.close()
    for name in ("asyncio", "treadle"):
        logging.getLogger(name).removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records]


def _check_good_worker_still_served(m: Manager, good: FakeWorker) -> None:
    m.submit(Task("true"))
    task = good.expect(wp.Task)
    good.send(b"available_results\n")
    good.expect(wp.SendResults)
    good.send(good.result(task.task_id, output=b"fine") + b"end\n")
    done = m.wait(10)
    assert done is not None and done.result is Result.SUCCESS and done.output == b"fine"


def _blast(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(2)
            while s.recv(65536):
                pass
        except OSError:
            pass


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=3000))
def test_random_bytes_never_crash_the_manager(live, data):
    m, _ = live
    _blast(m.port, data)
    assert m.stats.workers_connected >= 1


@st.composite
def mutated(draw):
    data = bytearray(VALID_SESSION)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=20))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 10))]
        elif op == "truncate":
            del data[i:]
        elif op == "dup":
            data[i:i] = data[i : i + draw(st.integers(1, 40))]
    return bytes(data)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutated())
def test_mutated_sessions_never_crash_the_manager(live, data):
    m, _ = live
    _blast(m.port, data)
    assert m.stats.workers_connected >= 1


@pytest.mark.parametrize(
    "bad",
    [
        greeting() + b"x" * 5000 + b"\n",  # line too long
        greeting() + b"frobnicate now\n",  # unknown message
        greeting() + b"result 0 0 5 100 1\nhello",  # result without send_results
        greeting() + b"end\n",  # end without a pending reply
        greeting() + b"file ../../etc/passwd 3\nabc",  # a path outside any get
        greeting() + b"resource cores x y z\n",  # malformed numbers
        # issue 9: what a peer can make the manager hold
        greeting() + b"".join(b"feature f%d\n" % i for i in range(300_000)),
        greeting() + b"available_results\nresult 0 0 800000000 100 4242\n" + b"x" * 65536,
        greeting() + b"available_results\nupdate 4242 out 0 800000000\n" + b"x" * 65536,
    ],
)
def test_bad_peer_dropped_good_worker_served(live, bad):
    m, good = live
    fw = FakeWorker(m.port)
    try:
        fw.send(bad)
    except OSError:
        pass  # dropped while still writing a flood: the outcome we want
    assert fw.wait_closed(10)
    fw.close()
    _check_good_worker_still_served(m, good)


def test_get_reply_outside_the_requested_name_is_refused(tmp_path):
    """A worker cannot make the manager write outside the output's path."""
    with Manager(0, host="127.0.0.1") as m:
        fw = FakeWorker(m.port)
        fw.send(greeting())
        t = Task("x")
        t.add_output(str(tmp_path / "out"), "out")
        m.submit(t)
        task = fw.expect(wp.Task)
        fw.send(b"available_results\n")
        fw.expect(wp.SendResults)
        fw.send(fw.result(task.task_id) + b"end\n")
        get = fw.expect(wp.Get)
        fw.send(b"dir %s 0\nfile %s/../../escape 3\nabcend\n" % (get.name.encode(), get.name.encode()))
        assert fw.wait_closed(10)
        assert not (tmp_path.parent / "escape").exists()
        assert m.stats.tasks_waiting == 1  # its task went back to the queue


def test_fuzz_leaves_the_good_worker_served(live):
    m, good = live
    _check_good_worker_still_served(m, good)
