"""One process's view of the held-back domains: what `should_attempt` answers from (G1).

`held` maps each normalized domain in backoff or unavailable to its next attempt (unix
ms). It is one dict for the life of the view, changed in place by the sync thread and the
push thread (each single-key change is atomic under the GIL) and read without a lock, so
`should_attempt` is one emptiness test while nothing is held, one or two dict lookups
otherwise; writers serialize on `_lock`.

Each shard's changes carry a revision (push.lua and the health scripts bump the shard's
``rev``): a change at ``rev == known + 1`` applies, an older one is ignored, a newer one
applies and marks the shard for a full resync (a message was missed); a snapshot never
overwrites changes newer than itself.
"""

from __future__ import annotations

import threading

from ..domain import DEFAULT_MEMO, memo_lookup
from ..keys import SHARDS, shard_of
from .policy import HEALTHY, DomainHealth

UNKNOWN = -1


class HealthView:
    """Held-back domains of a namespace, as this process last heard of them."""

    def __init__(self) -> None:
        self.held: dict[str, int] = {}
        #: Probes claimed for this process and not yet handed out (one `True` each).
        self.probes: set[str] = set()
        #: Held domains this process asked about: where it claims probes.
        self.asked: set[str] = set()
        self._shards: list[dict[str, int]] = [{} for _ in range(SHARDS)]
        self._revs = [UNKNOWN] * SHARDS
        #: Shards whose view may have missed a change (resync them in full).
        self.stale: set[int] = set(range(SHARDS))
        self._lock = threading.Lock()

    # -- the hot path ---------------------------------------------------------------

    def should_attempt(self, domain: str) -> bool:
        """True unless `domain` is held back; a claimed probe is one True (memory only).
        (`FederationTracker.should_attempt` inlines this.)"""
        held = self.held
        if not held:
            return True
        try:
            if domain in held:
                return self.probe(domain)
            name = memo_lookup(domain)
        except TypeError:  # unhashable: not a domain at all
            return True
        if name is None:
            name = DEFAULT_MEMO.get(domain)
        if name.__class__ is str and name in held:
            return self.probe(name)
        return True

    def probe(self, domain: str) -> bool:
        """`domain` (normalized) is held: note the demand; True once per claimed probe."""
        self.asked.add(domain)
        probes = self.probes
        if probes and domain in probes:
            try:
                probes.remove(domain)  # one caller wins, whatever the threads
            except KeyError:
                return False
            return True
        return False

    # -- writers ------------------------------------------------------------------------

    def revision(self, shard: int) -> int:
        return self._revs[shard]

    def apply_feed(self, shard: int, text: str) -> bool:
        """Apply one feed message ("<rev>\\n<domain>|<state>|<next_ms>…"); False when it
        was not the next revision (ignored when older, applied and the shard marked stale
        when newer)."""
        head, _, body = text.partition("\n")
        if not head.isdigit():
            self.stale.add(shard)
            return False
        rev = int(head)
        with self._lock:
            known = self._revs[shard]
            if known != UNKNOWN and rev <= known:
                return rev == known
            in_order = known != UNKNOWN and rev == known + 1
            for line in body.split("\n") if body else ():
                domain, _, rest = line.partition("|")
                state, _, upcoming = rest.partition("|")
                if state == HEALTHY or not upcoming.isdigit():
                    self._drop(shard, domain)
                else:
                    self._put(shard, domain, int(upcoming))
            self._revs[shard] = rev
            if not in_order:
                self.stale.add(shard)
            return in_order

    def replace(self, shard: int, rev: int, entries: dict[str, int], *, force: bool) -> bool:
        """Replace a shard's domains with a snapshot taken at `rev`. Refused (False) when
        the view already holds newer changes, unless `force` (Redis lost its data and
        started counting again)."""
        with self._lock:
            if not force and self._revs[shard] != UNKNOWN and rev < self._revs[shard]:
                return False
            current = self._shards[shard]
            for domain in [d for d in current if d not in entries]:
                self._drop(shard, domain)
            for domain, upcoming in entries.items():
                self._put(shard, domain, upcoming)
            self._revs[shard] = rev
            self.stale.discard(shard)
            return True

    def follow(self, health: DomainHealth) -> None:
        """Follow a state read from Redis (`FederationTracker.health`)."""
        shard = shard_of(health.domain)
        with self._lock:
            if health.state == HEALTHY or health.next_attempt_at is None:
                self._drop(shard, health.domain)
            else:
                self._put(shard, health.domain, round(health.next_attempt_at * 1000))

    def grant(self, domain: str) -> None:
        """A probe was claimed for this process: the next `should_attempt` answers True."""
        self.probes.add(domain)

    def due(self, now_ms: int) -> list[str]:
        """Asked-about held domains whose next attempt is due by this process's clock (the
        claim script decides by Redis's); forgets demand for domains no longer held."""
        held = self.held
        due: list[str] = []
        for domain in list(self.asked):
            upcoming = held.get(domain)
            if upcoming is None:
                self.asked.discard(domain)
            elif upcoming <= now_ms and domain not in self.probes:
                due.append(domain)
        return due

    def next_due(self) -> int | None:
        """The earliest next attempt (unix ms) among asked-about held domains."""
        held = self.held
        times = [held[d] for d in list(self.asked) if d in held]
        return min(times) if times else None

    def _put(self, shard: int, domain: str, upcoming: int) -> None:
        self._shards[shard][domain] = upcoming
        self.held[domain] = upcoming

    def _drop(self, shard: int, domain: str) -> None:
        if self._shards[shard].pop(domain, None) is not None:
            self.held.pop(domain, None)
        self.probes.discard(domain)
