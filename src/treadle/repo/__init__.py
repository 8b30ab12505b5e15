"""The data repository: a metadata database beside stores of checksummed, replicated files.

``Repository`` is the Python API (docs/repo.md); ``treadle repo`` is the command line.
"""

from treadle.repo.repository import Repository

__all__ = ["Repository"]
