"""The suite's one way to wait for something a process or thread does on its own time.

A test that sleeps a fixed time and then checks is either slow (the sleep is long
enough for a loaded machine) or flaky (it is not). ``wait_for`` polls instead and
fails with a message naming what never happened. For a negative check ("X did not
happen"), wait for a positive sign that the system has processed the input that
could have caused X, then assert that X is absent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, what: str = "condition",
             interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns a true value, and return that value.

    Fails the test (``AssertionError``) after ``timeout`` seconds; the predicate is
    tried once more at the deadline, so a slow last poll does not turn into a failure.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def processes_in(directory: str | os.PathLike[str]) -> list[int]:
    """Running processes, other than this test's, whose working directory is ``directory``.

    Everything a run started there (its jobs, their children, a watchdog) has that
    working directory, so "none left" is the positive sign that a killed run is over.
    """
    target = os.path.realpath(directory)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue  # gone meanwhile, or not ours to inspect
        if cwd == target and alive(int(entry)):
            found.append(int(entry))
    return found
