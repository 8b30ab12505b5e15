"""Reflection attacks on the password step (issue 9), over real sockets on 127.0.0.1.

The attacker never knows the password. It hands a side its own challenge back (on
the same connection, or on a second one) and relays whatever answer it gets. A side
that answers a challenge before its peer proved the password (as protocol 9's
reference does) gives it the very answer it expects, so these tests fail on such a
side and pass when answers wait for the peer's proof. The last tests check that
honest peers still pass the step and that a wrong password still fails; the reference
worker and the reference makeflow with a password have their tests in
test_interop_reference_worker.py and test_worker_reference.py.

An attacker waits ``QUIET`` seconds for an answer: a vulnerable side sends it at once,
so the wait bounds the attack; it is not a pause before checking a result.
"""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import pytest
from tests._wait import wait_for
from tests.queue._fake_worker import FakeWorker, greeting
from tests.queue._manager_fixtures import drain

from treadle.errors import TreadleError
from treadle.queue import Manager, Task
from treadle.queue import protocol as wp
from treadle.queue.status import query

PASSWORD = b"correct horse\n"
QUIET = 2.0


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "pw.txt"
    path.write_bytes(PASSWORD)
    return path


def guess(challenge: str) -> str:
    """What an attacker without the password can offer: the answer for an empty one."""
    return hashlib.sha1(b" " + challenge.encode()).hexdigest()


def until_closed(peer, timeout: float = 10.0) -> tuple[list, bool]:
    """The events ``peer`` receives until its connection closes or ``timeout`` passes,
    and whether it closed."""
    events: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ev = peer.next_event(deadline - time.monotonic())
        except wp.ProtocolError:
            return events, True
        if ev is None and peer.closed or isinstance(ev, wp.ConnectionClosed):
            return events, True
        if ev is not None:
            events.append(ev)
    return events, False


def answer_within(peer, timeout: float = QUIET) -> str | None:
    """The next password answer ``peer`` receives, or None if none comes (or it closes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ev = peer.next_event(deadline - time.monotonic())
        except wp.ProtocolError:
            return None
        if ev is None or isinstance(ev, wp.ConnectionClosed):
            return None
        if isinstance(ev, wp.ChallengeResponse):
            return ev.digest
    return None


def send(peer, *events: wp.Event, then: bytes = b"") -> None:
    """``events`` and raw bytes ``then`` in one write (the peer may close right after)."""
    peer.send(b"".join(peer.conn.send(e) for e in events) + then)


def open_step(peer) -> str:
    """Read a side's opening of the password step; return its challenge."""
    assert isinstance(peer.next_event(), wp.Auth)
    ev = peer.next_event()
    assert isinstance(ev, wp.Challenge), ev
    return ev.token


# --- An attacker posing as a worker, against treadle's Manager -------------------------


def test_worker_reflecting_the_managers_challenge_gets_no_task(password_file: Path, start_worker,
                                                               tmp_path: Path) -> None:
    with Manager(0, host="127.0.0.1", password_file=str(password_file)) as m:
        m.submit(Task("echo for the honest worker"))
        attacker = FakeWorker(m.port)
        challenge = open_step(attacker)
        send(attacker, wp.Auth(), wp.Challenge(challenge))  # the manager's own challenge
        answer = answer_within(attacker)
        if answer is not None:  # the manager answered its own challenge: hand it back
            send(attacker, wp.ChallengeResponse(answer), wp.AuthVerdict(True), then=greeting())
        received, closed = until_closed(attacker)
        assert not any(isinstance(ev, wp.Task) for ev in received), "the attacker got a task"
        assert answer is None, "the manager revealed the answer to its own challenge"
        assert closed, "the manager kept the attacker's connection"
        assert m.stats.workers_joined == 0 and m.stats.tasks_waiting == 1
        start_worker("--single-shot", "-t", "30", "-P", str(password_file), "-s", str(tmp_path),
                     "127.0.0.1", str(m.port))
        (done,) = drain(m).values()
        assert done.output == b"for the honest worker\n"


@pytest.mark.parametrize("marked", [False, True], ids=["plain", "treadle-marked"])
def test_worker_relaying_between_two_connections_gets_no_task(password_file: Path,
                                                              marked: bool) -> None:
    """Connection 1's challenge goes out as the attacker's challenge on connection 2; the
    answer the manager gives there is relayed back on connection 1. Marked like a
    treadle worker's, the challenge draws the manager's role-bound answer, which must
    not pass as a worker's."""
    with Manager(0, host="127.0.0.1", password_file=str(password_file)) as m:
        m.submit(Task("echo never for the attacker"))
        first, second = FakeWorker(m.port), FakeWorker(m.port)
        try:
            challenge = open_step(first)
            open_step(second)
            send(first, wp.Auth(), wp.Challenge(wp.new_challenge()))
            relayed = (wp.TREADLE_MARK if marked else "") + challenge
            send(second, wp.Auth(), wp.Challenge(relayed))
            answer = answer_within(second)
            send(first, wp.ChallengeResponse(answer or guess(challenge)), wp.AuthVerdict(True),
                 then=greeting())
            received, closed = until_closed(first)
            assert not any(isinstance(ev, wp.Task) for ev in received), "the attacker got a task"
            assert not any(isinstance(ev, wp.AuthVerdict) and ev.ok for ev in received)
            assert closed, "the manager kept the attacker's connection"
            if not marked:
                assert answer is None, "the manager answered before the peer proved the password"
            assert m.stats.workers_joined == 0 and m.stats.tasks_waiting == 1
        finally:
            first.close()
            second.close()


# --- An attacker posing as a manager, against `treadle worker --password` --------------


class _Accepted:
    """One connection a fake manager accepted: the manager's end of the protocol."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.conn = wp.ManagerConnection()
        self.closed = False

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    def next_event(self, timeout: float = 10.0) -> wp.Event | None:
        """The next event from the worker, or None on a timeout or a closed connection."""
        deadline = time.monotonic() + timeout
        while True:
            ev = self.conn.next_event()
            if ev is not wp.NEED_DATA:
                return ev  # type: ignore[return-value]
            if self.closed or time.monotonic() >= deadline:
                return None
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                return None
            except OSError:
                data = b""
            self.closed = not data
            self.conn.receive_data(data)


@pytest.fixture
def fake_manager():
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(20)
    accepted: list[_Accepted] = []

    def accept() -> _Accepted:
        sock, _ = server.accept()
        accepted.append(_Accepted(sock))
        return accepted[-1]

    accept.port = server.getsockname()[1]  # type: ignore[attr-defined]
    yield accept
    for peer in accepted:
        peer.sock.close()
    server.close()


def command_for(pwned: Path) -> wp.Task:
    """The attacker's task: it leaves ``pwned`` behind if it ever runs."""
    return wp.Task(1, f"touch {pwned}", cores=1, memory=1, disk=1)


def take_over(peer: _Accepted, answer: str | None, challenge: str, pwned: Path) -> None:
    """Finish the step with the relayed answer (or a guess); if the worker then greets
    its new manager, send it a command."""
    send(peer, wp.ChallengeResponse(answer or guess(challenge)), wp.AuthVerdict(True))
    while True:
        try:
            ev = peer.next_event()
        except wp.ProtocolError:
            return
        if ev is None or isinstance(ev, wp.ConnectionClosed):
            return
        if isinstance(ev, wp.Greeting):
            send(peer, command_for(pwned))
            return


def refused(procs: list, pwned: Path) -> bool:
    """Wait until every worker exited or the attacker's command ran; whether none ran it."""
    wait_for(lambda: pwned.exists() or all(p.poll() is not None for p in procs), 30,
             "the workers to leave")
    return not pwned.exists()


def start_password_worker(start_worker, port: int, password_file: Path, tmp_path: Path):
    return start_worker("--single-shot", "-t", "30", "-P", str(password_file), "-s", str(tmp_path),
                        "127.0.0.1", str(port))


def test_fake_manager_reflecting_the_workers_challenge_runs_nothing(
        fake_manager, start_worker, password_file: Path, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    proc = start_password_worker(start_worker, fake_manager.port, password_file, tmp_path)
    peer = fake_manager()
    challenge = open_step(peer)
    send(peer, wp.Auth(), wp.Challenge(challenge))  # the worker's own challenge
    answer = answer_within(peer)
    take_over(peer, answer, challenge, pwned)
    assert refused([proc], pwned), "the worker ran the fake manager's command"
    assert answer is None, "the worker answered its own challenge"
    assert proc.returncode != 0 and b"password" in proc.stderr.read()


def test_fake_manager_relaying_between_two_workers_runs_nothing(
        fake_manager, start_worker, password_file: Path, tmp_path: Path) -> None:
    """Each worker gets the other's challenge, and each answer is relayed to the other."""
    pwned = tmp_path / "pwned"
    procs = [start_password_worker(start_worker, fake_manager.port, password_file, tmp_path)
             for _ in range(2)]
    peers = [fake_manager(), fake_manager()]
    challenges = [open_step(peer) for peer in peers]
    for peer, other in zip(peers, reversed(challenges), strict=True):
        send(peer, wp.Auth(), wp.Challenge(other))
    answers = [answer_within(peer) for peer in peers]  # answers[i] is for challenges[1 - i]
    for peer, challenge, relayed in zip(peers, challenges, reversed(answers), strict=True):
        take_over(peer, relayed, challenge, pwned)
    assert refused(procs, pwned), "a worker ran the fake manager's command"
    assert answers == [None, None], "a worker answered before the manager proved the password"
    assert all(proc.returncode != 0 for proc in procs)


# --- Honest peers still pass, a wrong password still fails -----------------------------


def test_treadle_worker_with_a_wrong_password_is_refused_by_treadle_manager(
        password_file: Path, start_worker, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("wrong\n")
    with Manager(0, host="127.0.0.1", password_file=str(password_file)) as m:
        m.submit(Task("echo right"))
        bad = start_password_worker(start_worker, m.port, wrong, tmp_path)
        assert bad.wait(timeout=30) != 0
        assert b"password" in bad.stderr.read()
        assert m.stats.workers_joined == 0 and m.stats.tasks_waiting == 1
        start_password_worker(start_worker, m.port, password_file, tmp_path)
        (done,) = drain(m).values()
        assert done.output == b"right\n"


def test_status_client_against_a_treadle_manager(password_file: Path, tmp_path: Path) -> None:
    with Manager(0, host="127.0.0.1", password_file=str(password_file)) as m:
        m.submit(Task("true"))
        assert query("127.0.0.1", m.port, password=PASSWORD)[0]["tasks_waiting"] == 1
        with pytest.raises(TreadleError, match="password"):
            query("127.0.0.1", m.port, password=b"wrong\n")


@pytest.mark.reference
def test_status_client_against_the_reference_makeflow(tmp_path: Path, start_makeflow) -> None:
    (tmp_path / "Makeflow").write_text("x.txt:\n\techo x > x.txt\n")
    (tmp_path / "pw.txt").write_bytes(PASSWORD)
    _, port = start_makeflow("Makeflow", "--password", "pw.txt", cwd=tmp_path)
    assert query("127.0.0.1", port, password=PASSWORD)[0]["tasks_waiting"] == 1
    with pytest.raises(TreadleError, match="password"):
        query("127.0.0.1", port, password=b"wrong\n")
