"""The Make form of the Makeflow language, rule by rule of spec §1."""

from __future__ import annotations

import pytest

from treadle.errors import ParseError
from treadle.flow.model import DEFAULT_CATEGORY
from treadle.flow.parser import parse_file, parse_text


def parse(text: str, environ: dict[str, str] | None = None, notices: list[str] | None = None):
    sink = notices.append if notices is not None else (lambda m: None)
    return parse_text(text, "t.mf", environ=environ or {}, notice=sink)


def error(text: str, environ: dict[str, str] | None = None) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(text, environ)
    return info.value


def commands(text: str, environ: dict[str, str] | None = None) -> list[str]:
    return [r.command for r in parse(text, environ).rules]


# ---------------------------------------------------------------- §1.1 lines


def test_rules_get_ids_in_file_order_and_keep_their_line():
    wf = parse("# c\n\na: b\n\tcat b > a\n\nc:\n\n# between\n\ttouch c\n")
    assert [r.id for r in wf.rules] == [0, 1]
    assert [(r.targets, r.sources) for r in wf.rules] == [(("a",), ("b",)), (("c",), ())]
    assert [r.line for r in wf.rules] == [3, 6]
    assert all(r.file == "t.mf" for r in wf.rules)


def test_empty_lists_on_either_side_of_the_colon():
    wf = parse("x:\n\ttouch x\n: /bin/ls\n\tls\n")
    assert (wf.rules[0].targets, wf.rules[0].sources) == (("x",), ())
    assert (wf.rules[1].targets, wf.rules[1].sources) == ((), ("/bin/ls",))


def test_at_sign_lines_are_assignments():
    assert commands("@X=1\na:\n\techo $(X)\n") == ["echo 1"]


def test_indented_assignment_is_a_command():
    assert commands("a:\n X=1\n") == ["X=1"]


def test_colon_equals_is_a_rule_header_without_command():
    assert error("X := 1\n").message == "Rule does not have a command"


@pytest.mark.parametrize("line", ["X ?= 1", "X -= 1", "X != 1"])
def test_other_operators_are_unknown(line):
    assert error(line + "\n").message == "Unknown variable operator"


def test_unrecognized_keyword():
    e = error("include other.mf\n")
    assert (e.message, e.line, e.column) == ("Unrecognized keyword: include", 1, 1)


def test_assignment_without_a_name():
    assert "variable name" in error("=bad\n").message


# ------------------------------------------------------------------ §1.2 rules


def test_second_command_line_is_an_error():
    e = error("a:\n\techo 1\n\techo 2\n")
    assert "COMMAND" in e.message and e.line == 3


def test_header_without_command():
    e = error("a:\nb:\n\ttouch b\n")
    assert "FILES" in e.message
    assert error("a: b\n").message == "Rule does not have a command"


def test_missing_final_newline_is_accepted():
    assert commands("a:\n\techo hi") == ["echo hi"]


def test_target_defined_twice():
    e = error("a:\n\tx\n\nb a:\n\ty\n")
    assert e.message == "a is defined multiple times at t.mf:1 and t.mf:4"
    assert (e.file, e.line) == ("t.mf", 4)


# ---------------------------------------------------------------- §1.3 names


@pytest.mark.parametrize("name", ["a-b", "a--b", "a----b", "x-"])
def test_dashes_inside_names(name):
    wf = parse(f"{name}: src-1\n\ttouch {name}\n")
    assert wf.rules[0].targets == (name,)
    assert wf.rules[0].sources == ("src-1",)


def test_name_may_not_start_with_a_dash():
    e = error("a: -b\n\tx\n")
    assert (e.message, e.line, e.column) == ("Expecting a filename.", 1, 4)


def test_quoted_and_escaped_names():
    wf = parse("N=3\n'a b' \"c $(N)\" d\\ e f\\:g: '$(N)'\n\tx\n")
    assert wf.rules[0].targets == ("a b", "c 3", "d e", "f:g")
    assert wf.rules[0].sources == ("$(N)",)


def test_unbalanced_quote():
    assert error('a: "b\n\tx\n').message == 'Missing closing "'


def test_substituted_names_are_read_again_as_a_list():
    wf = parse('F=a b\nV="H I" "J K"\nN=3\n$(F) $V x.$(N) ${N}y: \n\tx\n')
    assert wf.rules[0].targets == ("a", "b", "H I", "J K", "x.3", "3y")


def test_remote_renaming():
    wf = parse("out->o: in -> i other\n\tx\n")
    r = wf.rules[0]
    assert r.targets == ("out",) and r.sources == ("in", "other")
    assert r.remote_names == {"out": "o", "in": "i"}
    assert r.remote_name("in") == "i" and r.remote_name("other") == "other"
    assert parse("a: b\n\tx\n").rules[0].remote_names is None


def test_header_continued_over_lines():
    wf = parse("a b \\\n  c: d \\\n e\n\tx\n")
    assert wf.rules[0].targets == ("a", "b", "c")
    assert wf.rules[0].sources == ("d", "e")


def test_header_comment():
    assert parse("a: b # c: d\n\tx\n").rules[0].sources == ("b",)


# ------------------------------------------------------------- §1.4 commands


def test_blanks_collapse_and_a_trailing_run_stays_one_space():
    assert commands("a:\n\techo a    b\t\tc  \n") == ["echo a b c "]


def test_single_quotes_are_verbatim():
    assert commands("X=1\na:\n\techo '$(X)  y # z'\n") == ["echo '$(X)  y # z'"]


def test_double_quotes_expand_and_unescape():
    cmds = commands('X=v\na:\n\techo "a  \\"b\\" $(X) \\t#"\n')
    assert cmds == ['echo "a  "b" v \t#"']


def test_backslash_outside_quotes():
    assert commands("a:\n\techo \\$HOME a\\ b \\\\x\n") == ["echo $HOME a b \\x"]


def test_unquoted_hash_is_a_comment():
    assert commands("a:\n\techo hi # a comment\n") == ["echo hi "]


def test_redirections_are_tokens():
    assert commands("a:\n\tcat<in>out\n") == ["cat<in>out"]
    rule = parse("a:\n\tLOCAL < in > out sed s/a/b/\n").rules[0]
    assert rule.local and rule.command == "< in > out sed s/a/b/"


def test_continued_command():
    assert commands("a:\n\techo a \\\n     b\n") == ["echo a   b"]
    assert commands("a:\n\techo c\\\n    d\n") == ["echo c  d"]


def test_substituted_command_text_is_read_again():
    cmds = commands("V=x   'y  z'\nQ=\"p  q\"\na:\n\techo $(V) $(Q)\n")
    assert cmds == ["echo x 'y  z' \"p  q\""]


@pytest.mark.parametrize("cmd", ["echo $$", "echo $ x", "echo $(", "echo $(X"])
def test_bad_substitutions(cmd):
    e = error(f"X=1\na:\n\t{cmd}\n")
    assert e.line == 3


def test_modifiers_are_removed_and_become_flags():
    wf = parse("L=LOCAL\na:\n\tLOCAL echo 1\nb:\n\t$(L) echo 2\nc:\n\techo LOCAL\n")
    assert [(r.command, r.local) for r in wf.rules] == [
        ("echo 1", True),
        ("echo 2", True),
        ("echo LOCAL", False),
    ]


@pytest.mark.parametrize("value", ["true", "yes", "2"])
def test_batch_local_marks_rules_local(value):
    wf = parse(f"BATCH_LOCAL={value}\na:\n\techo\n")
    assert wf.rules[0].local


def test_batch_local_false_values():
    wf = parse("BATCH_LOCAL=0\na:\n\techo\nb:\nBATCH_LOCAL=no\n\techo\n")
    assert not any(r.local for r in wf.rules)


def test_only_modifiers_is_an_empty_command():
    assert error("a:\n\tLOCAL\n").message == "Command is empty."


def test_blank_and_comment_only_command_lines_are_ignored():
    assert commands("a:\n\t   \n\t# note\n\techo\n") == ["echo"]


# ------------------------------------------------------------- §1.5 variables


def test_the_five_scope_values():
    text = (
        "V = 1\n"
        "a:\nV=0\n\techo $(V)\n"
        "b:\n\techo $(V)\n"
        "c:\nV+=2\n\techo $(V)\n"
        "d:\nW+=0\n\techo $(W)\n"
        "e:\nW+=1\n\techo $(W)\n"
    )
    assert commands(text) == ["echo 0", "echo 1", "echo 1 2", "echo 0", "echo 1"]


def test_indented_at_lines_before_the_command_are_rule_local():
    text = "V = 1\na:\n    @V = 0\n    echo $V\nb:\n\t@V+=2\n\techo $V\nc:\n\techo $V\n"
    assert commands(text) == ["echo 0", "echo 1 2", "echo 1"]


def test_values_keep_trailing_blanks_and_quotes_and_expand_at_once():
    wf = parse('A=x\nB=$(A)3  \nA=y\nQ="a b"\nt:\n\techo [$(B)] $(Q)\n')
    assert wf.rules[0].command == 'echo [x3 ] "a b"'


def test_comment_after_a_value():
    assert commands("X=1 # note\nY=2\na:\n\techo $(X)$(Y)\n") == ["echo 12"]


def test_global_append():
    assert commands("X+=a\nX+=b\nt:\n\techo $(X)\n") == ["echo a b"]


def test_later_assignment_never_changes_an_earlier_rule():
    assert commands("X=1\na:\n\techo $(X)\nX=2\nb:\n\techo $(X)\n") == ["echo 1", "echo 2"]


def test_process_environment_is_the_last_fallback():
    assert commands("a:\n\techo $(HOME)\n", environ={"HOME": "/h"}) == ["echo /h"]


def test_undefined_variable():
    e = error("a:\n\techo $(NOPE)\n")
    assert (e.message, e.line) == ("Variable NOPE has not yet been defined", 2)


def test_category_quirk_and_its_message():
    text = "CATEGORY=a\nX=1\nCATEGORY=b\nt:\n\techo $(X)\n"
    e = error(text)
    assert e.message.startswith("Variable X has not yet been defined")
    assert "category a" in e.message and "line 2" in e.message
    assert commands(text, environ={"X": "env"}) == ["echo env"]
    assert commands("X=0\n" + text) == ["echo 0"]


def test_category_tables_are_seen_by_their_rules():
    wf = parse("CATEGORY=a\nX=1\nt:\n\techo $(X)\n")
    assert wf.rules[0].command == "echo 1" and wf.rules[0].category == "a"


# ---------------------------------------------------- §1.6 environment, export


def test_exports_take_the_value_at_each_rule():
    wf = parse("export A\nA=1\na:\n\tx\nA=2\nb:\n\tx\nc:\n\tx\n")
    envs = [dict(r.environment) for r in wf.rules]
    assert envs == [{"A": "1"}, {"A": "2"}, {"A": "2"}]
    assert wf.rules[1].environment is wf.rules[2].environment


def test_export_forms_and_environment_fallback():
    wf = parse('export A C\nexport B=2\nexport D="x y"\nA=1\na:\n\tx\n', environ={"C": "c"})
    assert dict(wf.rules[0].environment) == {"A": "1", "B": "2", "C": "c", "D": '"x y"'}


def test_export_after_the_rule_still_applies():
    wf = parse("A=1\na:\n\tx\nexport A\n")
    assert dict(wf.rules[0].environment) == {"A": "1"}


def test_resource_variables_are_always_exported():
    wf = parse("CORES=2\nCATEGORY=big\nMEMORY=100\na:\n\tx\nb:\nGPUS=1\n\tx\n")
    assert dict(wf.rules[0].environment) == {"CORES": "2", "CATEGORY": "big", "MEMORY": "100"}
    assert dict(wf.rules[1].environment)["GPUS"] == "1"


def test_rules_with_the_same_environment_share_one_mapping():
    wf = parse("".join(f"o{i}:\n\ttouch o{i}\n" for i in range(50)))
    assert len({id(r.environment) for r in wf.rules}) == 1
    wf = parse("export X\nX=1\n" + "".join(f"o{i}:\n\ttouch o{i}\n" for i in range(50)))
    assert len({id(r.environment) for r in wf.rules}) == 1


# ------------------------------------------------- §1.7 categories, resources


def test_last_value_in_a_category_wins_with_a_notice():
    notices: list[str] = []
    wf = parse("CORES=1\na:\n\tx\nCORES=4\nb:\n\tx\n", notices=notices)
    assert wf.categories[DEFAULT_CATEGORY].resources.cores == 4
    assert wf.resources_of(wf.rules[0]).cores == 4
    assert dict(wf.rules[0].environment)["CORES"] == "1"
    assert notices == [
        "CORES defined multiple times for category default. Using last defined value"
    ]


def test_rule_local_resources_override():
    wf = parse("CATEGORY=big\nMEMORY=2G\nDISK=10\na:\nCORES=3\n\tx\nb:\n\tx\n")
    a, b = wf.rules
    assert a.resources.declared() == {"cores": 3}
    assert b.resources.declared() == {}
    assert wf.categories["big"].resources.declared() == {"memory": 2 * 1024**3, "disk": 10}
    assert wf.resources_of(a).declared() == {"cores": 3, "memory": 2 * 1024**3, "disk": 10}


def test_rule_local_category():
    wf = parse("a:\nCATEGORY=solo\n\tx\nb:\n\tx\n")
    assert [r.category for r in wf.rules] == ["solo", DEFAULT_CATEGORY]


def test_symbol_switches_without_defining_category():
    wf = parse("SYMBOL=s\na:\n\tx\n")
    assert wf.rules[0].category == "s"
    assert "CATEGORY" not in wf.rules[0].environment


def test_batch_options_global_and_rule_local():
    wf = parse("BATCH_OPTIONS=-q fast\na:\n\tx\nb:\nBATCH_OPTIONS=-q slow\n\tx\n")
    assert [r.batch_options for r in wf.rules] == ["-q fast", "-q slow"]


def test_inputs_and_outputs_lists():
    wf = parse("MAKEFLOW_INPUTS=a 'b c'\nMAKEFLOW_OUTPUTS=\"d e\" f\nx:\n\tx\n")
    assert wf.inputs == ("a", "b c")
    assert wf.outputs == ("d e", "f")
    assert parse("x:\n\tx\n").inputs is None


def test_non_numeric_resource():
    assert error("CORES=lots\n").message == "Expected numeric value for CORES"
    assert error("CORES=" + "9" * 400 + "\n").message == "Expected numeric value for CORES"
    assert error(".MAKEFLOW MEMORY " + "9" * 5000 + "\n").message.startswith("Expected numeric")


def test_deprecated_gc_lists_give_a_notice():
    notices: list[str] = []
    parse("GC_PRESERVE_LIST=a\n", notices=notices)
    assert any("GC_PRESERVE_LIST" in n for n in notices)


# ------------------------------------------------------------ §1.8 directives


def test_makeflow_directives():
    wf = parse(
        ".MAKEFLOW CATEGORY big\n.MAKEFLOW CORES 2\n.MAKEFLOW MEMORY 1K\n.MAKEFLOW GPUS 1\n"
        ".MAKEFLOW WALL_TIME 60\n.MAKEFLOW MPI_PROCESSES 4\n.MAKEFLOW MODE MIN_WASTE\n"
        "a:\n.MAKEFLOW DISK 5\n\tx\n"
    )
    big = wf.categories["big"]
    assert big.resources.declared() == {
        "cores": 2,
        "memory": 1024,
        "gpus": 1,
        "wall_time": 60,
        "mpi_processes": 4,
    }
    assert big.mode == "MIN_WASTE"
    assert wf.rules[0].category == "big"
    assert wf.rules[0].resources.declared() == {"disk": 5}


def test_size_directive():
    assert parse(".SIZE data.bin 2M\n").sizes == {"data.bin": 2 * 1024**2}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (".MAKEFLOW CORES many\n", "Expected numeric value for CORES"),
        (".MAKEFLOW SIZE 1\n", "Unsupported .MAKEFLOW directive"),
        (".MAKEFLOW NOT_DIRECTIVE 1\n", "Unsupported .MAKEFLOW directive"),
        (".MARKER x\n", "Unknown directive"),
        (".MAKEFLOW MODE FAST\n", "MAX_THROUGHPUT"),
    ],
)
def test_bad_directives(text, message):
    assert message in error(text).message


def test_umbrella_is_accepted_with_a_notice():
    notices: list[str] = []
    parse(".UMBRELLA SPEC u.json\n", notices=notices)
    assert notices and "UMBRELLA" in notices[0]


# ------------------------------------------------------- §1.9 sub-workflows


def test_sub_workflow_rule():
    r = parse("out: in\n\tMAKEFLOW sub.mf\n").rules[0]
    assert r.workflow == "sub.mf" and r.command == "sub.mf"
    assert r.sources == ("in", "sub.mf")


def test_sub_workflow_takes_only_a_file_name():
    e = error("out:\n\tMAKEFLOW sub.mf extra\n")
    assert e.message == "MAKEFLOW specification does not end with a newline"


# -------------------------------------------------------- input, CRLF, files


def test_crlf_is_dropped_with_one_warning():
    notices: list[str] = []
    wf = parse("X=1\r\na: b\r\n\techo $(X)\r\n", notices=notices)
    assert wf.rules[0].command == "echo 1" and wf.rules[0].sources == ("b",)
    assert len(notices) == 1 and "CRLF" in notices[0]


def test_bytes_survive_decoding(tmp_path):
    p = tmp_path / "wf.mf"
    p.write_bytes(b"caf\xe9:\n\ttouch caf\xe9\n")
    wf = parse_file(str(p), environ={})
    assert wf.rules[0].targets[0].encode("utf-8", "surrogateescape") == b"caf\xe9"


def test_parse_file_reports_a_missing_file(tmp_path):
    with pytest.raises(ParseError):
        parse_file(str(tmp_path / "absent.mf"))


def test_errors_name_file_line_and_column():
    e = error("a:\n\techo $(X\n")
    assert str(e).startswith("t.mf:2:")
    assert ": error: " in str(e)


def test_values_and_lines_cannot_grow_without_bound():
    doubling = "A=x\n" + "A=$(A)$(A)\n" * 40
    assert "too long" in error(doubling).message
    big = "A=" + "x" * (1 << 20) + "\na:\n\techo" + " $(A)" * 100 + "\n"
    assert "too long" in error(big).message


def test_runaway_self_substitution_is_stopped():
    e = error("X=\\$(X)\na:\n\techo $(X)\n")
    assert "nested" in e.message
