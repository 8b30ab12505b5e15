"""Every name ``from treadle.weave import *`` gives has a running example in docs/weaver.md."""

from __future__ import annotations

from tests._docs_names import names_in_examples

import treadle.weave


def test_star_import_gives_exactly_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from treadle.weave import *", namespace)  # noqa: S102 - the star import is the subject
    assert set(namespace) - {"__builtins__"} == set(treadle.weave.__all__)


def test_every_public_name_has_a_running_example_in_the_docs() -> None:
    missing = set(treadle.weave.__all__) - names_in_examples("weaver.md")
    assert not missing, f"docs/weaver.md has no example using {sorted(missing)}"
