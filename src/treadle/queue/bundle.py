"""Write the worker as one zipapp for nodes without treadle (see docs/workqueue.md).

The archive holds exactly the worker's modules (standard library only) under their
package names, plus stub ``__init__`` files, so ``python3 treadle-worker.pyz HOST
PORT`` runs the same code as ``treadle worker HOST PORT``.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

from treadle import __version__

# the modules the worker needs, all standard-library only
WORKER_MODULES = ("protocol", "sandbox", "spawn", "task_runner", "worker", "worker_link", "worker_options")

_MAIN = '''\
"""treadle worker, shipped alone: python3 treadle-worker.pyz HOST PORT."""
import sys

from treadle.queue.worker import main

sys.exit(main(prog="treadle-worker.pyz"))
'''

_PACKAGE_INIT = '"""treadle (worker bundle: only the worker\'s modules)."""\n__version__ = {!r}\n'
_QUEUE_INIT = '"""Work Queue worker and protocol (worker bundle)."""\n'


def write_bundle(target: str | os.PathLike) -> Path:
    """Write the zipapp to ``target`` (made executable) and return its path."""
    target = Path(target)
    source = Path(__file__).resolve().parent
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("__main__.py", _MAIN)
            z.writestr("treadle/__init__.py", _PACKAGE_INIT.format(__version__))
            z.writestr("treadle/queue/__init__.py", _QUEUE_INIT)
            for name in WORKER_MODULES:
                z.write(source / f"{name}.py", f"treadle/queue/{name}.py")
    mode = os.stat(tmp).st_mode
    os.chmod(tmp, mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.replace(tmp, target)
    return target
