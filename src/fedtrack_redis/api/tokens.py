"""Named bearer tokens of the admin API (docs/safety.md).

``FEDTRACK_ADMIN_TOKENS="name:token[:read],…"`` names each token; ``FEDTRACK_ADMIN_TOKEN``
is the token named ``admin``. A token has the full scope unless marked ``read``: a read
token cannot change anything. Every token has at least 32 characters (printable ASCII,
no spaces; in the list form no ``:`` or ``,`` either); names are ``A-Za-z0-9_.-`` and
unique, and no two names share a token. A bad value is a `ConfigurationError` naming the
variable and never quoting a token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigurationError

MIN_LENGTH = 32
ADMIN_NAME = "admin"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SECRET = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no space
_HINT = "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"

Scope = Literal["admin", "read"]


@dataclass(frozen=True)
class Token:
    """A configured token: its name, its scope, and the SHA-256 of its secret."""

    name: str
    scope: Scope
    digest: bytes = field(repr=False)

    @property
    def read_only(self) -> bool:
        return self.scope == "read"


class Tokens:
    """The configured tokens; `match` finds the one presented, in constant time."""

    def __init__(self, tokens: list[Token]) -> None:
        if not tokens:
            raise ConfigurationError(
                "FEDTRACK_ADMIN_TOKEN: the admin API needs a token; set FEDTRACK_ADMIN_TOKEN"
                " or FEDTRACK_ADMIN_TOKENS"
            )
        self._tokens = tuple(tokens)

    def match(self, presented: str) -> Token | None:
        """The token whose secret is `presented`, or None (every token compared, digests only)."""
        digest = _digest(presented)
        found: Token | None = None
        for token in self._tokens:
            if hmac.compare_digest(digest, token.digest):
                found = token
        return found

    def __iter__(self) -> Iterator[Token]:
        return iter(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def __repr__(self) -> str:
        return f"Tokens({', '.join(f'{t.name}:{t.scope}' for t in self._tokens)})"


def parse_tokens(admin_token: str | None, admin_tokens: str | None) -> Tokens:
    """Tokens from the raw values of ``FEDTRACK_ADMIN_TOKEN`` and ``FEDTRACK_ADMIN_TOKENS``."""
    tokens: list[Token] = []
    if admin_token is not None and admin_token.strip():
        secret = _secret("FEDTRACK_ADMIN_TOKEN", ADMIN_NAME, admin_token.strip())
        tokens.append(Token(ADMIN_NAME, "admin", _digest(secret)))
    entries = [e.strip() for e in (admin_tokens or "").split(",")]
    for position, entry in enumerate(entries, start=1):
        if entry:
            tokens.append(_entry(position, entry, tokens))
    return Tokens(tokens)


def _entry(position: int, entry: str, earlier: list[Token]) -> Token:
    variable = "FEDTRACK_ADMIN_TOKENS"
    parts = entry.split(":")
    if len(parts) not in (2, 3):
        raise ConfigurationError(
            f"{variable}: entry {position} is not name:token or name:token:read"
        )
    name, secret = parts[0].strip(), parts[1].strip()
    scope: Scope = "admin"
    if len(parts) == 3:
        if parts[2].strip().lower() != "read":
            raise ConfigurationError(
                f"{variable}: entry {position} ({name!r}) has an unknown scope;"
                " the only one is 'read' (omit it for full access)"
            )
        scope = "read"
    if not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"{variable}: entry {position} has an invalid name; use 1 to 64 of A-Za-z0-9_.-"
        )
    for token in earlier:
        if token.name == name:
            taken = " (FEDTRACK_ADMIN_TOKEN is the token named admin)" if name == ADMIN_NAME else ""
            raise ConfigurationError(f"{variable}: the name {name!r} is used twice{taken}")
    digest = _digest(_secret(variable, name, secret))
    for token in earlier:
        if hmac.compare_digest(token.digest, digest):
            raise ConfigurationError(
                f"{variable}: tokens {token.name!r} and {name!r} are the same; give each its own"
            )
    return Token(name, scope, digest)


def _secret(variable: str, name: str, secret: str) -> str:
    if not _SECRET.fullmatch(secret):
        raise ConfigurationError(
            f"{variable}: the token named {name!r} must be printable ASCII without spaces"
        )
    if len(secret) < MIN_LENGTH:
        raise ConfigurationError(
            f"{variable}: the token named {name!r} has {len(secret)}"
            f" character{'' if len(secret) == 1 else 's'};"
            f" at least {MIN_LENGTH} are needed ({_HINT})"
        )
    return secret


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()
