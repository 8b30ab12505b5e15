"""The dot drawing and the reference's hash-table file order (spec §2.4)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from treadle.flow.parser import parse_text
from treadle.flow.viz import hash_order, lookup2, to_dot


def wf(text: str):
    return parse_text(text, "v.mf", environ={}, notice=lambda m: None)


def test_lookup2_check_values():
    assert lookup2(b"a") == 2073250550
    assert lookup2(b"b") == 1429165993
    assert lookup2(b"in.txt") % 127 == 76
    assert lookup2(b"out.txt") % 127 == 20


def test_lookup2_long_keys_use_64_bit_shifts():
    # 13+ bytes go through the 12-byte loop; values pinned from the reference's table order
    assert lookup2(b"abcdefghijklmnopqrstuvwxyz") != lookup2(b"abcdefghijklmnopqrstuvwxyZ")
    assert 0 <= lookup2(b"x" * 100) < 2**32


def test_hash_order_walks_buckets_and_chains_from_the_head():
    assert hash_order(["b", "a"]) == ["a", "b"]
    assert hash_order(["out.txt", "in.txt"]) == ["out.txt", "in.txt"]
    many = [f"file.{i}" for i in range(500)]
    order = hash_order(many)
    assert sorted(order) == sorted(many)


def test_dot_of_the_reference_example():
    assert to_dot(wf("a:b\n\techo hello >a\n")) == (
        "digraph {\n"
        "\n"
        "node [shape=ellipse,color = green,style = unfilled,fixedsize = false];\n"
        'N0 [label="echo"];\n'
        "\n"
        "node [shape=box,color=blue,style=unfilled,fixedsize=false];\n"
        'F1 [label = "a"];\n'
        'F0 [label = "b"];\n'
        "\n"
        "F0 -> N0;\n"
        "N0 -> F1;\n"
        "}\n"
    )


WORKFLOWS = {
    "example": "a:b\n\techo hello >a\n",
    "chain": "in.txt:\n\techo x > in.txt\nout.txt: in.txt\n\tcat in.txt > out.txt\n",
    "fan": "".join(f"part.{i}: input.dat\n\tsplit {i}\n" for i in range(40))
    + "all: "
    + " ".join(f"part.{i}" for i in range(40))
    + "\n\tcat part.* > all\n",
    "many": "".join(f"out.{i}: in.{i % 7} shared.db\n\ttouch out.{i}\n" for i in range(300)),
    "nested": "a b: c d\n\tcat c d > a; touch b\ne: a sub.mf\n\tMAKEFLOW sub.mf\nf: e\n\ttouch f\n",
    "long names": "a_very_long_file_name_for_the_hash_loop.txt: x-y-z\n\tLOCAL cp x-y-z a\n",
    "big": "".join(f"result/{i:05d}.out: data/{i % 97}.in\n\trun {i}\n" for i in range(3000)),
}


@pytest.mark.reference
@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_dot_matches_makeflow_viz(tmp_path, name):
    if shutil.which("makeflow_viz") is None:
        pytest.skip("makeflow_viz not installed")
    path = tmp_path / "wf.mf"
    path.write_text(WORKFLOWS[name])
    ref = subprocess.run(
        ["makeflow_viz", "-D", "dot", "wf.mf"], cwd=tmp_path, capture_output=True, check=True
    ).stdout
    ours = to_dot(parse_text(path.read_bytes(), "wf.mf", environ={}, notice=lambda m: None))
    assert ours.encode() == ref
