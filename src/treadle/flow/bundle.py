"""Bundles: a copy of a workflow and every input it names, laid out so that it runs elsewhere unchanged.

``treadle run -b DIR`` (the reference's ``makeflow_analyze -b``) writes the
workflow file, its JX argument files and each original input (a file or a
whole directory) into DIR at the same path relative to the workflow's
directory, so ``treadle run`` in DIR reads exactly the names the workflow
uses. Names that point outside the workflow's directory (absolute, or through
``..``) cannot keep their meaning in a bundle and are refused, before anything
is written.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

from treadle.errors import UsageError
from treadle.flow.model import Workflow


def bundle_workflow(wf: Workflow, dagfile: str, extra: Sequence[str], bundle_dir: str) -> list[str]:
    """Copy ``dagfile``, the files in ``extra`` and every original input of ``wf`` into ``bundle_dir``.

    Names are relative to the current directory (the workflow's, after ``-X``).
    Returns the names copied, in order; a missing input or a name outside the
    workflow's directory raises :class:`UsageError` and nothing is written.
    """
    here = os.path.realpath(".")
    target = os.path.realpath(bundle_dir)
    if target == here:
        raise UsageError(f"cannot bundle into {bundle_dir}: it is the workflow's own directory")
    names = [dagfile, *extra, *wf.original_inputs()]
    for name in names:
        check_bundle_name(name, here, target)
    os.makedirs(target, exist_ok=True)
    copied: list[str] = []
    for name in dict.fromkeys(names):
        dest = os.path.join(target, os.path.normpath(name))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.isdir(name):
            shutil.copytree(name, dest, symlinks=False, dirs_exist_ok=True)
        else:
            shutil.copy2(name, dest)
        copied.append(name)
    return copied


def check_bundle_name(name: str, here: str, target: str) -> None:
    """Refuse a name the bundle cannot hold at the same relative path."""
    if os.path.isabs(name) or os.path.normpath(name).split(os.sep)[0] == os.pardir:
        raise UsageError(f"cannot copy {name}: it is outside the workflow's directory "
                         "(use a name relative to it)")
    if not os.path.lexists(name):
        raise UsageError(f"cannot copy {name}: no such file or directory")
    real = os.path.realpath(name)
    if real == target or real.startswith(target + os.sep) or target.startswith(real + os.sep):
        raise UsageError(f"cannot copy {name}: it contains or is inside the bundle directory")
