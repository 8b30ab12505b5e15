"""Property tests of the password step's state machine (issue 9: reflection attacks).

An attacker who does not know the password drives one or more ``PasswordHandshake``
machines of one role (several connections to one manager, or several workers that
connect to a fake manager). It sends any events in any order, built from random
strings, treadle's mark, and everything the machines sent so far: their challenges
and their answers, reflected and relayed at will. No machine may then succeed, and
none may send the reference-form answer (the one a peer of the other role accepts)
for any challenge, because the attacker never proved the password.

Then the honest pairings, with the reference's order of lines (it answers a challenge
as soon as it reads it) played by a small model of the reference, must still finish.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from treadle.queue import protocol as p

PASSWORD = b"s3cret\n"
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
token = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=70)


def guesses(word: str) -> list[str]:
    """What an attacker can make of a string it saw, without the password."""
    return [word, p.TREADLE_MARK + word, word[len(p.TREADLE_MARK):],
            hashlib.sha1(b" " + word.encode()).hexdigest(), p.challenge_response(b"", word)]


@SETTINGS
@given(role=st.sampled_from([p.MANAGER, p.WORKER]), machines=st.integers(1, 3), data=st.data())
def test_no_password_no_success_and_no_reference_answer(role: str, machines: int, data) -> None:
    sides = [p.PasswordHandshake(PASSWORD, role) for _ in range(machines)]
    seen: list[str] = [p.TREADLE_MARK]  # every string the attacker can replay
    challenges: set[str] = set()  # every challenge a machine sent or received

    def emitted(events: list) -> None:
        for ev in events:
            if isinstance(ev, p.Challenge):
                challenges.add(ev.token)
                seen.extend(guesses(ev.token))
            elif isinstance(ev, p.ChallengeResponse):
                seen.extend(guesses(ev.digest))
                leaked = {t for t in challenges if p.challenge_response(PASSWORD, t) == ev.digest}
                assert not leaked, f"a {role} sent the reference answer for {leaked}"

    for side in sides:
        emitted(side.start())
    for _ in range(data.draw(st.integers(1, 12), label="steps")):
        side = data.draw(st.sampled_from(sides), label="target")
        word = data.draw(st.sampled_from(seen) | token, label="word")
        event = data.draw(st.sampled_from([
            p.Auth(), p.Challenge(word), p.ChallengeResponse(word), p.AuthVerdict(True),
            p.AuthVerdict(False)]), label="event")
        if isinstance(event, p.Challenge):
            challenges.add(word)
        emitted(side.receive(event))
        assert not any(s.succeeded for s in sides), f"a {role} accepted a peer without the password"


class ReferenceSide:
    """The reference's password step (cctools link_auth_password), as the wire shows it:
    it answers the peer's challenge as soon as it reads it and judges the peer's answer
    against the reference form only."""

    def __init__(self, password: bytes) -> None:
        self.password = password
        self.challenge = "".join("abcdefghijklmnopqrstuvwxyz"[i % 26] for i in range(63))
        self.peer_ok: bool | None = None
        self.succeeded: bool | None = None

    def start(self) -> list:
        return [p.Auth(), p.Challenge(self.challenge)]

    def receive(self, ev: p.Event) -> list:
        if isinstance(ev, p.Challenge):
            return [p.ChallengeResponse(p.challenge_response(self.password, ev.token))]
        if isinstance(ev, p.ChallengeResponse):
            self.peer_ok = ev.digest == p.challenge_response(self.password, self.challenge)
            return [p.AuthVerdict(self.peer_ok)]
        if isinstance(ev, p.AuthVerdict):
            self.succeeded = bool(self.peer_ok) and ev.ok
        return []


def run_step(manager, worker) -> None:
    """Deliver each side's lines to the other, through the real parsers, until both stop."""
    m_conn, w_conn = p.ManagerConnection(), p.WorkerConnection()
    to_worker = b"".join(m_conn.send(e) for e in manager.start())
    to_manager = b"".join(w_conn.send(e) for e in worker.start())
    while to_worker or to_manager:
        for conn, data in ((w_conn, to_worker), (m_conn, to_manager)):
            if data:  # b"" would mean end of file
                conn.receive_data(data)
        to_manager = b"".join(w_conn.send(r) for e in w_conn.events() for r in worker.receive(e))
        to_worker = b"".join(m_conn.send(r) for e in m_conn.events() for r in manager.receive(e))


@pytest.mark.parametrize("manager_kind,worker_kind", [
    ("treadle", "treadle"), ("treadle", "reference"), ("reference", "treadle")])
@pytest.mark.parametrize("worker_password,ok", [(PASSWORD, True), (b"other\n", False)])
def test_honest_peers_finish_the_step(manager_kind: str, worker_kind: str,
                                      worker_password: bytes, ok: bool) -> None:
    manager = p.PasswordHandshake(PASSWORD, p.MANAGER) if manager_kind == "treadle" \
        else ReferenceSide(PASSWORD)
    worker = p.PasswordHandshake(worker_password, p.WORKER) if worker_kind == "treadle" \
        else ReferenceSide(worker_password)
    run_step(manager, worker)
    assert (manager.succeeded is True, worker.succeeded is True) == (ok, ok)
    # no deadlock: a treadle side always reaches a verdict (a reference side left
    # waiting for ours sees the connection close in real life)
    assert all(side.succeeded is not None for side in (manager, worker)
               if isinstance(side, p.PasswordHandshake))


def test_a_marked_challenge_draws_only_the_role_bound_answer() -> None:
    """The one answer a treadle manager gives first cannot pass as a worker's answer."""
    manager = p.PasswordHandshake(PASSWORD, p.MANAGER)
    manager.start()
    manager.receive(p.Auth())
    marked = p.TREADLE_MARK + "x" * 54
    (answer,) = manager.receive(p.Challenge(marked))
    assert answer == p.ChallengeResponse(p.manager_response(PASSWORD, marked))
    assert answer.digest != p.challenge_response(PASSWORD, marked)
    other = p.PasswordHandshake(PASSWORD, p.MANAGER, challenge=marked)
    other.receive(p.Auth())
    other.receive(p.Challenge("anything"))
    assert other.receive(answer) == [p.AuthVerdict(False)] and other.succeeded is False
