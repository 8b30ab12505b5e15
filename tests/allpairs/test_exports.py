"""``treadle.allpairs`` exports what docs/allpairs.md shows, and each name is the documented object."""

from __future__ import annotations

import subprocess
import sys

from tests._docs_names import names_in_examples

import treadle.allpairs


def test_wavefront_is_the_function_not_the_submodule() -> None:
    # Loading the lazy name imports the submodule of the same name, which used to
    # rebind treadle.allpairs.wavefront to the module: a user got "module is not callable".
    code = ("from treadle.allpairs import wavefront, allpairs\n"
            "import treadle.allpairs\n"
            "print(callable(wavefront), callable(treadle.allpairs.wavefront), callable(allpairs))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True True True"


def test_every_public_name_has_a_running_example_in_the_docs() -> None:
    missing = set(treadle.allpairs.__all__) - names_in_examples("allpairs.md")
    assert not missing, f"docs/allpairs.md has no example using {sorted(missing)}"
