"""Property tests of the protocol: round trips, arbitrary splitting, and fuzzed input."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from treadle.queue import protocol as p
from treadle.queue.protocol import (
    Data,
    EndOfData,
    ManagerConnection,
    ProtocolError,
    WorkerConnection,
)

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

BLANKS = " \t\n\r\x0b\x0c"
text = st.text(max_size=12)
component = st.text(min_size=1, max_size=12).filter(lambda s: p.is_component(s) and "\n" not in s)
token = st.text(min_size=1, max_size=12).filter(lambda s: not any(c in s for c in BLANKS))
raw_component = component.filter(lambda s: not any(c in s for c in BLANKS))
no_newline = st.text(max_size=12).filter(lambda s: "\n" not in s)
nonempty_no_newline = no_newline.filter(bool)
payload = st.binary(max_size=64)
small = st.integers(0, 10**6)
maybe_small = st.none() | small
times = st.none() | st.integers(0, 10**10).map(float) | st.floats(0, 1e9)
task_ids = st.integers(0, p.MAX_TASK_ID)


def with_payload(header_cls, *fields):
    """A header event carrying len(payload) plus its Data and EndOfData."""
    return st.tuples(*fields, payload).map(
        lambda t: [header_cls(*t[:-1], len(t[-1])), Data(t[-1]), EndOfData()]
    )


def put(name=component):
    return st.tuples(name, payload, st.integers(0, 0o7777)).map(
        lambda t: [p.Put(t[0], len(t[1]), t[2]), Data(t[1]), EndOfData()])


dir_tree = st.recursive(
    put() | st.tuples(component, st.binary(max_size=40)).map(lambda t: [p.Symlink(*t)]),
    lambda children: st.tuples(component, st.lists(children, max_size=4)).map(
        lambda t: [p.Dir(t[0])] + [e for c in t[1] for e in c] + [p.End()]),
    max_leaves=8,
)
top_dir = st.tuples(component, st.lists(dir_tree, max_size=3)).map(
    lambda t: [p.Dir(t[0])] + [e for c in t[1] for e in c] + [p.End()])

task = st.builds(
    p.Task,
    task_id=task_ids,
    command=st.text(max_size=40),
    category=no_newline,
    cores=maybe_small, gpus=maybe_small, memory=maybe_small, disk=maybe_small,
    end_time=times, wall_time=times,
    env=st.lists(st.text(max_size=20), max_size=3).map(tuple),
    inputs=st.lists(
        st.builds(p.TaskFile, raw_component, st.text(min_size=1, max_size=12),
                  st.integers(0, 127))
        | st.builds(p.EmptyDir, token), max_size=4).map(tuple),
    outputs=st.lists(st.builds(p.TaskFile, raw_component, st.text(min_size=1, max_size=12),
                               st.integers(0, 127)), max_size=3).map(tuple),
)

manager_message = st.one_of(
    put(), top_dir, task.map(lambda t: [t]),
    st.builds(p.Url, raw_component, no_newline, st.integers(0, 0o7777),
              st.integers(0, 127)).map(lambda e: [e]),
    st.builds(p.ThirdGet, st.integers(0, 9), component, nonempty_no_newline).map(lambda e: [e]),
    st.builds(p.SendResults, st.integers(-p.MAX_TASK_ID, p.MAX_TASK_ID)).map(lambda e: [e]),
    st.builds(p.Get, component, st.integers(0, 1)).map(lambda e: [e]),
    st.builds(p.Kill, st.integers(-1, p.MAX_TASK_ID)).map(lambda e: [e]),
    st.builds(p.Unlink, component).map(lambda e: [e]),
    st.builds(p.InvalidateFile, component).map(lambda e: [e]),
    st.builds(p.Tlq, no_newline).map(lambda e: [e]),
    st.sampled_from([p.Check(), p.Release(), p.Exit()]).map(lambda e: [e]),
)

async_line = st.one_of(
    st.builds(p.Info, token, nonempty_no_newline),
    st.builds(p.Feature, st.text(min_size=1, max_size=12)),
    st.just(p.Alive()), st.just(p.AvailableResults()),
    st.builds(p.Resource, token.filter(lambda s: s != "tag"), small, small, small),
    st.builds(p.ResourceTag, st.integers(-1, p.MAX_TASK_ID)),
).map(lambda e: [e])

result_item = with_payload(
    lambda s, c, u, t, n: p.Result(s, c, n, u, t),
    st.integers(0, 255), st.integers(-(2**31), 2**31 - 1), st.integers(0, 2**40), task_ids,
) | with_payload(lambda t, path, off, n: p.Update(t, path, off, n), task_ids, token,
                 st.integers(0, 2**40))


def sub_path(top: str):
    return st.lists(raw_component, max_size=3).map(lambda parts: "/".join([top] + parts))


def get_reply(name: str):
    item = st.one_of(
        sub_path(name).flatmap(lambda path: payload.map(
            lambda b: [p.FileReply(path, len(b)), Data(b), EndOfData()])),
        sub_path(name).map(lambda path: [p.DirReply(path)]),
        st.tuples(sub_path(name), st.integers(0, 4095)).map(lambda t: [p.Missing(*t)]),
        async_line,
    )
    return st.lists(item, max_size=5).map(lambda items: [e for i in items for e in i] + [p.End()])


# one request of the manager with the worker's whole reply
exchange = st.one_of(
    st.just(p.SendResults()).flatmap(lambda req: st.lists(result_item | async_line, max_size=4)
                                     .map(lambda xs: (req, [e for x in xs for e in x]
                                                      + [p.End()]))),
    raw_component.flatmap(lambda n: get_reply(n).map(lambda reply: (p.Get(n), reply))),
    st.tuples(st.integers(1, 3), component, nonempty_no_newline, st.booleans()).map(
        lambda t: (p.ThirdPut(t[0], t[1], t[2]), [p.ThirdPutComplete(t[3])])),
    async_line.map(lambda e: (None, e)),
)

greeting = st.builds(p.Greeting, token, token, token, token, st.integers(0, 99))


def normalise(events):
    """Merge adjacent Data chunks: how a payload is chunked depends on how bytes arrive."""
    out = []
    for e in events:
        if isinstance(e, Data):
            if not e.data:
                continue
            if out and isinstance(out[-1], Data):
                out[-1] = Data(out[-1].data + e.data)
                continue
        out.append(e)
    return out


def feed_in_pieces(conn, data: bytes, cuts) -> list:
    """Feed ``data`` split at the given cut points; collect every event."""
    events = []
    points = sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]
    start = 0
    for point in points:
        if point > start:
            conn.receive_data(data[start:point])
            start = point
        events.extend(conn.events())
    return events


@SETTINGS
@given(st.lists(manager_message, max_size=6), st.lists(st.integers(0, 10**6), max_size=8))
def test_manager_messages_roundtrip_split_anywhere(messages, cuts) -> None:
    sent = [e for m in messages for e in m]
    m = ManagerConnection()
    data = b"".join(m.send(e) for e in sent)
    w = WorkerConnection()
    assert normalise(feed_in_pieces(w, data, cuts)) == normalise(sent)
    w.receive_data(b"")
    assert w.next_event() == p.ConnectionClosed()


@SETTINGS
@given(greeting, st.lists(exchange, max_size=5), st.lists(st.integers(0, 10**6), max_size=8))
def test_worker_messages_roundtrip_split_anywhere(hello, exchanges, cuts) -> None:
    m = ManagerConnection()
    w = WorkerConnection()
    sent = [hello]
    for request, reply in exchanges:
        if request is not None:
            m.send(request)
        sent += reply
    data = b"".join(w.send(e) for e in sent)
    assert normalise(feed_in_pieces(m, data, cuts)) == normalise(sent)


def drain(conn, data: bytes) -> None:
    """Feed bytes; only ProtocolError may escape."""
    try:
        conn.receive_data(data)
        conn.receive_data(b"")
        for _ in range(100000):
            if isinstance(conn.next_event(), p.ConnectionClosed):
                break
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_protocol_error(data: bytes) -> None:
    drain(WorkerConnection(), data)
    drain(ManagerConnection(), data)
    greeted = ManagerConnection()
    greeted.receive_data(b"workqueue 9 h Linux x86_64 8.0.0\n")
    list(greeted.events())
    greeted.send(p.Get("c"))
    greeted.send(p.SendResults())
    drain(greeted, data)


@SETTINGS
@given(st.lists(manager_message, min_size=1, max_size=4), st.data())
def test_mutated_manager_streams_only_raise_protocol_error(messages, data) -> None:
    m = ManagerConnection()
    stream = bytearray(b"".join(m.send(e) for msg in messages for e in msg))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(stream)))
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "insert" or not stream:
            stream[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        elif action == "flip":
            stream[min(i, len(stream) - 1)] ^= data.draw(st.integers(1, 255))
        else:
            del stream[i : i + data.draw(st.integers(1, 8))]
    drain(WorkerConnection(), bytes(stream))


@SETTINGS
@given(st.text(max_size=30))
def test_url_encoding_roundtrips_and_output_is_safe(name: str) -> None:
    encoded = p.url_encode(name)
    assert p.url_decode(encoded) == name
    assert all(0x21 <= ord(c) <= 0x7A for c in encoded)


# Sizes around each limit: a name whose URL-encoding crosses MAX_LINE, a command,
# env entry or URL just under or over what the receiver collects in memory.
def around(limit: int):
    return st.integers(limit - 64, limit + 64)


tight_task = st.builds(
    p.Task,
    task_id=task_ids,
    command=around(p.MAX_COMMAND).map(lambda n: "c" * n),
    env=st.lists(around(p.MAX_ENV_ENTRY).map(lambda n: "E=" + "v" * n), max_size=2).map(tuple),
    inputs=st.lists(st.builds(p.TaskFile, st.just("x" * 200),
                              st.integers(1300, 1400).map(lambda n: "~" * n), st.integers(0, 127)),
                    max_size=2).map(tuple),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(tight_task, st.builds(p.Url, raw_component, around(p.MAX_URL).map(lambda n: "u" * n))))
def test_what_the_sender_accepts_the_receiver_accepts(event) -> None:
    """The sending side refuses exactly what the receiving side would: a task that encodes
    always parses back, so the manager can refuse at submit what a worker would drop."""
    try:
        data = ManagerConnection().send(event)
    except p.LocalProtocolError:
        return
    w = WorkerConnection()
    w.receive_data(data)
    assert list(w.events()) == [event]
