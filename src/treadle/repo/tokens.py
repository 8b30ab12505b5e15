"""Bearer tokens of the HTTP service, kept in ``tokens.toml`` as SHA-256 digests (docs/repo.md).

A token is shown once, when made; the file holds only its digest, so a copy of the file (a
backup, a shared disk) gives no one access. The service compares digests with
:func:`hmac.compare_digest` and rereads the file when its mtime changes, so ``token revoke``
takes effect without a restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from treadle.errors import RepoError
from treadle.repo.config import write_text_atomically

TOKENS_NAME = "tokens.toml"
PREFIX = "trt_"
SCOPES = ("read", "write")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class TokenEntry:
    """One token as stored: never the token itself, only its digest."""

    name: str
    scope: str
    sha256: str
    created: datetime
    expires: datetime | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now >= self.expires


def tokens_path(directory: Path) -> Path:
    """``tokens.toml`` of a repository or of a bare store directory."""
    return Path(directory) / TOKENS_NAME


def digest(token: str) -> str:
    """The hex SHA-256 of a token, what tokens.toml keeps."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def _time(value: object, path: Path, field: str) -> datetime:
    if not isinstance(value, str):
        raise RepoError(f"{path}: {field} must be a quoted date")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise RepoError(f"{path}: {field} {value!r} is not an ISO date") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def load_tokens(path: Path) -> list[TokenEntry]:
    """The tokens of a ``tokens.toml``; none when the file does not exist."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise RepoError(f"{path}: cannot read: {e}") from None
    entries = []
    for table in data.get("token", []):
        try:
            name, scope, sha = table["name"], table["scope"], table["sha256"]
        except (KeyError, TypeError):
            raise RepoError(f"{path}: a [[token]] needs name, scope and sha256") from None
        if scope not in SCOPES or not isinstance(name, str) or not isinstance(sha, str):
            raise RepoError(f"{path}: token {name!r}: bad scope or fields")
        expires = table.get("expires")
        entries.append(TokenEntry(name, scope, sha, _time(table.get("created"), path, "created"),
                                  None if expires is None else _time(expires, path, "expires")))
    return entries


def _write_tokens(path: Path, entries: list[TokenEntry]) -> None:
    """Write ``tokens.toml`` atomically with mode 0600 from its first byte.

    Names match ``[A-Za-z0-9_.-]``, digests are hex and dates ISO, so every value is a plain
    quoted TOML string with nothing to escape.
    """
    lines = []
    for entry in entries:
        lines += ["[[token]]", f'name = "{entry.name}"', f'scope = "{entry.scope}"',
                  f'sha256 = "{entry.sha256}"', f'created = "{entry.created.isoformat()}"']
        if entry.expires is not None:
            lines.append(f'expires = "{entry.expires.isoformat()}"')
        lines.append("")
    write_text_atomically(path, "\n".join(lines), mode=0o600)


def create_token(directory: Path, scope: str, *, name: str | None = None,
                 expires_days: float | None = None) -> tuple[str, TokenEntry]:
    """Make a token (``trt_`` + 32 random bytes, base64url) and record its digest.

    Returns the token, which exists nowhere else afterwards, and its entry. The name defaults
    to the scope and a number (``read-1``); a name in use is refused.
    """
    if scope not in SCOPES:
        raise RepoError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    path = tokens_path(directory)
    entries = load_tokens(path)
    names = {entry.name for entry in entries}
    if name is None:
        name = next(f"{scope}-{n}" for n in range(1, len(entries) + 2) if f"{scope}-{n}" not in names)
    if not _NAME.fullmatch(name):
        raise RepoError(f"a token name is 1 to 64 letters, digits, '_', '.' or '-', not {name!r}")
    if name in names:
        raise RepoError(f"a token named {name} exists already (revoke it first)")
    if expires_days is not None and expires_days <= 0:
        raise RepoError(f"--expires must be a positive number of days, not {expires_days:g}")
    token = PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    now = datetime.now(UTC).replace(microsecond=0)
    entry = TokenEntry(name, scope, digest(token), now,
                       None if expires_days is None else now + timedelta(days=expires_days))
    _write_tokens(path, [*entries, entry])
    return token, entry


def revoke_token(directory: Path, name: str) -> TokenEntry:
    """Remove the token called ``name``; RepoError naming the known ones when there is none."""
    path = tokens_path(directory)
    entries = load_tokens(path)
    kept = [entry for entry in entries if entry.name != name]
    if len(kept) == len(entries):
        known = ", ".join(entry.name for entry in entries) or "none"
        raise RepoError(f"no token named {name} (tokens: {known})")
    _write_tokens(path, kept)
    return next(entry for entry in entries if entry.name == name)


# what TokenChecker.check answers
ALLOWED, UNAUTHORIZED, FORBIDDEN = "allowed", "unauthorized", "forbidden"


class TokenChecker:
    """Decides whether a request's token may do what it asks, from ``tokens.toml``.

    The file is reread when its mtime (or size) changes, so a new or revoked token counts from
    the next request. A write token may also read.
    """

    def __init__(self, path: Path):
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._entries: list[TokenEntry] = []

    def _current(self) -> list[TokenEntry]:
        try:
            st = self.path.stat()
            seen = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = (0, -1)
        if seen != self._seen:
            self._entries = load_tokens(self.path)
            self._seen = seen
        return self._entries

    def check(self, token: str | None, needed_scope: str) -> str:
        """ALLOWED, UNAUTHORIZED (no token, unknown or expired) or FORBIDDEN (read token, write asked)."""
        if not token:
            return UNAUTHORIZED
        wanted = digest(token)
        now = datetime.now(UTC)
        match = None
        for entry in self._current():
            # compare every entry, so the time taken does not tell which digest came close
            if hmac.compare_digest(entry.sha256, wanted) and not entry.expired(now):
                match = entry
        if match is None:
            return UNAUTHORIZED
        if needed_scope == "write" and match.scope != "write":
            return FORBIDDEN
        return ALLOWED
