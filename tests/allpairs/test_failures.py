"""A failing F names the pair and its stderr; retries recover a transient failure;
batched contract violations are clear errors (spec §4.4)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from treadle.allpairs import allpairs
from treadle.errors import AllPairsError

from .conftest import TREADLE, make_script, write_list


def test_failing_pair_is_named_with_stderr(items, tmp_path):
    f = make_script(tmp_path / "f.sh", '#!/bin/sh\ncase "$2" in *item003*) echo "boom on $2" >&2; '
                    'exit 3;; esac\necho 1\n')
    listed = write_list(tmp_path / "set.list", items)
    run = subprocess.run(TREADLE + ["allpairs", listed, listed, f, "-o", "o.txt", "-x", "2",
                                    "-y", "2", "-c", "1", "-t", "0.01", "-r", "2"],
                         capture_output=True, text=True)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert "pair (0, 3)" in line and "item000.bin" in line and "item003.bin" in line
    assert "exit status 3" in line and "boom on" in line
    # the rest of the matrix is kept in the state for a later run
    state = Path("o.txt.apstate")
    assert (state / "journal").read_text().count("done") >= 1
    assert not Path("o.txt").exists()


def test_callable_exception_names_pair(items, tmp_path):
    fns = tmp_path / "bad.py"
    fns.write_text("def f(a, b):\n    if b.endswith('item002.bin'):\n        raise ValueError('no')\n"
                   "    return 0\n")
    with pytest.raises(AllPairsError, match=r"pair \(0, 2\).*ValueError: no"):
        allpairs(items, items, f"{fns}:f", comparison_time=0.001, quiet=True, retries=1)


def test_transient_failure_recovered_by_retries(items, tmp_path):
    marker = tmp_path / "failed-once"
    f = make_script(tmp_path / "flaky.sh",
                    f'#!/bin/sh\nif [ ! -e "{marker}" ]; then touch "{marker}"; exit 1; fi\necho ok\n')
    result = allpairs(items, items, f, comparison_time=0.01, block=3, cores=1, quiet=True,
                      output="o.txt")
    assert marker.exists()
    assert result.stats["retries"] == 1
    assert Path("o.txt").read_text().count("\tok\n") == 36


def test_batched_executable_and_its_contract(items, tmp_path):
    good = make_script(tmp_path / "good.sh",
                       '#!/bin/sh\nwhile read a; do while read b; do printf "%s\\t%s\\t%s\\n" '
                       '"$a" "$b" "$(cat "$a" "$b" | wc -c)"; done < "$2"; done < "$1"\n')
    result = allpairs(items, items, good, batched=True, block=4, quiet=True)
    sizes = [Path(p).stat().st_size for p in items]
    assert result.text(1, 3) == str(sizes[1] + sizes[3])
    missing = make_script(tmp_path / "missing.sh", '#!/bin/sh\nhead -n 1 "$1" | while read a; do '
                          'printf "%s\\t%s\\t1\\n" "$a" "$(head -n 1 "$2")"; done\n')
    with pytest.raises(AllPairsError, match="printed no result for"):
        allpairs(items, items, missing, batched=True, block=2, quiet=True, retries=1)
    extra = make_script(tmp_path / "extra.sh", '#!/bin/sh\n' + '\n'.join(
        'while read a; do while read b; do printf "%s\\t%s\\t1\\n" "$a" "$b"; done < "$2"; '
        'done < "$1"' for _ in range(2)) + '\n')
    with pytest.raises(AllPairsError, match="extra or duplicated pair"):
        allpairs(items, items, extra, batched=True, block=2, quiet=True, retries=1)


def test_batched_callable_contract(items, size_diff_py):
    with pytest.raises(AllPairsError, match=r"batched F returned .* for a 2x2 block"):
        allpairs(items, items, f"{size_diff_py}:short", block=2, quiet=True, retries=1)


def test_user_mistakes_are_one_line(items, tmp_path):
    listed = write_list(tmp_path / "set.list", items)
    bad_list = write_list(tmp_path / "bad.list", items + ["no/such/file"])
    cases = [
        ([listed, listed, "no-such-program"], "neither an executable"),
        ([bad_list, listed, "BITWISE"], "'no/such/file' of set"),
        ([listed, listed, "BITWISE", "--half"], "--half needs --symmetric"),
        ([listed, listed, f"{tmp_path}/nothere.py:f"], "neither an executable"),
    ]
    for argv, message in cases:
        run = subprocess.run(TREADLE + ["allpairs", *argv], capture_output=True, text=True)
        assert run.returncode == 1, argv
        assert message in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_lambda_refused(items):
    with pytest.raises(AllPairsError, match="lambda"):
        allpairs(items, items, lambda a, b: 0, quiet=True)
