"""The transaction log: record formats, name escaping, identities, locking, reading."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from treadle.errors import WorkflowError
from treadle.flow import journal as jr
from treadle.flow.model import Rule


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from(["\udc80", "\udcff", " ", "%", "\t"]), min_size=1))
def test_escaped_names_are_one_field_and_come_back(name):
    field = jr.escape_name(name)
    assert field and not any(c.isspace() for c in field)
    assert jr.unescape_name(field) == name


def test_ordinary_names_are_unchanged():
    for name in ("out.1", "dir/file-a_b.txt", "a:b", "x=y"):
        assert jr.escape_name(name) == name
    assert jr.escape_name("a b%c") == "a%20b%25c"


def _rule(i, targets, command):
    return Rule(i, tuple(targets), (), command)


def test_identity_depends_on_targets_and_command_only():
    a = jr.rule_identities([_rule(0, ["x"], "touch x"), _rule(1, ["y"], "touch y")])
    b = jr.rule_identities([_rule(0, ["new"], "touch new"), _rule(1, ["y"], "touch y"), _rule(2, ["x"], "touch x")])
    assert a[0] == b[2] and a[1] == b[1]
    assert len(a[0]) == 16 and int(a[0], 16) >= 0
    assert jr.rule_identities([_rule(0, ["x"], "touch  x")])[0] != a[0]
    assert jr.rule_identities([_rule(0, ["y", "x"], "c")]) == jr.rule_identities([_rule(0, ["x", "y"], "c")])
    twins = jr.rule_identities([_rule(0, [], "echo"), _rule(1, [], "echo")])
    assert twins[0] != twins[1]


def test_identity_is_the_specified_hash():
    import hashlib

    expected = hashlib.sha256(b"a\0b\0\x01cmd\x000").hexdigest()[:16]
    assert jr.rule_identities([_rule(0, ["b", "a"], "cmd")]) == [expected]


def test_records_have_the_reference_layout(tmp_path):
    path = str(tmp_path / "w.makeflowlog")
    j = jr.Journal(path)
    j.open()
    j.start_segment("w.batchlog", "9.9")
    j.file_record("a b", jr.F_EXPECT, 1073741824)
    j.rule_record(3, "0123456789abcdef", jr.RUNNING, 4242, [1, 1, 0, 0, 0])
    j.rule_record(3, "0123456789abcdef", jr.COMPLETE, 4242, [1, 0, 1, 0, 0])
    j.marker("COMPLETED")
    j.close()
    lines = (tmp_path / "w.makeflowlog").read_text().splitlines()
    assert lines[0].startswith("# FILE ") and lines[0].endswith(" w.batchlog 1 0")
    assert lines[1].split()[:2] == ["#", "STARTED"] and lines[2].split()[1] == "TREADLE"
    assert lines[3].split()[3:] == ["a%20b", "1", "1073741824"]
    assert lines[4].split()[1] == "RULE" and lines[4].split()[3:] == ["3", "0123456789abcdef"]
    rule = lines[5].split()
    assert len(rule) == 10 and all(x.isdigit() for x in rule) and rule[1:] == ["3", "1", "4242", "1", "1", "0", "0", "0", "2"]
    assert lines[6].split()[1:4] == ["3", "2", "4242"]  # no second # RULE in the segment
    assert lines[7].startswith("# COMPLETED ")
    for line in lines:
        if line.startswith("#"):
            assert line.split()[2].isdigit()  # the reference monitor parses "# LABEL TS"


def test_reading_back(tmp_path):
    path = tmp_path / "l"
    path.write_text(
        "# FILE 10 x%20y 2 5\n# STARTED 11\n# TREADLE 11 0.1\n# RULE 12 0 abc\n"
        "12 0 2 77 0 0 1 0 0 1\n# SOURCE 13 in 3 99 -\n# SOMETHING else\n# COMPLETED 14\n"
    )
    recs = list(jr.read_log(str(path)))
    assert recs == [
        ("F", 10, "x y", 2, 5), ("START", 11), ("T",), ("B", 0, "abc"),
        ("R", 12, 0, 2, 77, 1), ("S", 13, "in", 3, 99, None), ("END", "COMPLETED"),
    ]


def test_corruption_is_fatal_but_a_cut_last_line_is_not(tmp_path):
    path = tmp_path / "l"
    path.write_text("12 0 2 77 0 0 1 0 0 1\ngarbage here\n12 0 2 77 0 0 1 0 0 1\n")
    with pytest.raises(WorkflowError, match="appears to be corrupted on line 2"):
        list(jr.read_log(str(path)))
    path.write_text("12 0 2 77 0 0 1 0 0 1\n13 0 2 7")
    assert len(list(jr.read_log(str(path)))) == 2
    path.write_text("12 0 2 77 0 0 1 0 0 1\n13 0 x")
    assert len(list(jr.read_log(str(path)))) == 1


def test_appending_after_a_cut_line_starts_a_new_line(tmp_path):
    path = tmp_path / "l"
    path.write_text("12 0 2 77 0 0 1 0 0 1\n13 0 2")
    j = jr.Journal(str(path))
    j.open()
    j.marker("COMPLETED")
    j.close()
    assert path.read_text().splitlines()[-1].startswith("# COMPLETED")


def test_the_log_is_locked_while_in_use(tmp_path):
    path = str(tmp_path / "l")
    first = jr.Journal(path)
    first.open()
    try:
        with pytest.raises(WorkflowError, match="in use by another"):
            jr.Journal(path).open()
    finally:
        first.close()
    second = jr.Journal(path)
    second.open()
    second.close()
    assert not list(tmp_path.iterdir())[1:]  # no lock file next to the log
