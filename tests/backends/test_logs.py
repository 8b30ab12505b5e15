"""A job's log (issue 11, item 1): the size cap keeps the two ends and says what it cut."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from treadle.backends.base import Job
from treadle.backends.local import LocalBackend
from treadle.backends.logs import LOG_CAP, cap_file, capped, write_log

HALF = LOG_CAP // 2


def _expected(data: bytes) -> bytes:
    if len(data) <= LOG_CAP:
        return data
    cut = len(data) - LOG_CAP
    return data[:HALF] + f"\n[treadle: {cut} bytes cut here; a log longer than {LOG_CAP} bytes keeps its first and last {HALF} bytes]\n".encode() + data[-HALF:]


# Sizes around the cap, with a marker at each end so a lost end shows.
SIZES = st.one_of(st.integers(0, 64), st.integers(LOG_CAP - 2, LOG_CAP + 2), st.integers(LOG_CAP, 3 * LOG_CAP))


@settings(max_examples=20, deadline=None)
@given(size=SIZES, fill=st.sampled_from([b"x", b"\n", b"\0"]))
def test_a_log_keeps_both_ends_and_says_what_was_cut(tmp_path_factory, size, fill):
    data = (b"START" + fill * size + b"END")
    path = tmp_path_factory.mktemp("log") / "job.err"
    path.write_bytes(data)
    cap_file(str(path))  # the local backend: the job wrote the file itself
    assert path.read_bytes() == capped(data) == _expected(data)
    write_log(str(path), data)  # the Work Queue backend: the output arrived whole
    assert path.read_bytes() == _expected(data)
    kept = path.read_bytes()
    assert kept.startswith(b"START") and kept.endswith(b"END")
    assert len(kept) <= LOG_CAP + 200


def test_a_local_job_that_removes_its_own_log_still_succeeds(tmp_path):
    b = LocalBackend()
    try:
        err = tmp_path / "job.err"
        b.submit(Job(0, f"echo gone >&2; rm {err}", stderr=str(err)))
        result = b.wait(10.0)
    finally:
        b.close()
    assert result is not None and result.succeeded and result.stderr == str(err)
