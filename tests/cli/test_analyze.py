"""``treadle analyze``: the reference's makeflow_analyze command lines (spec §2.4)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def treadle(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "treadle", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


WORKFLOW = "a b: c d\n\tcat c d > a; touch b\ne: a sub.mf\n\tMAKEFLOW sub.mf\nf: e\n\ttouch f\n"


def test_syntax_ok(tmp_path):
    (tmp_path / "wf.mf").write_text(WORKFLOW)
    done = treadle("analyze", "-k", "wf.mf", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "wf.mf: Syntax OK.\n")


def test_default_dagfile_is_makeflow(tmp_path):
    (tmp_path / "Makeflow").write_text("x:\n\ttouch x\n")
    done = treadle("analyze", "--syntax-check", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "./Makeflow: Syntax OK.\n")


def test_syntax_error_is_one_line_with_place_and_exit_1(tmp_path):
    (tmp_path / "bad.mf").write_text("X=1\na:\n\techo $(Y)\n")
    done = treadle("analyze", "-k", "bad.mf", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == "bad.mf:3:7: error: Variable Y has not yet been defined\n"


def test_cycle_fails_the_syntax_check(tmp_path):
    (tmp_path / "c.mf").write_text("x: x\n\ttouch x\n")
    done = treadle("analyze", "-k", "c.mf", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == "c.mf:1:1: error: dependency cycle: x -> (rule at line 1) -> x\n"


def test_inputs_and_outputs(tmp_path):
    (tmp_path / "wf.mf").write_text(WORKFLOW)
    assert treadle("analyze", "-I", "wf.mf", cwd=tmp_path).stdout == "d\nc\nsub.mf\n"
    assert treadle("analyze", "-O", "wf.mf", cwd=tmp_path).stdout == "f\na\nb\ne\n"


@pytest.mark.reference
@pytest.mark.parametrize("flag", ["-I", "-O"])
def test_inputs_and_outputs_in_the_reference_order(tmp_path, flag):
    if shutil.which("makeflow_analyze") is None:
        pytest.skip("makeflow_analyze not installed")
    text = "".join(f"res/{i}.out tmp.{i}: data/{i % 53}.in lib.so\n\trun {i}\n" for i in range(400))
    (tmp_path / "wf.mf").write_text(text)
    ref = subprocess.run(
        ["makeflow_analyze", flag, "wf.mf"], cwd=tmp_path, capture_output=True, text=True
    )
    assert treadle("analyze", flag, "wf.mf", cwd=tmp_path).stdout == ref.stdout


@pytest.mark.reference
@pytest.mark.parametrize("flag", ["-I", "-O"])
def test_json_inputs_and_outputs_match_the_reference(tmp_path, flag):
    if shutil.which("makeflow_analyze") is None:
        pytest.skip("makeflow_analyze not installed")
    rules = [
        {"command": f"run {i}", "inputs": [f"in.{i % 13}", f"lib.{i}"], "outputs": [f"res.{i}"]}
        for i in range(150)
    ]
    (tmp_path / "wf.json").write_text(json.dumps({"rules": rules}))
    ref = subprocess.run(
        ["makeflow_analyze", "--json", flag, "wf.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert ref.returncode == 0
    assert treadle("analyze", "--json", flag, "wf.json", cwd=tmp_path).stdout == ref.stdout


JX_WORKFLOW = """{
  "define": {"N": 12, "pre": "out"},
  "rules": [
    {"command": format("echo %d > %s.%d", i, pre, i),
     "outputs": [pre + "." + i, format("%s-%d.dat", pre, i * 7)], "inputs": ["in." + (i % 3)]}
    for i in range(N) if i % 2 == 0
  ] + [{"command": "cat", "outputs": ["final"],
        "inputs": [join(["a", "b"], "_"), basename("/x/y/z.txt"), dirname("/x/y/z.txt") + "/w",
                   "n" + (7 / 2) + "." + (-7 % 3) + "." + len([1, 2, 3])]}]
}
"""


@pytest.mark.reference
@pytest.mark.parametrize("flag", ["-I", "-O"])
def test_jx_evaluation_matches_the_reference(tmp_path, flag):
    if shutil.which("makeflow_analyze") is None:
        pytest.skip("makeflow_analyze not installed")
    (tmp_path / "wf.jx").write_text(JX_WORKFLOW)
    ref = subprocess.run(
        ["makeflow_analyze", "--jx", flag, "wf.jx"], cwd=tmp_path, capture_output=True, text=True
    )
    assert ref.returncode == 0
    assert treadle("analyze", "--jx", flag, "wf.jx", cwd=tmp_path).stdout == ref.stdout


def test_jx_options(tmp_path):
    (tmp_path / "wf.jx").write_text(
        '{"rules": [{"command": "touch out." + i, "outputs": ["out." + i]} for i in range(N)]}'
    )
    (tmp_path / "args.json").write_text('{"N": 2}')
    done = treadle("analyze", "-O", "--jx", "--jx-args", "args.json", "wf.jx", cwd=tmp_path)
    assert sorted(done.stdout.split()) == ["out.0", "out.1"]
    done = treadle("analyze", "-O", "--jx", "--jx-define", "N=3", "wf.jx", cwd=tmp_path)
    assert sorted(done.stdout.split()) == ["out.0", "out.1", "out.2"]
    done = treadle("analyze", "-k", "--jx", "wf.jx", cwd=tmp_path)
    assert done.returncode == 1 and "N: undefined symbol" in done.stderr


def test_sub_workflow_args_files_are_removed_at_exit(tmp_path):
    (tmp_path / "wf.jx").write_text('{"rules": [{"workflow": "s.jx", "args": {"n": 1}}]}')
    done = treadle("analyze", "-k", "--jx", "wf.jx", cwd=tmp_path)
    assert done.returncode == 0
    assert not (tmp_path / "s.jx.0.args").exists()


def test_json_option(tmp_path):
    (tmp_path / "wf.json").write_text('{"rules": [{"command": "true", "outputs": ["x"]}]}')
    done = treadle("analyze", "-k", "--json", "wf.json", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "wf.json: Syntax OK.\n")


def test_bundle_is_refused(tmp_path):
    (tmp_path / "wf.mf").write_text(WORKFLOW)
    done = treadle("analyze", "-b", "out", "wf.mf", cwd=tmp_path)
    assert done.returncode == 1 and "not supported" in done.stderr
    assert not (tmp_path / "out").exists()


def test_missing_file(tmp_path):
    done = treadle("analyze", "-k", "absent.mf", cwd=tmp_path)
    assert done.returncode == 1 and "absent.mf" in done.stderr
    assert "Traceback" not in done.stderr


def test_help_has_an_example(tmp_path):
    done = treadle("analyze", "--help", cwd=tmp_path)
    assert done.returncode == 0 and "treadle analyze -k" in done.stdout


@pytest.mark.reference
def test_reference_command_line_for_the_test_suite(tmp_path):
    """The reference's tests call `makeflow_analyze -k syntax/FILE`; so can ours."""
    if shutil.which("makeflow_analyze") is None:
        pytest.skip("makeflow_analyze not installed")
    (tmp_path / "syntax").mkdir()
    (tmp_path / "syntax" / "ok.makeflow").write_text(WORKFLOW)
    ref = subprocess.run(
        ["makeflow_analyze", "-k", "syntax/ok.makeflow"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    ours = treadle("analyze", "-k", "syntax/ok.makeflow", cwd=tmp_path)
    assert (ours.returncode, ours.stdout) == (ref.returncode, ref.stdout)
