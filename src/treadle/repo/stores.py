"""Stores: the places that hold objects, and the ``stores`` rows that list them (docs/repo.md).

Every kind of store offers the small :class:`Store` interface; a directory store is
:class:`DirStore` here, an HTTP store is ``treadle.repo.remote.HttpStore`` (which imports this
module, so ``RepoContext.open_store`` is what picks the kind for a row). A store that
cannot be reached raises StoreUnreachable, never "absent": a missing directory is not empty.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tomllib
import uuid as uuidlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from sqlalchemy import Connection, RowMapping, func, select

from treadle.errors import RepoDataError, RepoError, StoreUnreachable
from treadle.repo import schema
from treadle.repo.checksums import ALGORITHM, CHUNK, Hasher, format_checksum, object_relpath
from treadle.repo.config import toml_value, write_text_atomically
from treadle.repo.disk import start_writeback

STORE_STATES = ("up", "readonly", "draining", "down")
REPLICA_STATES = ("CREATING", "OK", "SUSPECT", "BAD", "DELETING")
STORE_TOML = "store.toml"
OBJECT_MODE = 0o444
_STORE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class StoreRow:
    """One row of ``stores``."""

    storeid: int
    name: str
    url: str
    host: str
    state: str
    priority: int
    uuid: str


@dataclass(frozen=True)
class CheckStat:
    """What ``stat`` said of a replica when it was last verified, to notice a later change."""

    size: int
    mtime_ns: int
    inode: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> CheckStat | None:
        if text is None:
            return None
        data = json.loads(text)
        return cls(size=int(data["size"]), mtime_ns=int(data["mtime_ns"]), inode=int(data["inode"]))

    @classmethod
    def of(cls, st: os.stat_result) -> CheckStat:
        return cls(size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino)


@dataclass(frozen=True)
class Written:
    """The outcome of writing an object into a store; ``created`` is False when it was there."""

    checksum: str
    size: int
    stat: CheckStat | None
    created: bool


class Store(Protocol):
    """What every kind of store offers (docs/repo.md, "Stores")."""

    name: str

    def check(self) -> None:
        """Raise StoreUnreachable unless the store is there and belongs to this repository."""

    def size_of(self, checksum: str) -> int | None:
        """The object's size, None when absent; StoreUnreachable when the store cannot tell."""

    def open_read(self, checksum: str) -> BinaryIO:
        """The object's raw, unverified bytes; FileNotFoundError when absent."""

    def put_file(self, src: Path, checksum: str, size: int) -> Written:
        """Copy ``src`` in, verified against ``checksum``; a no-op when the object is there."""

    def delete(self, checksum: str) -> None:
        """Remove the object (nothing when it is absent)."""


def read_store_toml(root: Path) -> dict[str, str]:
    """The ``store.toml`` of the store at ``root``: its ``uuid`` and its ``repository``'s uuid."""
    data = tomllib.loads((root / STORE_TOML).read_text(encoding="utf-8"))
    return {key: str(data.get(key, "")) for key in ("uuid", "repository")}


@dataclass(frozen=True)
class Staged:
    """An object's bytes in a dir store's ``tmp/``: neither durable nor named yet (see ``stage``)."""

    temp: Path
    checksum: str
    size: int
    stat: CheckStat  # a rename keeps size, inode and mtime: this is the named object's too


def stage(src: BinaryIO, stores: Sequence[DirStore]) -> tuple[str, int, list[Staged | str]]:
    """Write ``src`` into ``tmp/`` of every store from ONE read, hashing it once, without fsync.

    Returns the checksum, the size and, for each store in order, its :class:`Staged` temp file
    or why it did not take the bytes (a store that fails does not stop the others). An
    OSError from reading ``src`` removes every temp file and propagates. The caller makes the
    temp files durable before naming them (``DirStore.place``), and the names durable before
    any row refers to them: docs/repo.md, "Ingest".
    """
    outs: dict[int, tuple[Path, BinaryIO]] = {}
    outcomes: list[Staged | str] = ["" for _ in stores]
    for i, store in enumerate(stores):
        try:
            store._ensure_checked()
            temp = store._temp_path()
            outs[i] = (temp, open(temp, "wb"))
        except (OSError, StoreUnreachable) as e:
            outcomes[i] = str(e)
    hasher = Hasher()
    try:
        while chunk := src.read(CHUNK):
            hasher.update(chunk)
            for i, (_, out) in list(outs.items()):
                try:
                    out.write(chunk)
                except OSError as e:
                    outcomes[i] = str(e)
                    _drop_temp(*outs.pop(i))
        for i, (temp, out) in list(outs.items()):
            try:
                out.flush()
                start_writeback(out.fileno())
                os.fchmod(out.fileno(), OBJECT_MODE)
                written = CheckStat.of(os.fstat(out.fileno()))
                out.close()
            except OSError as e:
                outcomes[i] = str(e)
                _drop_temp(*outs.pop(i))
                continue
            outcomes[i] = Staged(temp, hasher.checksum, hasher.size, written)
            del outs[i]
    except BaseException:
        for temp, out in outs.values():
            _drop_temp(temp, out)
        for outcome in outcomes:
            if isinstance(outcome, Staged):
                outcome.temp.unlink(missing_ok=True)
        raise
    return hasher.checksum, hasher.size, outcomes


def _drop_temp(temp: Path, out: BinaryIO) -> None:
    try:
        out.close()
    except OSError:
        pass  # the write that failed already said why
    temp.unlink(missing_ok=True)


def fsync_files(paths: Iterable[Path]) -> None:
    """fsync each file (where syncfs is missing): its bytes survive a power loss."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_dirs(paths: Iterable[Path]) -> None:
    """fsync each directory once, so the renames into it survive a power loss."""
    for path in set(paths):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class DirStore:
    """A store in a directory: a local disk, a second disk or NFS.

    Objects are written to ``tmp/`` while hashed, fsynced, made read-only and renamed into
    ``objects/``, so a name never holds wrong bytes. Temp files are named ``<pid>.<random>.tmp``
    so that fsck can tell a dead writer's from a running one's.
    """

    def __init__(self, name: str, root: Path, repo_uuid: str) -> None:
        self.name = name
        self.root = Path(root)
        self.repo_uuid = repo_uuid
        self.dirs_touched: set[Path] = set()
        self._dirs_seen: set[Path] = set()  # object directories known to exist: no is_dir per write
        self._checked = False

    def __repr__(self) -> str:
        return f"DirStore({self.name!r}, {str(self.root)!r})"

    def object_path(self, checksum: str) -> Path:
        return self.root / object_relpath(checksum)

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    def init_layout(self) -> str:
        """Make ``objects/ tmp/ quarantine/`` and ``store.toml``; return the store's uuid.

        A directory that is already this repository's store keeps its uuid; another
        repository's is refused.
        """
        for sub in (Path("objects", ALGORITHM), Path("tmp"), Path("quarantine")):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if (self.root / STORE_TOML).exists():
            identity = read_store_toml(self.root)
            if identity["repository"] != self.repo_uuid:
                raise RepoError(f"store {self.name}: {self.root} is a store of another repository "
                                f"({identity['repository']})")
            return identity["uuid"]
        store_uuid = str(uuidlib.uuid4())
        write_text_atomically(self.root / STORE_TOML, f"uuid = {toml_value(store_uuid)}\n"
                                                      f"repository = {toml_value(self.repo_uuid)}\n")
        self._checked = True
        return store_uuid

    def check(self) -> None:
        if not self.root.is_dir():
            raise StoreUnreachable(f"store {self.name} is unreachable: {self.root} is missing")
        try:
            identity = read_store_toml(self.root)
        except FileNotFoundError:
            raise StoreUnreachable(f"store {self.name} is unreachable: no {STORE_TOML} in "
                                   f"{self.root}") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise StoreUnreachable(f"store {self.name} is unreachable: {e}") from None
        if identity["repository"] != self.repo_uuid:
            raise StoreUnreachable(f"store {self.name} is unreachable: {self.root} belongs to "
                                   f"another repository ({identity['repository']})")
        self._checked = True

    def _ensure_checked(self) -> None:
        # store.toml is read once; a missing object re-checks, so a store that vanished
        # later is still reported unreachable rather than empty
        if not self._checked:
            self.check()

    def size_of(self, checksum: str) -> int | None:
        self._ensure_checked()
        try:
            return os.stat(self.object_path(checksum)).st_size
        except FileNotFoundError:
            self.check()
            return None
        except OSError as e:
            raise StoreUnreachable(f"store {self.name}: {e}") from None

    def open_read(self, checksum: str) -> BinaryIO:
        self._ensure_checked()
        try:
            return open(self.object_path(checksum), "rb")
        except FileNotFoundError:
            self.check()
            raise
        except OSError as e:
            raise StoreUnreachable(f"store {self.name}: {e}") from None

    def stat_of(self, checksum: str) -> CheckStat:
        return CheckStat.of(os.stat(self.object_path(checksum)))

    def _temp_path(self) -> Path:
        return self.tmp_dir / f"{os.getpid()}.{secrets.token_hex(8)}.tmp"

    def write_stream(self, src: BinaryIO, *, expected: str | None = None) -> Written:
        """Copy ``src`` into the store while hashing it; RepoDataError when ``expected`` differs.

        The parent directories are not fsynced here: the caller does it once per batch
        through ``fsync_dirs(self.dirs_touched)``.
        """
        self._ensure_checked()
        temp = self._temp_path()
        hasher = Hasher()
        try:
            with open(temp, "wb") as out:
                while chunk := src.read(CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fchmod(out.fileno(), OBJECT_MODE)
                os.fsync(out.fileno())
            if expected is not None and hasher.checksum != expected:
                raise RepoDataError(f"store {self.name}: the bytes written hash to {hasher.checksum}, "
                                    f"not {expected}")
            return self._place(temp, hasher.checksum, hasher.size, None)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def place(self, staged: Staged) -> Written:
        """Name a staged object, which the caller has made durable (``sync_filesystem``).

        The rename is not durable until the caller syncs again (or fsyncs ``dirs_touched``).
        """
        try:
            return self._place(staged.temp, staged.checksum, staged.size, staged.stat)
        except BaseException:
            staged.temp.unlink(missing_ok=True)
            raise

    def _place(self, temp: Path, checksum: str, size: int, stat: CheckStat | None) -> Written:
        final = self.object_path(checksum)
        existing = None
        if not self._make_parents(final.parent):  # a directory made just now holds no object
            try:
                existing = os.stat(final)
            except FileNotFoundError:
                pass
        if existing is not None and existing.st_size == size:
            temp.unlink()
            # perhaps renamed here by a run that died before the directory was made durable
            self.dirs_touched.add(final.parent)
            return Written(checksum, size, CheckStat.of(existing), created=False)
        if existing is not None:
            # a wrong-sized object under this name is corrupt: keep it for inspection, as fsck would
            self.quarantine(checksum)
        try:
            os.rename(temp, final)
        except FileNotFoundError:
            # a directory this store saw was removed since (fsck --gc prunes empty ones)
            self._dirs_seen.clear()
            self._make_parents(final.parent)
            os.rename(temp, final)
        self.dirs_touched.add(final.parent)
        return Written(checksum, size, stat or self.stat_of(checksum), created=True)

    def _make_parents(self, directory: Path) -> bool:
        """Make ``directory`` and its missing parents; True when this call made ``directory``."""
        if directory in self._dirs_seen:
            return False
        made = False
        if not directory.is_dir():
            self._make_parents(directory.parent)
            try:
                directory.mkdir()
            except FileExistsError:
                pass  # another thread made it
            else:
                made = True
                self.dirs_touched.add(directory.parent)
        self._dirs_seen.add(directory)
        return made

    def put_file(self, src: Path, checksum: str, size: int) -> Written:
        present = self.size_of(checksum)
        if present == size:
            return Written(checksum, size, self.stat_of(checksum), created=False)
        with open(src, "rb") as f:
            written = self.write_stream(f, expected=checksum)
        return written

    def delete(self, checksum: str) -> None:
        self._ensure_checked()
        try:
            self.object_path(checksum).unlink()
        except FileNotFoundError:
            self.check()
            return
        self.dirs_touched.add(self.object_path(checksum).parent)

    def quarantine(self, checksum: str) -> Path:
        """Move a bad object to ``quarantine/`` (never deleted: someone may want to look at it)."""
        source = self.object_path(checksum)
        target = self.quarantine_dir / source.name
        n = 0
        while target.exists():
            n += 1
            target = self.quarantine_dir / f"{source.name}.{n}"
        self.quarantine_dir.mkdir(exist_ok=True)
        shutil.move(source, target)
        self.dirs_touched.update({source.parent, target.parent})
        return target

    def iter_objects(self) -> Iterator[tuple[str, Path]]:
        """(checksum, path) of every object file in the store."""
        self._ensure_checked()
        top = self.root / "objects" / ALGORITHM
        for first in _subdirs(top):
            for second in _subdirs(first):
                with os.scandir(second) as entries:
                    for entry in entries:
                        if entry.is_file() and _HEX64.fullmatch(entry.name):
                            yield format_checksum(entry.name), Path(entry.path)

    def iter_temp(self) -> Iterator[Path]:
        """Every file in ``tmp/``: writes in progress, or left by a writer that died."""
        self._ensure_checked()
        with os.scandir(self.tmp_dir) as entries:
            yield from (Path(e.path) for e in entries if e.is_file())


def _subdirs(path: Path) -> list[Path]:
    with os.scandir(path) as entries:
        return sorted(Path(e.path) for e in entries if e.is_dir())


def _row(m: RowMapping) -> StoreRow:
    return StoreRow(storeid=m["storeid"], name=m["name"], url=m["url"], host=m["host"],
                    state=m["state"], priority=m["priority"], uuid=m["uuid"])


def load_stores(conn: Connection) -> list[StoreRow]:
    """Every store of the repository, by storeid."""
    rows = conn.execute(select(schema.stores).order_by(schema.stores.c.storeid)).mappings()
    return [_row(r) for r in rows]


def ok_replica_counts(conn: Connection) -> dict[int, int]:
    """storeid -> how many OK replicas the store holds (stores with none are left out)."""
    replicas = schema.replicas
    rows = conn.execute(select(replicas.c.storeid, func.count()).where(replicas.c.state == "OK")
                        .group_by(replicas.c.storeid))
    return {int(storeid): int(n) for storeid, n in rows}


def _dir_path(url: str, repo_dir: Path) -> Path:
    path = Path(url[len("dir:"):])
    return path if path.is_absolute() else Path(repo_dir) / path


def dir_store(row: StoreRow, repo_dir: Path, repo_uuid: str) -> DirStore:
    """The DirStore of a ``dir:PATH`` row (``RepoContext.open_store`` opens every kind)."""
    if not row.url.startswith("dir:"):
        raise RepoError(f"store {row.name}: {row.url!r} is not a dir: store")
    return DirStore(row.name, _dir_path(row.url, repo_dir), repo_uuid)


def check_store_url(url: str) -> str:
    """Return ``url`` if it names a store (``dir:PATH`` or ``http(s)://HOST:PORT``), else RepoError."""
    if url.startswith("dir:") and len(url) > len("dir:"):
        return url
    if re.fullmatch(r"https?://[^/\s:]+(:[0-9]{1,5})?/?", url):
        return url
    raise RepoError(f"bad store URL {url!r}: use dir:PATH or http(s)://HOST:PORT")


def check_store_name(name: str) -> str:
    """Return ``name`` if it may name a store, else RepoError."""
    if _STORE_NAME.fullmatch(name) is None:
        raise RepoError(f"bad store name {name!r}: use letters, digits, '_', '.' and '-'")
    return name


def add_store(conn: Connection, repo_dir: Path, repo_uuid: str, name: str, url: str, *,
              host: str = "", priority: int = 0) -> StoreRow:
    """Add a store row; a dir store's directory gets its layout and ``store.toml`` first."""
    check_store_name(name)
    check_store_url(url)
    if any(row.name == name for row in load_stores(conn)):
        raise RepoError(f"there is already a store named {name}")
    store_uuid = ""
    if url.startswith("dir:"):
        store_uuid = DirStore(name, _dir_path(url, repo_dir), repo_uuid).init_layout()
    conn.execute(schema.stores.insert().values(name=name, url=url, host=host, state="up",
                                               priority=priority, uuid=store_uuid))
    return _store_named(conn, name)


def _store_named(conn: Connection, name: str) -> StoreRow:
    for row in load_stores(conn):
        if row.name == name:
            return row
    names = ", ".join(r.name for r in load_stores(conn))
    raise RepoError(f"no store named {name} (stores: {names or 'none'})")


def set_store(conn: Connection, name: str, *, state: str | None = None,
              priority: int | None = None) -> StoreRow:
    """Change a store's state and/or priority; RepoError for an unknown store or state."""
    _store_named(conn, name)
    values: dict[str, object] = {}
    if state is not None:
        if state not in STORE_STATES:
            raise RepoError(f"bad store state {state!r} (states: {', '.join(STORE_STATES)})")
        values["state"] = state
    if priority is not None:
        values["priority"] = priority
    if values:
        conn.execute(schema.stores.update().where(schema.stores.c.name == name).values(**values))
    return _store_named(conn, name)
