"""The Redis side of delivery health: the namespace's policy, reads, resets, probe claims.

The state itself is written by push.lua (atomically with the counters) and by two small
scripts here: ``health_claim.lua`` (one probe per due domain, cluster-wide) and
``health_reset.lua`` (an operator's reset). Every call touches one shard's keys only.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

from ..domain import normalize_domain
from ..engine import RedisEngine
from ..errors import ConfigurationError
from ..keys import NamespaceKeys, ShardKeys
from ..scripts import Scripts
from .policy import EVENT_RETENTION_MS, STATES, DomainHealth, HealthPolicy, decode_record

log = logging.getLogger("fedtrack_redis.health")

#: Seconds between two reads of the stored policy by a process that passed none.
POLICY_REFRESH = 60.0


@dataclass(frozen=True)
class Claim:
    """A `health_claim.lua` answer: 1 claimed, 0 not due yet, -1 not held."""

    status: int
    next_ms: int
    feed: str


class HealthRedis:
    """Health keys and scripts of one namespace."""

    def __init__(self, engine: RedisEngine, keys: NamespaceKeys) -> None:
        self.engine = engine
        self.keys = keys
        self._scripts = Scripts(engine)

    # -- the namespace's policy ------------------------------------------------------

    def resolve_policy(self, explicit: HealthPolicy | None) -> HealthPolicy:
        """The namespace's one policy: `explicit` is stored when none is (else it must be
        equal: `ConfigurationError`); without one, the stored policy or the defaults."""
        key = self.keys.health_policy
        client = self.engine.node_for(key)
        if explicit is not None and client.set(key, explicit.to_json(), nx=True):
            return explicit
        stored = client.get(key)
        if stored is None:
            return explicit or HealthPolicy()
        policy = HealthPolicy.from_json(_text(stored))
        if explicit is not None and policy != explicit:
            raise ConfigurationError(
                f"health policy {explicit} differs from the namespace's stored {policy};"
                " pass the same one, or none"
            )
        return policy

    def spec(self, policy: HealthPolicy, shard: ShardKeys) -> str:
        """push.lua's and health_claim.lua's settings (without the seed) for a shard."""
        return policy.script_spec(self.engine.publish_command, shard.health_feed)

    # -- reads ----------------------------------------------------------------------------

    def read(self, domain: str) -> DomainHealth | None:
        """One domain's health (normalized name), None when it was never recorded."""
        shard = self.keys.shard_for(domain)
        client = self.engine.node_for(shard.base)
        with client.pipeline(transaction=False) as pipe:
            pipe.exists(shard.domain(domain))
            pipe.hget(shard.health, domain)
            exists, record = pipe.execute()
        if not exists and record is None:
            return None
        return decode_record(domain, _text(record) if record is not None else None)

    def domains(self, state: str | None = None, limit: int = 10_000) -> list[DomainHealth]:
        """Failing domains of every shard (held back ones, and with ``state="healthy"``
        the healthy ones that have failed since their last success), soonest next
        attempt first; at most `limit`."""
        found: list[DomainHealth] = []
        for shard in self.keys.shards:
            client = self.engine.node_for(shard.base)
            records = client.hgetall(shard.health)
            for domain, record in records.items():
                health = decode_record(_text(domain), _text(record))
                if state is None or health.state == state:
                    found.append(health)
        found.sort(key=lambda h: (h.next_attempt_at is None, h.next_attempt_at or 0, h.domain))
        return found[:limit]

    def counts(self) -> dict[str, int]:
        """Domains in backoff and unavailable (kept by the scripts; healthy is the rest)."""
        totals: dict[str, int] = dict.fromkeys(STATES[1:], 0)
        for shard in self.keys.shards:
            client = self.engine.node_for(shard.base)
            values = client.hmget(shard.health_meta, [f"n:{state}" for state in totals])
            for state, value in zip(list(totals), values, strict=True):
                totals[state] += max(0, int(value or 0))
        return totals

    def snapshot(self, shard: ShardKeys) -> tuple[int, dict[str, int]]:
        """(rev, held domain → next ms) of one shard, read atomically."""
        client = self.engine.node_for(shard.base)
        with client.pipeline(transaction=True) as pipe:
            pipe.hget(shard.health_meta, "rev")
            pipe.zrange(shard.held, 0, -1, withscores=True)
            rev, held = pipe.execute()
        return int(rev or 0), {_text(d): int(score) for d, score in held}

    def revisions(self) -> list[int]:
        """Every shard's rev (0 when none): one pipeline per node."""
        revs = [0] * len(self.keys.shards)
        for client, shards in self.engine.by_node(self.keys.shards, lambda shard: shard.base):
            with client.pipeline(transaction=False) as pipe:
                for shard in shards:
                    pipe.hget(shard.health_meta, "rev")
                for shard, value in zip(shards, pipe.execute(), strict=True):
                    revs[shard.shard] = int(value or 0)
        return revs

    # -- writes ---------------------------------------------------------------------------

    def reset(self, domain: str) -> tuple[str | None, str]:
        """Make `domain` (any spelling) healthy: (its previous state or None when it had
        no record, the feed message published or "")."""
        name = normalize_domain(domain)
        shard = self.keys.shard_for(name)
        keys = [shard.health, shard.held, shard.health_meta, shard.health_events]
        keys.append(shard.domain(name))
        args = [name, self.engine.publish_command, shard.health_feed, EVENT_RETENTION_MS]
        previous, feed = self._scripts.run_confirmed("health_reset", keys, args)
        return (_text(previous) or None), _text(feed)

    def claim(self, domain: str, policy: HealthPolicy) -> Claim:
        """Claim the due probe of a held-back domain (one claimer wins each probe)."""
        shard = self.keys.shard_for(domain)
        spec = f"{random.getrandbits(31)};{self.spec(policy, shard)}"
        keys = [shard.health, shard.held, shard.health_meta]
        status, upcoming, feed = self._scripts.run("health_claim", keys, [domain, spec])
        return Claim(int(status), int(float(upcoming)), _text(feed))


def now_ms() -> int:
    """This process's clock in unix ms (only to decide when to ask Redis's)."""
    return time.time_ns() // 1_000_000


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)
