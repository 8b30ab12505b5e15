"""``Repository``: the Python API of a data repository, what ``treadle repo`` wraps (docs/repo.md).

One object per open repository, so a program queries, reads, copies out and ingests without
handling database engines, stores or the writer lock itself. Each method is one call into the
module that does the work (query, fetch, ingest, fsck), the same code the commands run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from treadle.errors import RepoError
from treadle.repo import fetch
from treadle.repo.context import RepoContext, init_repository, open_context
from treadle.repo.fsck import FsckResult, fsck
from treadle.repo.ingest import IngestResult, ingest
from treadle.repo.query import Condition, count_rows, select_rows


class Repository:
    """An open repository: ``Repository.open(path)`` to read, ``write=True`` to ingest or repair.

    Readers take no lock and see whole ingest batches only; a writer holds the repository's
    writer lock until :meth:`close` (or the end of a ``with`` block).
    """

    def __init__(self, context: RepoContext) -> None:
        self.context = context

    @classmethod
    def open(cls, path: str | Path, *, write: bool = False, wait: float = 0.0) -> Repository:
        """Open the repository at ``path``; ``write`` takes the writer lock, waiting up to ``wait`` s."""
        return cls(open_context(path, write=write, wait=wait))

    @classmethod
    def init(cls, path: str | Path, *, database: str | None = None,
             stores: Sequence[tuple[str, str]] = (), replicas: int = 1, min_replicas: int = 1,
             mount: str = "/bxgrid") -> Repository:
        """Make a new repository in an empty directory; it comes back open for writing."""
        return cls(init_repository(path, database=database, stores=stores, replicas=replicas,
                                   min_replicas=min_replicas, mount=mount))

    @property
    def path(self) -> Path:
        return self.context.dir

    def query(self, table: str, *, where: Iterable[Condition] = (),
              columns: Sequence[str] | None = None, order: str | None = None,
              limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Rows of ``table`` meeting every ``(column, operator, value)``, each with fileid and vpath.

        Operators: ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``~`` (LIKE), ``is`` and
        ``is not`` (with ``None``).
        """
        return select_rows(self.context, table, where=where, columns=columns, order=order,
                           limit=limit)

    def count(self, table: str, *, where: Iterable[Condition] = ()) -> int:
        """How many rows :meth:`query` would give, counted by the database."""
        return count_rows(self.context, table, where=where)

    def open_file(self, fileid: int, *, timeout: float = 60.0) -> BinaryIO:
        """File ``fileid`` for reading, hashed as it is read: RepoDataError at EOF on a mismatch."""
        return fetch.open_verified(self.context, fetch.file_info(self.context, fileid).checksum,
                                   timeout=timeout)

    def get(self, fileids: Iterable[int], directory: str | Path, *,
            timeout: float = 60.0) -> list[Path]:
        """Verified copies of ``fileids`` as ``directory/<fileid>.<ext>``; their paths."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        return [fetch.save_file(self.context, fileid, target, timeout=timeout) for fileid in fileids]

    def ingest(self, source: str | Path | None, *, table: str, **options: Any) -> IngestResult:
        """Add files and their rows from a manifest (or ``files=[...]``); see docs/repo.md, "Ingest".

        The keyword options are those of ``treadle repo ingest`` (``key``, ``links``,
        ``types``, ``jobs``, ``files``, ``name_regex``, ``replace``, ``skip_existing``,
        ``skip_bad``, ``index``). Needs ``Repository.open(..., write=True)``.
        """
        self._need_writer("ingest")
        return ingest(self.context, source, table=table, **options)

    def fsck(self, **options: Any) -> FsckResult:
        """Check the replicas (``full``, ``repair``, ``gc``, ``max_time``, ``sample``, ``store``)."""
        if options.get("repair") or options.get("gc"):
            self._need_writer("fsck --repair/--gc")
        return fsck(self.context, **options)

    def _need_writer(self, what: str) -> None:
        if self.context.lock is None:
            raise RepoError(f"{what} needs the writer lock: Repository.open({str(self.path)!r}, "
                            "write=True)")

    def close(self) -> None:
        """Release the writer lock, if held, and the database connections."""
        self.context.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
