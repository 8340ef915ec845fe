"""Every Redis key and pub/sub channel name of fedtrack-redis, built in one place.

The layout is documented for dashboard authors in ``docs/redis-keys.md``; change the
two together and bump `SCHEMA_VERSION`. Rules of the layout:

* every key one script call touches shares one ``{hash tag}``, so every script runs
  unchanged on Redis Cluster;
* per-domain keys are spread over `SHARDS` shards, each with its own tag
  ``{<namespace>:<shard>.<salt>}`` whose slot lies in the shard's own sixteenth of the
  slot space, so a cluster whose masters split the slots evenly gets an even share of
  shards on every master;
* policy keys live under the tag ``{<namespace>:policy}``, the flusher lock under
  ``{<namespace>:flusher}``;
* only normalized domains (``a-z0-9.-:``) and validated namespaces / worker ids
  (``A-Za-z0-9_.-``) are ever spliced into a name, so no input can forge a tag.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import cache, cached_property

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from .errors import ConfigurationError

#: Version of the key layout below. The shard count is part of it: changing `SHARDS`
#: moves domains between shards and needs a new schema version.
SCHEMA_VERSION = 3
#: Number of shards per namespace (fixed by the schema version).
SHARDS = 16
PREFIX = "fedtrack"

_NAMESPACE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_WORKER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def validate_namespace(namespace: str) -> str:
    """Return `namespace` unchanged, or raise `ConfigurationError`."""
    if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
        raise ConfigurationError(
            f"invalid namespace {namespace!r}: use 1-64 characters from A-Z a-z 0-9 _ -"
        )
    return namespace


def validate_worker_id(worker_id: str) -> str:
    """Return `worker_id` unchanged, or raise `ConfigurationError`."""
    if not isinstance(worker_id, str) or not _WORKER_ID.match(worker_id):
        raise ConfigurationError(
            f"invalid worker id {worker_id!r}: use 1-128 characters from A-Z a-z 0-9 _ . -"
        )
    return worker_id


def shard_of(domain: str) -> int:
    """Stable shard of a normalized domain: CRC-32 of its ASCII bytes modulo `SHARDS`."""
    return zlib.crc32(domain.encode("ascii")) % SHARDS


@cache
def shard_tag(namespace: str, shard: int, schema: int = SCHEMA_VERSION) -> str:
    """The hash tag of one shard: ``<namespace>:<shard:02d>:<salt>`` (schema version 2:
    ``<namespace>:<shard:02d>.<salt>``) with the smallest salt whose Cluster slot falls in
    the shard's sixteenth of the slot space. Each schema version has tags of its own, so
    a new version starts on keys no earlier release writes (`upgrade`).

    A plain ``<namespace>:<shard>`` tag lands where CRC16 puts it: for the namespace
    ``fedtrack`` that is 8 of the 16 shards on the first master of an evenly split
    3-master cluster. With the salt, masters that split the slots evenly each carry
    `SHARDS` / masters shards (±1), whatever the namespace. About 16 tries per shard.
    """
    if schema not in (2, SCHEMA_VERSION):
        raise ValueError(f"no shard tags for key schema version {schema}")
    width = REDIS_CLUSTER_HASH_SLOTS // SHARDS
    separator = "." if schema == 2 else ":"
    salt = 0
    while key_slot(f"{namespace}:{shard:02d}{separator}{salt}".encode()) // width != shard:
        salt += 1
    return f"{namespace}:{shard:02d}{separator}{salt}"


@dataclass(frozen=True)
class ShardKeys:
    """Keys of one shard of a namespace; all share the tag `shard_tag` gives."""

    namespace: str
    shard: int
    #: The key schema version whose tag the keys carry (2 only to retire those, `upgrade`).
    schema: int = SCHEMA_VERSION

    @cached_property
    def base(self) -> str:
        return f"{PREFIX}:{{{shard_tag(self.namespace, self.shard, self.schema)}}}"

    def domain(self, domain: str) -> str:
        """Hash of one domain's counters (fields named by `stats.FIELD_OF`) and history
        base (`history.BASE_FIELD`)."""
        return f"{self.base}:d:{domain}"

    @cached_property
    def active(self) -> str:
        """Sorted set: domain → last activity (unix seconds)."""
        return f"{self.base}:active"

    @cached_property
    def changed(self) -> str:
        """Set: domains changed in the current flush epoch."""
        return f"{self.base}:changed"

    @cached_property
    def flushing(self) -> str:
        """Set: the closing flush epoch's domains not yet copied into `snap` (the old
        `changed`, renamed when the flusher closed the epoch)."""
        return f"{self.base}:flushing"

    @cached_property
    def snap(self) -> str:
        """Hash: domain → its hash as at the closing epoch's start (copied on first write)."""
        return f"{self.base}:snap"

    @cached_property
    def epoch_acks(self) -> str:
        """Hash: worker id → last seq applied in the current flush epoch."""
        return f"{self.base}:epochacks"

    @cached_property
    def flush_acks(self) -> str:
        """Hash: worker id → last seq applied in the closing epoch (renamed `epoch_acks`)."""
        return f"{self.base}:flushacks"

    @cached_property
    def flush_state(self) -> str:
        """Hash: ``fence`` (the token of the flusher that owns the closing epoch), ``at``;
        present exactly while an epoch is closing."""
        return f"{self.base}:flushstate"

    @cached_property
    def totals(self) -> str:
        """Hash: the shard's sums of every counter and histogram bucket (kept by pushes)."""
        return f"{self.base}:totals"

    @cached_property
    def top_failures(self) -> str:
        """Sorted set: domain → failures, the shard's most failing domains (bounded)."""
        return f"{self.base}:top:failures"

    @cached_property
    def top_latency(self) -> str:
        """Sorted set: domain → mean latency (ms), the shard's slowest domains (bounded)."""
        return f"{self.base}:top:latency"

    @cached_property
    def top_queued(self) -> str:
        """Sorted set: domain → queued messages, the shard's largest backlogs (bounded)."""
        return f"{self.base}:top:queued"

    @cached_property
    def hydrated(self) -> str:
        """String: present once the shard holds PostgreSQL's totals (G6)."""
        return f"{self.base}:hydrated"

    @cached_property
    def hydrating(self) -> str:
        """Hash: progress of a chunked hydration of this shard."""
        return f"{self.base}:hydrating"

    @cached_property
    def acks(self) -> str:
        """Hash: worker id → last applied push sequence number (G2)."""
        return f"{self.base}:acks"

    @cached_property
    def ack_seen(self) -> str:
        """Sorted set: worker id → unix seconds of its last applied push (for pruning)."""
        return f"{self.base}:ackseen"

    @cached_property
    def leases(self) -> str:
        """Sorted set: worker id → lease expiry (unix milliseconds) (G8)."""
        return f"{self.base}:leases"

    @cached_property
    def health(self) -> str:
        """Hash: domain → health record of a failing domain (healthy ones have none)."""
        return f"{self.base}:health"

    @cached_property
    def held(self) -> str:
        """Sorted set: domain → next attempt (unix ms); exactly the domains not healthy
        (backoff or unavailable)."""
        return f"{self.base}:held"

    @cached_property
    def health_meta(self) -> str:
        """Hash: ``rev`` (bumped with every change to `held`), ``n:backoff``,
        ``n:unavailable`` (domains in each state)."""
        return f"{self.base}:healthmeta"

    @cached_property
    def health_events(self) -> str:
        """Stream: one entry per health state change, trimmed by time."""
        return f"{self.base}:healthevents"

    @cached_property
    def health_feed(self) -> str:
        """Pub/sub channel of changes to `held` (sharded on Cluster)."""
        return f"{self.base}:healthfeed"

    def lease(self, worker_id: str) -> str:
        """Hash: domain → this worker's in-flight message count."""
        return f"{self.base}:lease:{worker_id}"

    @cached_property
    def series_minutes(self) -> str:
        """Hash: ``<minute>:<i>`` → the shard's sum of counter i (1-9, `history.COUNTERS`)
        in that 1-minute bucket, plus ``last`` (newest minute); kept a few hours, until
        the flusher leader has added it to `NamespaceKeys.history_minutes`."""
        return f"{self.base}:series:m1"

    @cached_property
    def series_closed(self) -> str:
        """Hash: ``<bucket>|<domain>`` → the domain's nine counts in that finished 5-minute
        bucket, waiting for the flusher leader to keep them (caps) or drop them."""
        return f"{self.base}:series:closed"

    @cached_property
    def series_swept(self) -> str:
        """String: the newest 5-minute bucket of the shard the leader has closed."""
        return f"{self.base}:series:swept"

    def domain_day(self, domain: str, day: int) -> str:
        """String: the domain's kept 5-minute buckets of one UTC day (``day`` = unix
        seconds // 86400), records ``<bucket of the day, 0-287>|<nine counts>;`` appended
        by the flusher leader; expires 7 days after the day ends."""
        return f"{self.base}:s:{domain}:{day}"

    def lease_ages(self, worker_id: str) -> str:
        """Hash: ``<domain>|<column>`` → this worker's in-flight messages of that age
        (columns 1…9 of `ages.COLUMNS` after T, 5 minutes or more; only counts > 0)."""
        return f"{self.base}:lease:{worker_id}:ages"

    @cached_property
    def qshape(self) -> str:
        """Hash: ``<domain>|<column>`` → the live workers' in-flight messages of that age,
        summed (columns 1…9; only sums > 0). Column 0 is T minus these."""
        return f"{self.base}:qshape"

    @cached_property
    def qshape_top(self) -> str:
        """Sorted set: domain → its ``queued_messages`` (T, the in-flight messages), exactly
        the domains with T > 0 (push.lua and lease_release.lua keep it beside the gauge)."""
        return f"{self.base}:qshape:top"

    @cached_property
    def qshape_total(self) -> str:
        """Hash: age column index (``1`` … ``9``) → the shard's in-flight messages of that
        age (column 0 is the shard's ``queued_messages`` minus these)."""
        return f"{self.base}:qshape:total"

    def fixed(self) -> tuple[str, ...]:
        """Every key of the shard whose name does not depend on a domain or a worker."""
        return (
            self.active,
            self.changed,
            self.hydrated,
            self.hydrating,
            self.acks,
            self.ack_seen,
            self.leases,
            self.flushing,
            self.snap,
            self.epoch_acks,
            self.flush_acks,
            self.flush_state,
            self.totals,
            self.top_failures,
            self.top_latency,
            self.top_queued,
            self.health,
            self.held,
            self.health_meta,
            self.health_events,
            self.series_minutes,
            self.series_closed,
            self.series_swept,
            self.qshape,
            self.qshape_top,
            self.qshape_total,
            # written only under schema version 2's tags
            *(f"{self.base}:series:{name}" for name in ("base", "seen", "m5") if self.schema == 2),
        )


@dataclass(frozen=True)
class NamespaceKeys:
    """Entry point: every key and channel of one namespace."""

    namespace: str
    #: The key schema version of the shard keys (2 only to retire those, `upgrade`); the
    #: namespace-level keys (policy, history, flusher lock) are the same in both.
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        validate_namespace(self.namespace)

    @cached_property
    def shards(self) -> tuple[ShardKeys, ...]:
        return tuple(ShardKeys(self.namespace, index, self.schema) for index in range(SHARDS))

    def shard_for(self, domain: str) -> ShardKeys:
        return self.shards[shard_of(domain)]

    @cached_property
    def policy_tag(self) -> str:
        return f"{PREFIX}:{{{self.namespace}:policy}}"

    @cached_property
    def rules(self) -> str:
        """Hash: domain → created_at (unix seconds)."""
        return f"{self.policy_tag}:rules"

    @cached_property
    def policy_meta(self) -> str:
        """Hash: ``version``, ``policy`` (ACCEPT/REJECT), ``enabled`` (1/0), ``database_id``."""
        return f"{self.policy_tag}:meta"

    def rules_staging(self, token: str) -> str:
        """Hash: a snapshot's rules on their way in, before one call swaps them in."""
        validate_worker_id(token)
        return f"{self.policy_tag}:staging:{token}"

    @cached_property
    def policy_channel(self) -> str:
        """Pub/sub channel of policy changes (JSON messages, see docs/redis-keys.md)."""
        return f"{self.policy_tag}:changes"

    @cached_property
    def health_policy(self) -> str:
        """String: the namespace's `HealthPolicy` (JSON), stored by the first process that
        passes one explicitly."""
        return f"{self.policy_tag}:health"

    @cached_property
    def history_tag(self) -> str:
        return f"{PREFIX}:{{{self.namespace}:history}}"

    @cached_property
    def history_minutes(self) -> str:
        """Hash: ``<minute>`` → the cluster's nine counts in that 1-minute bucket (comma
        separated; absent when all zero), plus ``upto`` (newest minute added); 48 hours."""
        return f"{self.history_tag}:m1"

    @cached_property
    def history_fives(self) -> str:
        """Hash: ``<bucket>`` → the cluster's nine counts in that 5-minute bucket, plus
        ``upto``; 7 days."""
        return f"{self.history_tag}:m5"

    @cached_property
    def watched(self) -> str:
        """Set: the domains an operator watches (their history is always kept)."""
        return f"{self.history_tag}:watched"

    @cached_property
    def flusher_lock(self) -> str:
        """String: random token of the flusher leader, with a TTL."""
        return f"{PREFIX}:{{{self.namespace}:flusher}}:lock"
