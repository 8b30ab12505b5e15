"""Service tokens: made once, kept only as digests, checked by scope, revoked live (docs/repo.md)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from tests._cli import run_cli as treadle

from treadle.errors import RepoError
from treadle.repo.tokens import (
    ALLOWED,
    FORBIDDEN,
    UNAUTHORIZED,
    TokenChecker,
    create_token,
    load_tokens,
    revoke_token,
    tokens_path,
)


def test_a_token_is_shown_once_and_only_its_digest_is_kept(tmp_path: Path) -> None:
    token, entry = create_token(tmp_path, "read", name="workers")
    assert token.startswith("trt_") and len(token) == 4 + 43  # 32 bytes, base64url unpadded
    text = tokens_path(tmp_path).read_text()
    assert token not in text and token[4:] not in text
    assert stat.S_IMODE(tokens_path(tmp_path).stat().st_mode) == 0o600
    assert load_tokens(tokens_path(tmp_path)) == [entry]
    assert create_token(tmp_path, "read")[0] != token


def test_default_names_count_up_and_names_are_checked(tmp_path: Path) -> None:
    assert create_token(tmp_path, "read")[1].name == "read-1"
    assert create_token(tmp_path, "read")[1].name == "read-2"
    assert create_token(tmp_path, "write")[1].name == "write-1"
    with pytest.raises(RepoError, match="exists already"):
        create_token(tmp_path, "read", name="read-1")
    with pytest.raises(RepoError, match="token name"):
        create_token(tmp_path, "read", name='a"b')
    with pytest.raises(RepoError, match="scope"):
        create_token(tmp_path, "admin")


def test_scopes_unknown_and_expired_tokens(tmp_path: Path) -> None:
    reader, _ = create_token(tmp_path, "read")
    writer, _ = create_token(tmp_path, "write")
    expired, _ = create_token(tmp_path, "write", expires_days=1e-9)
    checker = TokenChecker(tokens_path(tmp_path))
    assert checker.check(reader, "read") == ALLOWED
    assert checker.check(reader, "write") == FORBIDDEN
    assert checker.check(writer, "read") == ALLOWED
    assert checker.check(writer, "write") == ALLOWED
    assert checker.check(expired, "read") == UNAUTHORIZED
    assert checker.check(None, "read") == UNAUTHORIZED
    assert checker.check("", "read") == UNAUTHORIZED
    assert checker.check(reader + "x", "read") == UNAUTHORIZED
    assert checker.check("trt_" + "A" * 43, "read") == UNAUTHORIZED


def test_a_running_checker_sees_new_and_revoked_tokens(tmp_path: Path) -> None:
    checker = TokenChecker(tokens_path(tmp_path))
    assert checker.check("trt_nothing", "read") == UNAUTHORIZED  # no file yet: nobody
    token, _ = create_token(tmp_path, "read", name="w")
    assert checker.check(token, "read") == ALLOWED
    revoke_token(tmp_path, "w")
    assert checker.check(token, "read") == UNAUTHORIZED
    with pytest.raises(RepoError, match=r"no token named w \(tokens: none\)"):
        revoke_token(tmp_path, "w")


def test_a_damaged_tokens_file_is_named(tmp_path: Path) -> None:
    tokens_path(tmp_path).write_text('[[token]]\nname = "x"\n')
    with pytest.raises(RepoError, match="tokens.toml: a \\[\\[token\\]\\] needs"):
        load_tokens(tokens_path(tmp_path))


@pytest.fixture
def database_url() -> None:
    """These tests need one repository, not one per database."""
    return None


def test_token_commands(repo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, printed, _ = treadle(capsys, "repo", "token", "create", str(repo_dir), "--scope", "read",
                                 "--name", "ci")
    assert status == 0 and printed.startswith("trt_")
    out_file = tmp_path / "w.token"
    status, out, _ = treadle(capsys, "repo", "token", "create", str(repo_dir), "--scope", "write",
                             "-o", str(out_file))
    assert status == 0 and stat.S_IMODE(out_file.stat().st_mode) == 0o600
    written = out_file.read_text().strip()
    assert written.startswith("trt_") and written not in out
    status, listing, _ = treadle(capsys, "repo", "token", "list", str(repo_dir))
    assert "ci\tread" in listing and "write-1\twrite" in listing
    assert printed.strip() not in listing and written not in listing
    assert treadle(capsys, "repo", "token", "revoke", str(repo_dir), "ci")[0] == 0
    status, _, err = treadle(capsys, "repo", "token", "revoke", str(repo_dir), "ci")
    assert status == 1 and "no token named ci" in err
    assert treadle(capsys, "repo", "token", "list", str(repo_dir), "--store", str(tmp_path))[0] == 1


def test_token_commands_on_a_bare_store(repo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = repo_dir / "stores" / "b"
    status, token, _ = treadle(capsys, "repo", "token", "create", "--store", str(store), "--scope", "write")
    assert status == 0
    assert TokenChecker(tokens_path(store)).check(token.strip(), "write") == ALLOWED
    assert not tokens_path(repo_dir).exists()
