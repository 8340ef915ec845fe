"""IdentityGuard (G11): what a process remembers of the namespace's database (unit)."""

from __future__ import annotations

import pytest

from fedtrack_redis.errors import ConfigurationError, DatabaseMismatchError
from fedtrack_redis.identity import IdentityGuard, is_identity, validate_identity

A, B = "a" * 32, "b" * 32


def test_identities_and_legacy_markers() -> None:
    assert is_identity(A)
    assert not is_identity("1700000000")  # a marker written before identities existed
    assert not is_identity(None)
    assert not is_identity(A.upper())
    assert validate_identity(" " + A.upper() + " ") == A
    with pytest.raises(ConfigurationError) as info:
        validate_identity("nope")
    assert "FEDTRACK_DATABASE_ID" in str(info.value)


def test_nothing_known_the_first_database_decides() -> None:
    guard = IdentityGuard("ns")
    guard.check(A, [None, "1700000000"])  # nothing names a database: anything goes
    assert guard.remembered is None
    guard.adopt(A)
    assert guard.remembered == A
    with pytest.raises(DatabaseMismatchError):
        guard.check(B, [])  # Redis holds none, but this process remembers A


def test_redis_naming_another_database_refuses_and_is_remembered() -> None:
    guard = IdentityGuard("ns", database_url="postgresql+psycopg://u:secret@db/x")
    with pytest.raises(DatabaseMismatchError) as info:
        guard.check(B, [A, None])
    message = str(info.value)
    assert A in message and B in message and "secret" not in message and "\n" not in message
    assert (info.value.expected, info.value.actual) == (A, B)
    # Even once Redis lost everything, this process still refuses its own database.
    with pytest.raises(DatabaseMismatchError):
        guard.check(B, [])
    guard.check(A, [])


def test_a_pinned_identity_wins_over_everything() -> None:
    guard = IdentityGuard("ns", pinned=A)
    with pytest.raises(DatabaseMismatchError) as info:
        guard.check(B, [B])
    assert "FEDTRACK_DATABASE_ID" in str(info.value)
    guard.check(A, [A])
