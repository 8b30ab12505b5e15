"""The suite's one way to run a ``treadle`` command in the test's own process."""

from __future__ import annotations

import pytest

from treadle.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``treadle ARGV`` as a user would, in-process: (exit status, stdout, stderr)."""
    try:
        main(list(argv))
        status = 0
    except SystemExit as e:
        status = int(e.code or 0)
    out, err = capsys.readouterr()
    return status, out, err
