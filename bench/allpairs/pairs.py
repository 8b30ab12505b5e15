"""The All-Pairs benchmark as a Weaver script (allpairs.md §4.3).

    treadle weave -o W [--native never] bench/allpairs/pairs.py SET_LIST F [OUTPUT]

compares every item of SET_LIST with every other through F (an executable,
default bitdiff.sh beside this script) into OUTPUT (default matrix.txt).
"""

import os

from treadle.weave import AllPairs, CurrentScript, FileList

arguments = CurrentScript().arguments
if not arguments:
    raise SystemExit("usage: pairs.py SET_LIST [F] [OUTPUT]")
items = FileList(arguments[0])
function = arguments[1] if len(arguments) > 1 else os.path.join(os.path.dirname(
    os.path.abspath(__file__)), "bitdiff.sh")
AllPairs(function, items, items, outputs=arguments[2] if len(arguments) > 2 else "matrix.txt")
