"""Cluster-wide reads of the per-domain stats in Redis, for the tracker, the CLI and the API.

Domains are listed from the per-shard activity indexes (never ``KEYS``/``SCAN``), merged
most recent first, and their hashes fetched in pipelined pages.
"""

from __future__ import annotations

from typing import Any, cast

import redis
from redis.cluster import RedisCluster

from .domain import normalize_domain
from .engine import RedisEngine
from .errors import BackendUnavailableError
from .keys import NamespaceKeys, ShardKeys
from .stats import ServerStat

#: Hashes fetched per pipeline round trip.
READ_PAGE = 1000


def read_all(
    engine: RedisEngine | redis.Redis, keys: NamespaceKeys, limit: int | None = None
) -> list[ServerStat]:
    """Every domain (or the `limit` most recently active), most recently active first."""
    engine = RedisEngine.wrap(engine)
    stop = -1 if limit is None else max(limit - 1, 0)
    try:
        ranked = engine.per_shard(
            keys.shards, lambda pipe, shard: pipe.zrevrange(shard.active, 0, stop, withscores=True)
        )
        entries: list[tuple[float, str, ShardKeys]] = [
            (score, domain, shard)
            for shard, (members,) in zip(keys.shards, ranked, strict=True)
            for domain, score in members
        ]
        entries.sort(key=lambda entry: (-entry[0], entry[1]))
        if limit is not None:
            entries = entries[:limit]
        return read_hashes(engine, [(domain, shard) for _score, domain, shard in entries])
    except redis.RedisError as exc:
        raise BackendUnavailableError(f"reading the stats: {exc}") from exc


def read_hashes(engine: RedisEngine, domains: list[tuple[str, ShardKeys]]) -> list[ServerStat]:
    """The stats of (domain, shard) pairs, in order; domains without a hash are left out."""
    stats: list[ServerStat] = []
    for start in range(0, len(domains), READ_PAGE):
        page = domains[start : start + READ_PAGE]
        fetched: dict[str, dict[str, str]] = {}
        for client, group in engine.by_node(page, lambda item: item[1].base):
            with client.pipeline(transaction=False) as pipe:
                for domain, shard in group:
                    pipe.hgetall(shard.domain(domain))
                hashes: list[dict[str, str]] = pipe.execute()
            fetched.update(
                (domain, fields) for (domain, _shard), fields in zip(group, hashes, strict=True)
            )
        stats.extend(
            ServerStat.from_hash(domain, fetched[domain]) for domain, _ in page if fetched[domain]
        )
    return stats


def read_one(
    engine: RedisEngine | redis.Redis, keys: NamespaceKeys, domain: str
) -> ServerStat | None:
    """One domain's stats (any spelling; `InvalidDomainError` for a bad name), None if unknown."""
    engine = RedisEngine.wrap(engine)
    name = normalize_domain(domain)
    key = keys.shard_for(name).domain(name)
    try:
        fields = cast(dict[str, str], engine.node_for(key).hgetall(key))
    except redis.RedisError as exc:
        raise BackendUnavailableError(f"reading the stats of {name}: {exc}") from exc
    return ServerStat.from_hash(name, fields) if fields else None


def count_domains(engine: RedisEngine | redis.Redis, keys: NamespaceKeys) -> int:
    """How many domains the namespace tracks (sum of the activity index sizes)."""
    engine = RedisEngine.wrap(engine)
    try:
        replies = engine.per_shard(keys.shards, lambda pipe, shard: pipe.zcard(shard.active))
        return sum(int(reply[0]) for reply in replies)
    except redis.RedisError as exc:
        raise BackendUnavailableError(f"counting domains: {exc}") from exc


class StatsReader:
    """Read-only access to a namespace's stats, for dashboards and operator tools."""

    def __init__(
        self, redis: str | redis.Redis | RedisCluster, *, namespace: str = "default"
    ) -> None:
        self.keys = NamespaceKeys(namespace)
        self.engine = RedisEngine.open(redis)

    def get_all(self, limit: int | None = None) -> list[ServerStat]:
        return read_all(self.engine, self.keys, limit)

    def get(self, domain: str) -> ServerStat | None:
        return read_one(self.engine, self.keys, domain)

    def count(self) -> int:
        return count_domains(self.engine, self.keys)

    def ping(self) -> bool:
        return self.engine.ping()

    def status(self) -> dict[str, Any]:
        """The engine's nodes and replication state (see `RedisEngine.status`)."""
        return self.engine.status()

    def close(self) -> None:
        self.engine.close()
