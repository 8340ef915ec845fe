"""The policy as one process sees it: one immutable view, swapped whole on every change.

Pure data, no I/O. A `PolicyView` never changes once built; `PolicyState` replaces it with
a new one (a single attribute assignment, which CPython makes atomic), so a check on the
hot path reads one reference and sees rules, mode and switch of one and the same version:
never new rules under an old mode. A burst of changes builds one view, not one per change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

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


@dataclass(frozen=True, slots=True)
class PolicyView:
    """Everything a check needs, at one version. Never mutated (its `rules` mapping is
    read-only); `ready` is False until the first policy arrived."""

    version: int
    policy: str
    enabled: bool
    rules: Mapping[str, int]
    ready: bool = True


NOT_READY = PolicyView(-1, ACCEPT, True, MappingProxyType({}), ready=False)


class PolicyState:
    """The current `PolicyView`, advanced strictly in version order."""

    def __init__(self, on_swap: Callable[[PolicyView], None] | None = None) -> None:
        self.view = NOT_READY
        self._on_swap = on_swap
        self._write_lock = threading.Lock()

    # Read-only accessors of the current view (for callers that are not on the hot path).
    @property
    def rules(self) -> Mapping[str, int]:
        return self.view.rules

    @property
    def policy(self) -> str:
        return self.view.policy

    @property
    def enabled(self) -> bool:
        return self.view.enabled

    @property
    def version(self) -> int:
        return self.view.version

    @property
    def ready(self) -> bool:
        return self.view.ready

    def _swap(self, view: PolicyView) -> None:
        self.view = view
        if self._on_swap is not None:
            self._on_swap(view)

    def replace(self, snapshot: Snapshot) -> bool:
        """Install a full snapshot if it is newer than what we hold."""
        with self._write_lock:
            if snapshot.version <= self.view.version and self.view.ready:
                return False
            self._swap(
                PolicyView(
                    snapshot.version,
                    snapshot.policy,
                    snapshot.enabled,
                    MappingProxyType(dict(snapshot.rules)),
                )
            )
            return True

    def apply(self, change: Change) -> str:
        """Apply the next change. Returns ``applied``, ``stale`` or ``gap``.

        A gap (a version skipped) means a message was missed: the caller resyncs in full.
        """
        return self.apply_many([change])[0]

    def apply_many(self, changes: Iterable[Change]) -> list[str]:
        """Apply changes in order and swap in ONE new view; an outcome per change."""
        with self._write_lock:
            view = self.view
            rules: dict[str, int] | None = None
            version, policy, enabled = view.version, view.policy, view.enabled
            outcomes: list[str] = []
            for change in changes:
                if change.version <= version:
                    outcomes.append("stale")
                    continue
                if change.op == "resync" or change.version != version + 1:
                    outcomes.append("gap")
                    continue
                if change.op in ("add", "remove", "flush") and rules is None:
                    rules = dict(view.rules)
                if change.op == "add":
                    assert rules is not None
                    rules.setdefault(change.domain, change.created_at)
                elif change.op == "remove":
                    assert rules is not None
                    rules.pop(change.domain, None)
                elif change.op == "flush":
                    rules = {}
                elif change.op == "policy":
                    policy = change.policy
                elif change.op == "enabled":
                    enabled = change.enabled
                else:
                    outcomes.append("gap")
                    continue
                version = change.version
                outcomes.append("applied")
            if version != view.version:
                new_rules = view.rules if rules is None else MappingProxyType(rules)
                self._swap(PolicyView(version, policy, enabled, new_rules, ready=view.ready))
            return outcomes
