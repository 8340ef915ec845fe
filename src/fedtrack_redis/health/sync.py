"""Keep a process's `HealthView` current, and claim the probes it has demand for.

`HealthSync` is one daemon thread per tracker. It subscribes to the 16 shards' feed
channels (``SSUBSCRIBE`` on Cluster, where push.lua publishes with ``SPUBLISH`` on the
shard's own tag), applies each message in revision order, resyncs a shard in full on a
gap or a (re)subscription, and compares revisions with Redis every `CHECK_EVERY` seconds
(a message missed without a reconnect, or Redis that lost its data and counts again).
Between messages it claims probes: held domains this process asked about whose next
attempt is due (`health_claim.lua` decides by Redis's clock; one claimer wins).

`HealthLink` is what the push thread needs: the namespace's policy as push.lua's
settings, and the feed of its own chunks, applied before `push()` returns.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import redis
from redis.backoff import ExponentialBackoff

from ..engine import RedisEngine
from ..keys import NamespaceKeys
from ..metrics import THREAD_ERRORS
from .policy import HealthPolicy
from .store import POLICY_REFRESH, HealthRedis, now_ms
from .view import HealthView

log = logging.getLogger("fedtrack_redis.health")

#: Seconds between two revision checks against Redis (16 HGETs, one pipeline per node:
#: 3,200 commands/s for 1,000 workers).
CHECK_EVERY = 5.0
#: Longest wait for a message (claims and checks run at least this often).
POLL = 0.25
#: Milliseconds before a domain whose claim was refused as not due is asked again.
CLAIM_RETRY_MS = 50


class HealthLink:
    """The namespace's health policy, resolved lazily, and the view pushes update."""

    def __init__(self, side: HealthRedis, view: HealthView, explicit: HealthPolicy | None):
        self.side = side
        self.view = view
        self.explicit = explicit
        self.policy: HealthPolicy = explicit or HealthPolicy()
        self._resolved_at: float | None = None
        self._specs: list[str] = []

    def specs(self) -> list[str]:
        """push.lua's health settings per shard; resolves the namespace's policy first
        (`ConfigurationError` when this process passed a different one)."""
        now = time.monotonic()
        if self._resolved_at is None or now - self._resolved_at >= POLICY_REFRESH:
            try:
                self.policy = self.side.resolve_policy(self.explicit)
                self._resolved_at = now
                self._specs = []
            except redis.RedisError as exc:  # the push fails too; try again next cycle
                log.debug("health: stored policy unreadable now (%s)", exc)
        if not self._specs:
            self._specs = [self.side.spec(self.policy, shard) for shard in self.side.keys.shards]
        return self._specs

    def on_feed(self, shard: int, feed: str) -> None:
        self.view.apply_feed(shard, feed)


class HealthSync:
    """Daemon thread: feed messages, resyncs, revision checks and probe claims."""

    def __init__(self, engine: RedisEngine, keys: NamespaceKeys, link: HealthLink) -> None:
        self._engine = engine
        self._keys = keys
        self._link = link
        self._view = link.view
        self._side = link.side
        self._channels = {shard.health_feed: shard.shard for shard in keys.shards}
        self._sharded = engine.kind == "cluster"
        self._pubsub: Any = None
        self._stop = threading.Event()
        self._refused: dict[str, int] = {}
        self._behind: set[int] = set()
        self._thread = threading.Thread(target=self._run, name="fedtrack-health", daemon=True)

    def start(self) -> HealthSync:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        backoff = ExponentialBackoff(cap=2.0, base=0.05)
        failures = 0
        next_check = time.monotonic() + CHECK_EVERY
        try:
            while not self._stop.is_set():
                try:
                    message = self._get(self._timeout())
                    while message is not None:
                        self._handle(message)
                        message = self._get(0.0)
                    self._resync_stale()
                    self._claim_due()
                    if time.monotonic() >= next_check:
                        self._check_revisions()
                        next_check = time.monotonic() + CHECK_EVERY
                    failures = 0
                except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                    failures += 1
                    log.debug("health sync: Redis unavailable (%s); serving the last view", exc)
                    self._reset()
                    self._stop.wait(backoff.compute(failures))
                except Exception:
                    failures += 1
                    THREAD_ERRORS.labels("health_sync").inc()
                    log.exception("health sync: unexpected error; retrying")
                    self._reset()
                    self._stop.wait(backoff.compute(failures))
        finally:
            self._reset(refresh=False)

    def _timeout(self) -> float:
        upcoming = self._view.next_due()
        if upcoming is None:
            return POLL
        return max(0.0, min(POLL, (upcoming - now_ms()) / 1000))

    def _get(self, timeout: float) -> dict[str, Any] | None:
        if self._pubsub is None:
            self._pubsub = self._engine.client.pubsub()
            if self._sharded:
                self._pubsub.ssubscribe(*self._channels)
            else:
                self._pubsub.subscribe(*self._channels)
        return self._engine.next_message(self._pubsub, timeout, sharded=self._sharded)

    def _reset(self, refresh: bool = True) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()
        self._view.stale.update(range(len(self._channels)))
        if refresh:
            with contextlib.suppress(redis.RedisError, OSError):
                self._engine.refresh()

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        channel = _text(message.get("channel"))
        shard = self._channels.get(channel)
        if shard is None:
            return
        if kind in ("subscribe", "ssubscribe"):
            self._view.stale.add(shard)  # (re)subscribed: we may have missed messages
        elif kind in ("message", "smessage"):
            self._view.apply_feed(shard, _text(message.get("data")))

    def _resync_stale(self, force: set[int] | None = None) -> None:
        for shard in sorted(self._view.stale | (force or set())):
            for _ in range(3):
                rev, entries = self._side.snapshot(self._keys.shards[shard])
                if self._view.replace(shard, rev, entries, force=bool(force and shard in force)):
                    break

    def _check_revisions(self) -> None:
        """Resync shards whose rev differs from Redis's at two looks in a row (a message
        in flight looks like that for a moment; Redis that lost its data counts anew)."""
        revs = self._side.revisions()
        behind = {s for s, value in enumerate(revs) if value != self._view.revision(s)}
        force = behind & self._behind
        self._behind = behind - force
        if force:
            self._resync_stale(force)

    def _claim_due(self) -> None:
        now = now_ms()
        for domain in self._view.due(now):
            if self._refused.get(domain, 0) > now:
                continue
            claim = self._side.claim(domain, self._link.policy)
            if claim.status == 1:
                self._view.grant(domain)
                self._refused.pop(domain, None)
                if claim.feed:
                    self._view.apply_feed(self._keys.shard_for(domain).shard, claim.feed)
            else:
                self._refused[domain] = now + CLAIM_RETRY_MS
                if claim.status == -1:  # Redis no longer holds it back: our view is behind
                    self._view.stale.add(self._keys.shard_for(domain).shard)
        if len(self._refused) > 10_000:
            self._refused = {d: t for d, t in self._refused.items() if t > now}


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)
