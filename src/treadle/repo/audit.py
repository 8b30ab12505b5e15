"""The audit trail: one ``audit_events`` row per finding of fsck or a failed read (docs/repo.md).

Findings go to the database as well as to stderr so that a repository's history of
corruption and repairs can be queried later, like any other table.
"""

from __future__ import annotations

from sqlalchemy import Connection

from treadle.repo import schema
from treadle.repo.db import utcnow

# "unreachable" (a store that could not be checked) and "draining" (a draining store that
# could not be emptied yet) are recorded too, so the history shows why a run left work undone.
KINDS = ("missing", "corrupt", "suspect", "repaired", "orphan", "underreplicated", "lost", "invariant",
         "unreachable", "draining")


def record(conn: Connection, kind: str, *, fileid: int | None = None, checksum: str | None = None,
           storeid: int | None = None, detail: str = "") -> None:
    """Insert one event of ``kind`` (one of KINDS) in the caller's transaction."""
    if kind not in KINDS:
        raise ValueError(f"unknown audit event kind {kind!r}")
    conn.execute(schema.audit_events.insert().values(
        time=utcnow(), kind=kind, fileid=fileid, checksum=checksum, storeid=storeid, detail=detail))
