"""Weaver: the Python workflow compiler (see docs/weaver.md).

``from treadle.weave import *`` gives a plain Python program the names that
``treadle weave`` pre-loads into scripts.
"""

from treadle.weave.abstractions import Abstraction, Iterate, Map, MapReduce, Merge
from treadle.weave.context import CurrentAbstraction, Script
from treadle.weave.datasets import Dataset, FileList, Glob, Query
from treadle.weave.filters import And, Not, Or
from treadle.weave.functions import (
    Function,
    ParseFunction,
    Pipeline,
    PythonFunction,
    ScriptFunction,
    ShellFunction,
    SimpleFunction,
)
from treadle.weave.nest import CurrentNest, CurrentScript, Define, Export, File, MakeFile, Nest
from treadle.weave.options import CurrentOptions, Options
from treadle.weave.pairs import AllPairs, Wavefront
from treadle.weave.sql import MySQLDataset, SQLDataSet, SQLDataset

__all__ = [
    "AllPairs", "Abstraction", "And", "CurrentAbstraction", "CurrentNest", "CurrentOptions",
    "CurrentScript", "Dataset", "Define", "Export", "File", "FileList", "Function", "Glob",
    "Iterate", "MakeFile", "Map", "MapReduce", "Merge", "MySQLDataset", "Nest", "Not",
    "Options", "Or", "ParseFunction", "Pipeline", "PythonFunction", "Query", "SQLDataSet",
    "SQLDataset", "Script", "ScriptFunction", "ShellFunction", "SimpleFunction", "Wavefront",
]
