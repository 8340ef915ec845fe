"""The cluster's modes: ``ACCEPT`` (rules are a blocklist) and ``REJECT`` (an allowlist)."""

from __future__ import annotations

from ..errors import InvalidPolicyError

ACCEPT = "ACCEPT"
REJECT = "REJECT"
POLICIES = (ACCEPT, REJECT)


def parse_policy(mode: str) -> str:
    """``ACCEPT`` or ``REJECT`` from any case; anything else raises `InvalidPolicyError`."""
    if not isinstance(mode, str):
        raise InvalidPolicyError(mode)
    upper = mode.strip().upper()
    if upper not in POLICIES:
        raise InvalidPolicyError(mode)
    return upper
