"""A job's stdout and stderr files, and the one cap on their size.

Every backend keeps a job's two streams in the files the engine names in
``Job.stdout`` and ``Job.stderr``; the engine's own output never carries them.
The local backend gives the files to the process as its fd 1 and 2, so a job
writes straight to disk; the Work Queue backend writes the task's output when
the task comes back (protocol 9 sends stdout and stderr merged, so both
streams land in the one ``.out`` file).

A stream longer than :data:`LOG_CAP` bytes keeps its first and its last
``LOG_CAP // 2`` bytes, and one line between them says how many bytes were cut
and what the cap is: the start of a log says what the job set out to do, the
end why it stopped. For a local job the cap is applied when the job ends (the
job writes the file itself while it runs).
"""

from __future__ import annotations

import os

LOG_CAP = 1 << 20  # bytes kept per stream of one job attempt; far more than any traceback needs
_HALF = LOG_CAP // 2


def cut_notice(cut: int) -> bytes:
    """The line that stands where ``cut`` bytes of a stream were left out."""
    return (
        f"\n[treadle: {cut} bytes cut here; a log longer than {LOG_CAP} bytes keeps "
        f"its first and last {_HALF} bytes]\n"
    ).encode()


def capped(data: bytes) -> bytes:
    """``data`` as a log keeps it: whole up to the cap, else its two ends and the notice."""
    if len(data) <= LOG_CAP:
        return data
    return data[:_HALF] + cut_notice(len(data) - 2 * _HALF) + data[-_HALF:]


def write_log(path: str, data: bytes) -> None:
    """Write a stream that arrived whole (a Work Queue task's output) to its log, capped.

    Raises ``OSError`` (a full disk) for the backend to report as the job's error.
    """
    with open(path, "wb") as f:
        f.write(capped(data))


def cap_file(path: str) -> None:
    """Apply the cap to a log a job wrote itself, in place (never needs more disk than it frees).

    A log the job removed itself is left alone; other errors raise ``OSError``
    for the backend to report as the job's error.
    """
    try:
        if os.stat(path).st_size <= LOG_CAP:
            return  # the common case costs one stat
        f = open(path, "r+b")  # noqa: SIM115
    except FileNotFoundError:
        return
    with f:
        size = os.fstat(f.fileno()).st_size
        if size <= LOG_CAP:
            return
        f.seek(size - _HALF)
        tail = f.read(_HALF)
        f.truncate(_HALF)
        f.seek(_HALF)
        f.write(cut_notice(size - 2 * _HALF) + tail)
