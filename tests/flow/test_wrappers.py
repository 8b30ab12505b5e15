"""treadle.flow.wrappers: the pure substitutions of --wrapper, %% and the container wrappers."""

from __future__ import annotations

import subprocess

from hypothesis import given
from hypothesis import strategies as st

from treadle.flow.options import RunOptions
from treadle.flow.wrappers import (
    Wrapping,
    docker_wrapper,
    expand_percents,
    nest,
    shell_quote,
    singularity_wrapper,
    split_rename,
    wrap_command,
)

text = st.text(alphabet=st.sampled_from("ab {}[]%$\"'\\` "), max_size=20)


def test_braces_take_the_command_as_it_is():
    assert wrap_command("echo hi > x", "time {} 2>t") == "time echo hi > x 2>t"


def test_without_braces_the_command_is_appended():
    assert wrap_command("echo hi", "nice -n 5") == "nice -n 5 echo hi"


def test_square_brackets_quote_the_command_for_the_shell():
    assert wrap_command('echo "$X"', "sh -c []") == 'sh -c "echo \\"\\$X\\""'


def test_wrappers_nest_first_innermost():
    assert nest("cmd", ["A {}", "B {}"]) == "B A cmd"


@given(text, text, text)
def test_only_the_first_braces_are_replaced(command, head, tail):
    wrapper = head.replace("{}", "") + "{}" + tail
    got = wrap_command(command, wrapper)
    i = wrapper.index("{}")
    inner = shell_quote(command) if "[]" in wrapper else command
    assert got == wrapper[:i] + inner + wrapper[i + 2 :]


@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=30))
def test_quoted_command_reads_back_as_one_word(command):
    out = subprocess.run(["sh", "-c", "printf %s " + shell_quote(command)], capture_output=True,
                         check=True).stdout
    assert out == command.encode()


@given(st.text(alphabet=st.sampled_from("a%b"), max_size=30), st.integers(0, 10**6))
def test_percents_expand_like_the_reference(text_, rule_id):
    got = expand_percents(text_, str(rule_id))
    # The reference's scan: %%%% is a literal %%, %% the id, anything else itself.
    want, i = [], 0
    while i < len(text_):
        if text_[i : i + 4] == "%%%%":
            want.append("%%")
            i += 4
        elif text_[i : i + 2] == "%%":
            want.append(str(rule_id))
            i += 2
        else:
            want.append(text_[i])
            i += 1
    assert got == "".join(want)
    if "%%" not in text_:
        assert got == text_


def test_percents_examples():
    assert expand_percents("log.%%.txt", "7") == "log.7.txt"
    assert expand_percents("a%%%%b", "7") == "a%%b"
    assert expand_percents("100%", "7") == "100%"


def test_rename():
    assert split_rename("w.sh") == ("w.sh", "w.sh")
    assert split_rename("tools/w.sh=w.sh") == ("tools/w.sh", "w.sh")


def test_docker_command_line():
    w = docker_wrapper("podman", "localhost/box:1", "--network=none", ["B", "A"])
    assert w == ('podman run --rm -v "$PWD:$PWD" -w "$PWD" -e B -e A --network=none localhost/box:1 '
                 "/bin/sh -c []")


def test_singularity_command_line():
    assert singularity_wrapper("singularity", "img.sif", "--cleanenv") == (
        'singularity exec --home "$PWD" --bind "$PWD" --pwd "$PWD" --cleanenv img.sif /bin/sh -c []')


def test_wrapping_puts_the_container_innermost_and_expands_percents():
    w = Wrapping(commands=("./w.sh %% {}",), inputs=("w.sh", "in.%%=in"), outputs=("m.%%",),
                 docker=("docker", "img", ""))
    assert w.command(3, "echo $X", {"X": "1"}) == (
        './w.sh 3 docker run --rm -v "$PWD:$PWD" -w "$PWD" -e X img /bin/sh -c "echo \\$X"')
    assert w.input_files(3) == [("w.sh", "w.sh"), ("in.3", "in")]
    assert w.output_files(3) == [("m.3", "m.3")]


def test_no_options_no_wrapping():
    assert not Wrapping.from_options(RunOptions())
    assert Wrapping.from_options(RunOptions(wrappers=("x",)))


def test_container_image_is_part_of_the_identity_and_a_wrapper_is_not():
    from treadle.flow import journal as jr
    from treadle.flow.model import Rule

    rules = [Rule(0, ("x",), (), "touch x")]
    plain = jr.rule_identities(rules)
    assert jr.rule_identities(rules, "") == plain
    assert jr.rule_identities(rules, "docker:a") != plain
    assert jr.rule_identities(rules, "docker:a") != jr.rule_identities(rules, "docker:b")
    assert RunOptions(wrappers=("x",)).container_image == ""
    assert RunOptions(docker="a").container_image == "docker:a"
