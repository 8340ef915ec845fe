"""The policy as one process sees it: rules, mode, switch, and the version they reflect.

Pure data, no I/O. Readers on the hot path read attributes without a lock: every
change is a single dict operation or a single attribute assignment, which CPython
makes atomic, and a full replacement swaps in a new dict.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Snapshot:
    """A complete, versioned copy of the policy (from the database or from Redis)."""

    version: int
    policy: str
    enabled: bool
    rules: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    """One committed change, as carried on the pub/sub channel."""

    version: int
    op: str  # add | remove | flush | policy | enabled | resync
    domain: str = ""
    created_at: int = 0
    policy: str = ""
    enabled: bool = True


class PolicyState:
    """Rules and settings in process memory, applied strictly in version order."""

    def __init__(self) -> None:
        self.rules: dict[str, int] = {}
        self.policy = ACCEPT
        self.enabled = True
        self.version = -1  # nothing loaded yet
        self.ready = False
        self._write_lock = threading.Lock()

    def replace(self, snapshot: Snapshot) -> bool:
        """Install a full snapshot if it is newer than what we hold."""
        with self._write_lock:
            if snapshot.version <= self.version and self.ready:
                return False
            self.rules = dict(snapshot.rules)
            self.policy = snapshot.policy
            self.enabled = snapshot.enabled
            self.version = snapshot.version
            self.ready = True
            return True

    def apply(self, change: Change) -> str:
        """Apply the next change. Returns ``applied``, ``stale`` or ``gap``.

        A gap (a version skipped) means a message was missed: the caller resyncs in full.
        """
        with self._write_lock:
            if change.version <= self.version:
                return "stale"
            if change.op == "resync" or change.version != self.version + 1:
                return "gap"
            if change.op == "add":
                self.rules.setdefault(change.domain, change.created_at)
            elif change.op == "remove":
                self.rules.pop(change.domain, None)
            elif change.op == "flush":
                self.rules = {}
            elif change.op == "policy":
                self.policy = change.policy
            elif change.op == "enabled":
                self.enabled = change.enabled
            else:
                return "gap"
            self.version = change.version
            return "applied"
