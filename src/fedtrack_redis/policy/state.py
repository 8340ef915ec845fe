"""The policy as one process sees it: one immutable view, swapped whole on every change.

Pure data, no I/O. A `PolicyView` never changes once built; `PolicyState` replaces it with
a new one (a single attribute assignment, which CPython makes atomic), so a check on the
hot path reads one reference and sees rules, mode and switch of one and the same version:
never new rules under an old mode. A burst of changes builds one view, not one per change,
and each rule change derives the matcher and the rule map at a cost of about √n (see
`Shards`), so a run of single changes never goes quadratic.

A view holds every rule (`rules`, expired ones included: they are listed until the
flusher leader removes them) and a compiled `Matcher` of the unexpired ones, which is
what checks ask. `PolicyState.expire` swaps in the matcher without the rules this
process's clock has seen expire; the sync thread calls it when `next_expiry` is due.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..domain import DEFAULT_MEMO
from ..errors import NotInitializedError
from .matcher import Matcher
from .modes import ACCEPT, POLICIES, REJECT, parse_policy
from .rules import Rule
from .shards import Shards

__all__ = [
    "ACCEPT",
    "POLICIES",
    "REJECT",
    "Change",
    "PolicyState",
    "PolicyView",
    "Snapshot",
    "parse_policy",
]

EMPTY_RULES: Shards[str, Rule] = Shards.of(())
#: Raw spellings a view remembers at most (then it starts over), bounding its memory.
SPELLINGS_CACHED = 100_000


@dataclass(frozen=True)
class Snapshot:
    """A complete, versioned copy of the policy (from the database or from Redis)."""

    version: int
    policy: str
    enabled: bool
    rules: Mapping[str, Rule] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    """One committed change, as carried on the pub/sub channel.

    `op` is ``add`` (`rules`: each rule whole, new or updated), ``remove`` or ``expire``
    (`texts`: the rules removed; ``expire`` is the flusher leader's), ``flush``,
    ``policy``, ``enabled`` or ``resync`` (reload everything).
    """

    version: int
    op: str
    rules: tuple[Rule, ...] = ()
    texts: tuple[str, ...] = ()
    policy: str = ""
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class PolicyView:
    """Everything a check needs, at one version. Never mutated; `ready` is False until
    the first policy arrived. `decisions` is the matcher's decision cache (normalized
    name → deciding rule or None), which the hot path reads before asking the matcher."""

    version: int
    policy: str
    enabled: bool
    rules: Shards[str, Rule]
    matcher: Matcher
    ready: bool = True
    #: The hot path's cache of this view: raw spelling → (normalized name or None,
    #: deciding rule or None). One lookup answers a spelling seen before; `learn` fills it.
    spellings: dict[str, tuple[str | None, Rule | None]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "spellings", {})

    def learn(self, domain: str) -> tuple[str | None, Rule | None]:
        """(normalized name, deciding rule) of a raw spelling not in `spellings` yet,
        remembered for the next call (an invalid name is None and matches no rule).
        Raises `NotInitializedError` on a store that has no policy yet."""
        if not self.ready:
            raise NotInitializedError("PolicyStore.init() has not been called (or it is closed)")
        name = DEFAULT_MEMO.get(domain) if isinstance(domain, str) else None
        found = (name, self.matcher.decide(name))
        if isinstance(domain, str):
            cache = self.spellings
            if len(cache) >= SPELLINGS_CACHED:
                cache.clear()
            cache[domain] = found
        return found


NOT_READY = PolicyView(-1, ACCEPT, True, EMPTY_RULES, Matcher(), ready=False)


class PolicyState:
    """The current `PolicyView`, advanced strictly in version order."""

    def __init__(self, on_swap: Callable[[PolicyView], None] | None = None) -> None:
        self.view = NOT_READY
        self._on_swap = on_swap
        self._write_lock = threading.Lock()

    # Read-only accessors of the current view (for callers that are not on the hot path).
    @property
    def rules(self) -> Shards[str, Rule]:
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
            rules = Shards.of(snapshot.rules.items())
            self._swap(
                PolicyView(
                    snapshot.version,
                    snapshot.policy,
                    snapshot.enabled,
                    rules,
                    Matcher.build(rules.values()),
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
            rules, matcher = view.rules, view.matcher
            version, policy, enabled = view.version, view.policy, view.enabled
            final: dict[str, Rule | None] = {}  # text → its rule after the burst (None: gone)
            outcomes: list[str] = []
            for change in changes:
                op = change.op
                if change.version <= version:
                    outcomes.append("stale")
                    continue
                if op == "resync" or change.version != version + 1:
                    outcomes.append("gap")
                    continue
                if op == "add":
                    final.update((rule.text, rule) for rule in change.rules)
                elif op in ("remove", "expire"):
                    final.update(dict.fromkeys(change.texts))
                elif op == "flush":
                    rules, matcher, final = EMPTY_RULES, Matcher(), {}
                elif op == "policy":
                    policy = change.policy
                elif op == "enabled":
                    enabled = change.enabled
                else:
                    outcomes.append("gap")
                    continue
                version = change.version
                outcomes.append("applied")
            if version != view.version:
                if final:
                    rules = rules.evolve(final)
                    matcher = matcher.with_changes(
                        added=[rule for rule in final.values() if rule is not None],
                        removed=[t for t, rule in final.items() if rule is None and t in matcher],
                    )
                self._swap(PolicyView(version, policy, enabled, rules, matcher, view.ready))
            return outcomes

    def expire(self, now: float | None = None) -> bool:
        """Stop matching the rules expired by `now` (default: this process's clock), with
        no change of version: the leader's removal comes later. True if a rule stopped."""
        now = time.time() if now is None else now
        with self._write_lock:
            view = self.view
            if now < view.matcher.next_expiry:
                return False
            current = view.matcher.current(now)
            if current is view.matcher:
                return False
            dropped = len(current) != len(view.matcher)
            self._swap(dataclasses.replace(view, matcher=current))
            return dropped
