"""Example-based tests of the protocol-9 state machines: no sockets, bytes only."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest

from treadle.queue import protocol as p
from treadle.queue.protocol import (
    NEED_DATA,
    Alive,
    Auth,
    AuthVerdict,
    AvailableResults,
    Challenge,
    ChallengeResponse,
    Check,
    ConnectionClosed,
    Data,
    Dir,
    DirReply,
    EmptyDir,
    End,
    EndOfData,
    Exit,
    Feature,
    FileReply,
    Get,
    Greeting,
    HttpReply,
    HttpRequest,
    Info,
    InvalidateFile,
    Kill,
    LocalProtocolError,
    ManagerConnection,
    Missing,
    NameQuery,
    PasswordHandshake,
    ProjectName,
    ProtocolError,
    Put,
    Release,
    Resource,
    ResourceTag,
    Result,
    SendResults,
    StatusReply,
    StatusRequest,
    Symlink,
    Task,
    TaskFile,
    ThirdGet,
    ThirdPut,
    ThirdPutComplete,
    Tlq,
    Unlink,
    Update,
    Url,
    WorkerConnection,
)

GREETING = Greeting("vm", "Linux", "x86_64", "8.0.0")


def events_of(conn, data: bytes) -> list:
    if data:  # b"" would mean end of file
        conn.receive_data(data)
    return list(conn.events())


def greeted_manager() -> ManagerConnection:
    m = ManagerConnection()
    assert events_of(m, WorkerConnection().send(GREETING)) == [GREETING]
    return m


# --- the transcript of spec section 3.12, byte for byte --------------------------------

REFERENCE_GREETING = (
    b"workqueue 9 vm Linux x86_64 8.0.0\n"
    b"info worker-id worker-3e6225d14bd77c47507542565eb3d5bd\n"
    b"alive\n"
    b"resource workers 1 1 1\n"
    b"resource disk 2000 2000 2000\n"
    b"resource memory 1000 1000 1000\n"
    b"resource gpus 0 0 0\n"
    b"resource cores 1 1 1\n"
    b"resource tag 0\n"
    b"info end_of_resource_update 0\n"
    b"info tasks_running 0\n"
    b"info worker-end-time 0\n"
)

REFERENCE_TASK = (
    b"put file-0-fc91f21b3f8552b556a1ea9731c804d5-in.txt 12 0644\n"
    b"hello world\n"
    b"task 1\n"
    b"cmd 42\n"
    b'cat in.txt > out1.txt; echo "rule1 stdout"'
    b"category default\n"
    b"cores 1.000\n"
    b"gpus 0\n"
    b"memory 1000\n"
    b"disk 2000\n"
    b"env 7\nCORES=1\n"
    b"env 17\nOMP_NUM_THREADS=1\n"
    b"infile file-0-fc91f21b3f8552b556a1ea9731c804d5-in.txt in.txt 1\n"
    b"outfile file-0-83d92e6961b2c858be4cb7d89430e896-out1.txt out1.txt 1\n"
    b"end\n"
)


def test_reference_greeting_parses() -> None:
    m = ManagerConnection()
    evs = events_of(m, REFERENCE_GREETING)
    assert evs[0] == GREETING
    assert evs[1] == Info("worker-id", "worker-3e6225d14bd77c47507542565eb3d5bd")
    assert evs[2] == Alive()
    assert Resource("disk", 2000, 2000, 2000) in evs
    assert evs[8] == ResourceTag(0)
    assert evs[-1] == Info("worker-end-time", "0")
    assert m.greeted


def test_reference_task_parses_and_decimal_cores_round_up() -> None:
    w = WorkerConnection()
    evs = events_of(w, REFERENCE_TASK)
    put = Put("file-0-fc91f21b3f8552b556a1ea9731c804d5-in.txt", 12, 0o644)
    assert evs[:3] == [put, Data(b"hello world\n"), EndOfData()]
    assert evs[3] == Task(
        task_id=1,
        command='cat in.txt > out1.txt; echo "rule1 stdout"',
        cores=1, gpus=0, memory=1000, disk=2000,
        env=("CORES=1", "OMP_NUM_THREADS=1"),
        inputs=(TaskFile("file-0-fc91f21b3f8552b556a1ea9731c804d5-in.txt", "in.txt", 1),),
        outputs=(TaskFile("file-0-83d92e6961b2c858be4cb7d89430e896-out1.txt", "out1.txt", 1),),
    )
    assert len(evs) == 4


def test_decimal_resources_round_up_and_wall_time_keeps_fraction() -> None:
    w = WorkerConnection()
    (task,) = events_of(w, b"task 3\ncmd 1\nxcores 0.5\nmemory 10.000\nwall_time 1.500000\nend\n")
    assert task.cores == 1 and task.memory == 10 and task.wall_time == 1.5


def test_task_lines_in_any_order() -> None:
    w = WorkerConnection()
    (task,) = events_of(w, b"task 9\noutfile c o 0\ndir e\ngpus 1\ncmd 2\nhicategory x y\nend\n")
    assert task == Task(9, "hi", category="x y", gpus=1, inputs=(EmptyDir("e"),),
                        outputs=(TaskFile("c", "o", 0),))


def test_result_and_get_reply_roundtrip_through_manager() -> None:
    m = greeted_manager()
    w = WorkerConnection()
    assert m.send(SendResults()) == b"send_results -1\n"
    assert m.send(Get("out-1")) == b"get out-1 1\n"
    stream = (w.send(Result(0, 0, 13, 2017, 1)) + w.send(Data(b"rule1 stdout\n"))
              + w.send(Info("tasks_running", "0")) + w.send(End())
              + w.send(AvailableResults())
              + w.send(DirReply("out-1")) + w.send(FileReply("out-1/a b", 3)) + b"xyz"
              + (w.payload_streamed(3) or b"")
              + w.send(Missing("out-1/sub/link", 2)) + w.send(End()))
    assert events_of(m, stream) == [
        Result(0, 0, 13, 2017, 1), Data(b"rule1 stdout\n"), EndOfData(),
        Info("tasks_running", "0"), End(), AvailableResults(),
        DirReply("out-1"), FileReply("out-1/a b", 3), Data(b"xyz"), EndOfData(),
        Missing("out-1/sub/link", 2), End(),
    ]


def test_every_manager_message_roundtrips() -> None:
    m = ManagerConnection()
    w = WorkerConnection()
    assert events_of(m, w.send(NameQuery())) == [NameQuery()]
    sent = [
        ProjectName("my project"),
        Put("buffer-1", 3, 0o777), Data(b"abc"), EndOfData(),
        Dir("top"), Put("f", 0, 0o600), EndOfData(), Dir("sub"), Symlink("l", b"f\0"), End(),
        End(),
        Url("url-1-abc", "http://127.0.0.1/x y", 0o644, 1),
        ThirdGet(1, "cmd-3-abc", "echo generated > %%"), ThirdPut(2, "x", "/shared/out"),
        Task(5, "echo $X", end_time=1700000000.25, wall_time=2, env=("X=1", "NOEQUALS"),
             inputs=(TaskFile("c1", "dir/a%b c", 1), EmptyDir("emptydir"))),
        SendResults(), Get("c1"), Kill(5), Kill(-1), Unlink("c1"), InvalidateFile("c1"),
        Check(), Tlq("http://127.0.0.1/tlq"), Release(), Exit(),
    ]
    data = b"".join(m.send(e) for e in sent)
    assert events_of(w, data) == sent


def test_every_worker_message_roundtrips() -> None:
    m = ManagerConnection()
    w = WorkerConnection()
    m.send(SendResults())
    m.send(Get("c"))
    m.send(ThirdPut(1, "c", "cat > /dev/null"))
    sent = [
        GREETING, Info("worker-id", "worker-00"), Feature("has gpu/%"), Alive(),
        Resource("cores", 2, 2, 2), ResourceTag(7), AvailableResults(),
        Result(8, 9, 0, 5, 3), EndOfData(), Update(3, "watched.log", 10, 2), Data(b"ab"),
        EndOfData(), End(), FileReply("c", 0), EndOfData(), End(), ThirdPutComplete(True),
    ]
    assert events_of(m, b"".join(w.send(e) for e in sent)) == sent


def test_reference_forms_accepted() -> None:
    w = WorkerConnection()
    assert events_of(w, b"put buffer-1-7f 11 777\nbuffer-data") == [
        Put("buffer-1-7f", 11, 0o777), Data(b"buffer-data"), EndOfData()]
    assert events_of(w, b"send_results\nget x\nthirdget 1 cmd-3-a echo a b > %%\n") == [
        SendResults(-1), Get("x", 1), ThirdGet(1, "cmd-3-a", "echo a b > %%")]


def test_url_encoding_rules() -> None:
    assert p.url_encode("a b%c\\<>'\"{~\t\x01é") == "a%20b%25c%5C%3C%3E%27%22%7B%7E%09%01%C3%A9"
    assert p.url_encode("file-0-abc-in.txt") == "file-0-abc-in.txt"
    assert p.url_decode("a%20b%2fc%zz%") == "a b/c%zz%"
    raw = "caf\udce9"  # a non-UTF-8 byte travels as a surrogate escape
    assert p.url_decode(p.url_encode(raw)) == raw


def test_password_handshake_matches_spec_digest() -> None:
    assert p.challenge_response(b"secret\n", "abc") == hashlib.sha1(b"secret\n abc").hexdigest()
    token = p.new_challenge()
    assert len(token) == 63 and token.isprintable() and " " not in token


@pytest.mark.parametrize("worker_pw,manager_pw,ok", [
    (b"pw\n", b"pw\n", True), (b"pw\n", b"other\n", False), (b"pw", b"pw\n", False)])
def test_password_step_both_sides(worker_pw: bytes, manager_pw: bytes, ok: bool) -> None:
    m, w = ManagerConnection(), WorkerConnection()
    hm, hw = PasswordHandshake(manager_pw, p.MANAGER), PasswordHandshake(worker_pw, p.WORKER)
    to_w = b"".join(m.send(e) for e in hm.start())
    to_m = b"".join(w.send(e) for e in hw.start())
    for _ in range(4):
        em, ew = events_of(m, to_m), events_of(w, to_w)
        to_m = b"".join(w.send(r) for e in ew for r in hw.receive(e))
        to_w = b"".join(m.send(r) for e in em for r in hm.receive(e))
    assert hm.succeeded is ok and hw.succeeded is ok
    if ok:  # after the step, the greeting follows on the same connection
        assert events_of(m, w.send(GREETING)) == [GREETING]


def test_auth_events_parse() -> None:
    w = WorkerConnection()
    assert events_of(w, b"auth password sha1\nch4ll\n0123abc\nfailure\ncheck\n") == [
        Auth(), Challenge("ch4ll"), ChallengeResponse("0123abc"), AuthVerdict(False), Check()]


def test_status_requests() -> None:
    for kind in p.STATUS_KINDS:
        m = ManagerConnection()
        assert events_of(m, p.status_request(kind)) == [StatusRequest(kind)]
        assert m.send(StatusReply(b"[]")) == b"[]"
    m = ManagerConnection()
    req = b"GET /queue_status HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"
    assert events_of(m, req) == [HttpRequest("/queue_status")]
    assert m.send(HttpReply(b"[]")).startswith(b"HTTP/1.1 200 OK\nConnection: close\n")
    assert p.parse_status_reply(b'[{"workers":1}]') == [{"workers": 1}]
    with pytest.raises(ProtocolError):
        p.parse_status_reply(b'{"not": "a list"}')


def test_eof_at_boundary_and_mid_message() -> None:
    w = WorkerConnection()
    w.receive_data(b"check\n")
    w.receive_data(b"")
    assert list(w.events()) == [Check(), ConnectionClosed()]
    assert w.next_event() == ConnectionClosed()
    w = WorkerConnection()
    w.receive_data(b"put x 10 0644\nabc")
    w.receive_data(b"")
    with pytest.raises(ProtocolError):
        list(w.events())
    with pytest.raises(ProtocolError):  # stays broken
        w.next_event()


def test_need_data_on_partial_input() -> None:
    w = WorkerConnection()
    w.receive_data(b"chec")
    assert w.next_event() is NEED_DATA
    w.receive_data(b"k\n")
    assert w.next_event() == Check()


BAD_FOR_WORKER = [
    b"bogus\n",
    b"end\n",  # no dir stream open
    b"symlink a 1\nb",  # symlink outside a dir stream
    b"put ../x 1 0644\nz",
    b"put a%2Fb 1 0644\nz",  # decoded name contains a slash
    b"put . 1 0644\nz",
    b"get a%0Ab\n",  # a newline could not come back raw in the reply
    b"dir %2E%2E\n",
    b"get ..\n",
    b"unlink /etc\n",
    b"put x -1 0644\n",
    b"put x 10 0999\n",
    b"put x 99999999999999999999 0644\n",
    b"kill 2147483648\n",
    b"task 1\ncmd 1\nxfrobnicate 3\nend\n",
    b"task 1\nend\n",  # no cmd
    b"dir d\ncheck\n",  # only put/dir/symlink/end inside a dir stream
    b"dir d\nsymlink l 5000\n",
    b"x" * (p.MAX_LINE + 2),
    b"task 1\ncmd %d\n" % (p.MAX_COMMAND + 1),
    b"task 1\ncmd 1\nxenv %d\n" % (p.MAX_ENV_ENTRY + 1),
    b"task 1\ncmd 1\nxenv 1\nAB",  # env payload not followed by newline
    b"task 1\ncmd 1\nxcores abc\nend\n",
    b"task 1\ncmd 1\nxwall_time nan\nend\n",
    b"url n 70000 0644 0\n",
]


@pytest.mark.parametrize("data", BAD_FOR_WORKER)
def test_worker_side_rejects(data: bytes) -> None:
    w = WorkerConnection()
    w.receive_data(data)
    with pytest.raises(ProtocolError):
        list(w.events())


BAD_FOR_MANAGER = [
    b"info worker-id\n",  # info without a value (gotcha 3)
    b"end\n",  # no pending reply
    b"file x 1\nz",  # no pending get
    b"result 0 0 0 0 1\n",  # no pending send_results
    b"bogus\n",
    b"resource cores 1 2\n",
    b"workqueue 9 vm Linux\n",  # greeting again, and malformed
]


@pytest.mark.parametrize("data", BAD_FOR_MANAGER)
def test_manager_side_rejects(data: bytes) -> None:
    m = greeted_manager()
    m.receive_data(data)
    with pytest.raises(ProtocolError):
        list(m.events())


@pytest.mark.parametrize("reply", [
    b"file other 1\nz", b"file c/../x 1\nz", b"dir c/./d 0\n", b"missing c//x 2\n",
    b"file c/ 1\nz", b"file c2 1\nz"])
def test_get_reply_paths_must_stay_below_the_requested_name(reply: bytes) -> None:
    m = greeted_manager()
    m.send(Get("c"))
    m.receive_data(reply)
    with pytest.raises(ProtocolError):
        list(m.events())


def test_manager_rejects_lines_before_greeting() -> None:
    m = ManagerConnection()
    m.receive_data(b"alive\n")
    with pytest.raises(ProtocolError):
        m.next_event()


def test_greeting_with_other_protocol_is_reported_not_refused() -> None:
    m = ManagerConnection()
    (g,) = events_of(m, b"workqueue 11 h Linux x86_64 7.5.0 extra\n")
    assert g.protocol == 11  # the manager decides (gotcha 1)


def test_pipelined_replies_close_in_order() -> None:
    m = greeted_manager()
    m.send(Get("a"))
    m.send(SendResults())
    m.send(Get("b"))
    evs = events_of(m, b"file a 0\nend\nresult 0 0 0 1 1\nend\nmissing b 2\nend\n")
    assert evs[-2] == Missing("b", 2)
    m.receive_data(b"end\n")
    with pytest.raises(ProtocolError):
        list(m.events())


def test_local_misuse_raises_local_error() -> None:
    m, w = ManagerConnection(), WorkerConnection()
    with pytest.raises(LocalProtocolError):
        m.send(Symlink("l", b"x"))  # outside a dir stream
    with pytest.raises(LocalProtocolError):
        m.send(End())
    with pytest.raises(LocalProtocolError):
        m.send(Put("a/b", 0))
    with pytest.raises(LocalProtocolError):
        w.send(Info("x", ""))
    m.send(Put("a", 5))
    with pytest.raises(LocalProtocolError):
        m.send(Check())  # payload owed
    m.payload_streamed(3)
    assert m.payload_owed == 2
    with pytest.raises(LocalProtocolError):
        m.send(Data(b"abc"))
    m.send(Data(b"de"))
    assert m.send(EndOfData()) == b""
    assert m.send(Check()) == b"check\n"
    with pytest.raises(LocalProtocolError):
        m.send(ProjectName("x"))  # nobody asked
    assert not isinstance(LocalProtocolError("x"), ProtocolError)


def test_symlink_target_nuls_stripped() -> None:
    assert Symlink("l", b"a.txt\0\0").target_path == b"a.txt"
    assert Symlink("l", b"a.txt").target_path == b"a.txt"


def test_safe_relative_paths() -> None:
    ok = ["a", "a/b", "dir/x.txt", "./a", "a//b"]
    bad = ["", "/etc/passwd", "..", "../x", "a/../../x", "a/..", ".", "./", "a\0b"]
    assert all(p.is_safe_relative_path(x) for x in ok)
    assert not any(p.is_safe_relative_path(x) for x in bad)


def test_large_payload_streams_without_copying_whole_chunks() -> None:
    w = WorkerConnection()
    chunk = bytes(1 << 20)
    w.receive_data(b"put big %d 0644\n" % (4 << 20))
    for _ in range(4):
        w.receive_data(chunk)
    evs = list(w.events())
    assert evs[0] == Put("big", 4 << 20, 0o644)
    datas = [e for e in evs if isinstance(e, Data)]
    assert sum(len(d.data) for d in datas) == 4 << 20
    assert any(d.data is chunk for d in datas)  # whole chunks pass through uncopied
    assert evs[-1] == EndOfData()


def test_module_is_python38_syntax_and_stdlib_only() -> None:
    source = Path(p.__file__).read_text()
    tree = ast.parse(source, feature_version=(3, 8))
    imported = {
        (n.module or "").split(".")[0] if isinstance(n, ast.ImportFrom) else a.name.split(".")[0]
        for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    }
    import sys
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


def test_payload_read_by_the_caller_is_accounted() -> None:
    w = WorkerConnection()
    w.receive_data(b"put big 100 0644\n" + b"x" * 30)
    assert w.payload_left == 0  # bytes still buffered: hand them out first
    assert list(w.events()) == [Put("big", 100, 0o644), Data(b"x" * 30)]
    assert w.payload_left == 70
    with pytest.raises(LocalProtocolError):
        w.payload_received(71)
    w.payload_received(70)  # read straight from the socket by the caller
    w.receive_data(b"check\n")
    assert list(w.events()) == [EndOfData(), Check()]
    assert w.payload_left == 0


def test_status_query_after_the_password_step() -> None:
    m = ManagerConnection()
    evs = events_of(m, b"auth password sha1\nchal\nresp\nok\nqueue_status\n")
    assert evs == [Auth(), Challenge("chal"), ChallengeResponse("resp"), AuthVerdict(True),
                   StatusRequest("queue_status")]
    m = ManagerConnection()
    m.receive_data(b"auth password sha1\nc\nr\nok\nauth password sha1\n")
    with pytest.raises(ProtocolError):  # only one password step
        list(m.events())
