"""``treadle.queue`` lists its public API, and docs/workqueue.md shows every name of it."""

from __future__ import annotations

import subprocess
import sys

from tests._docs_names import names_in_examples

import treadle.queue


def test_every_public_name_is_importable_and_listed() -> None:
    namespace: dict[str, object] = {}
    exec("from treadle.queue import *", namespace)  # noqa: S102 - the star import is the subject
    assert set(treadle.queue.__all__) <= set(namespace)
    assert set(treadle.queue.__all__) <= set(dir(treadle.queue))
    assert {"Manager", "Task", "Result", "TaskState"} <= set(treadle.queue.__all__)


def test_every_public_name_has_a_running_example_in_the_docs() -> None:
    missing = set(treadle.queue.__all__) - names_in_examples("workqueue.md")
    assert not missing, f"docs/workqueue.md has no example using {sorted(missing)}"


def test_dir_lists_the_api_before_first_use_and_the_worker_still_travels_alone() -> None:
    code = ("import sys, treadle.queue, treadle.queue.worker\n"
            "missing = set(treadle.queue.__all__) - set(dir(treadle.queue))\n"
            "print(sorted(missing), 'treadle.queue.manager' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[0] == "[] False"
