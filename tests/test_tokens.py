"""api/tokens.py: FEDTRACK_ADMIN_TOKEN and FEDTRACK_ADMIN_TOKENS parsed into named,
scoped tokens; every bad value is one line naming the variable, never the token (unit)."""

from __future__ import annotations

import pytest

from fedtrack_redis.api.tokens import MIN_LENGTH, parse_tokens
from fedtrack_redis.errors import ConfigurationError

ADMIN = "A" * 32
OPS = "ops-0123456789abcdefghijklmnopqrstuvwxyz"
VIEW = "view-0123456789abcdefghijklmnopqrstuvwxyz"


def test_the_single_token_is_named_admin_with_full_scope() -> None:
    tokens = parse_tokens(ADMIN, None)
    (token,) = tokens
    assert (token.name, token.scope, token.read_only) == ("admin", "admin", False)
    assert tokens.match(ADMIN) == token
    assert parse_tokens(f"  {ADMIN}\n", None).match(ADMIN) == token  # a newline from a file


def test_named_tokens_with_scopes() -> None:
    tokens = parse_tokens(ADMIN, f" ops:{OPS} , viewer:{VIEW}:read,")
    assert [(t.name, t.scope) for t in tokens] == [
        ("admin", "admin"),
        ("ops", "admin"),
        ("viewer", "read"),
    ]
    viewer = tokens.match(VIEW)
    assert viewer is not None
    assert viewer.name == "viewer"
    assert viewer.read_only
    assert tokens.match(OPS) is not None
    assert tokens.match(OPS).name == "ops"  # type: ignore[union-attr]
    assert parse_tokens(None, f"v:{VIEW}:READ").match(VIEW).scope == "read"  # type: ignore[union-attr]


@pytest.mark.parametrize("presented", ["", "A" * 31, "A" * 33, "a" * 32, OPS + " ", VIEW[:-1]])
def test_anything_else_matches_nothing(presented: str) -> None:
    assert parse_tokens(ADMIN, f"ops:{OPS},viewer:{VIEW}:read").match(presented) is None


def test_no_token_at_all_is_refused() -> None:
    for admin, named in ((None, None), ("", ""), ("  ", " , ")):
        with pytest.raises(ConfigurationError, match="FEDTRACK_ADMIN_TOKEN: the admin API needs"):
            parse_tokens(admin, named)


@pytest.mark.parametrize(
    ("admin", "named", "variable", "words"),
    [
        ("short-token", None, "FEDTRACK_ADMIN_TOKEN", "has 11 characters; at least 32"),
        ("A" * 31, None, "FEDTRACK_ADMIN_TOKEN", "has 31 characters"),
        ("with space " * 4, None, "FEDTRACK_ADMIN_TOKEN", "printable ASCII without spaces"),
        ("é" * 40, None, "FEDTRACK_ADMIN_TOKEN", "printable ASCII"),
        (None, "ops:tooshort", "FEDTRACK_ADMIN_TOKENS", "'ops' has 8 characters"),
        (None, f"ops:{OPS},viewer:tooshort:read", "FEDTRACK_ADMIN_TOKENS", "'viewer' has 8"),
        (None, OPS, "FEDTRACK_ADMIN_TOKENS", "entry 1 is not name:token"),
        (None, f"ops:{OPS},{VIEW}", "FEDTRACK_ADMIN_TOKENS", "entry 2 is not name:token"),
        (None, f"ops:{OPS}:read:extra", "FEDTRACK_ADMIN_TOKENS", "entry 1 is not"),
        (None, f"ops:{OPS}:write", "FEDTRACK_ADMIN_TOKENS", "unknown scope"),
        (None, f"op s:{OPS}", "FEDTRACK_ADMIN_TOKENS", "invalid name"),
        (None, f":{OPS}", "FEDTRACK_ADMIN_TOKENS", "invalid name"),
        (None, f"{'n' * 65}:{OPS}", "FEDTRACK_ADMIN_TOKENS", "invalid name"),
        (None, f"ops:{OPS},ops:{VIEW}", "FEDTRACK_ADMIN_TOKENS", "'ops' is used twice"),
        (ADMIN, f"admin:{OPS}", "FEDTRACK_ADMIN_TOKENS", "FEDTRACK_ADMIN_TOKEN is the token"),
        (None, f"ops:{OPS},viewer:{OPS}:read", "FEDTRACK_ADMIN_TOKENS", "are the same"),
        (OPS, f"ops:{OPS}", "FEDTRACK_ADMIN_TOKENS", "'admin' and 'ops' are the same"),
    ],
)
def test_bad_values_are_one_line_naming_the_variable_never_the_token(
    admin: str | None, named: str | None, variable: str, words: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_tokens(admin, named)
    message = str(info.value)
    assert message.startswith(f"{variable}: ")
    assert words in message
    assert "\n" not in message
    for secret in (OPS, VIEW, "tooshort", "short-token", "A" * 31):
        assert secret not in message


def test_the_minimum_is_32_characters() -> None:
    assert MIN_LENGTH == 32
    assert len(parse_tokens("x" * 32, f"n:{'y' * 32}")) == 2


def test_reprs_never_show_a_secret() -> None:
    tokens = parse_tokens(ADMIN, f"viewer:{VIEW}:read")
    for text in (repr(tokens), *(repr(t) for t in tokens)):
        assert ADMIN not in text
        assert VIEW not in text
    assert repr(tokens) == "Tokens(admin:admin, viewer:read)"
