"""Cluster-wide reads of the per-domain stats in Redis, for the tracker, the CLI and the API.

Domains are listed from the per-shard activity indexes (never ``KEYS``/``SCAN``), merged
most recent first, and their hashes fetched in pipelined pages.
"""

from __future__ import annotations

from typing import cast

import redis
from redis import Redis

from .connections import redis_client
from .domain import normalize_domain
from .errors import BackendUnavailableError
from .keys import NamespaceKeys, ShardKeys
from .stats import ServerStat

#: Hashes fetched per pipeline round trip.
READ_PAGE = 1000


def read_all(
    client: redis.Redis, keys: NamespaceKeys, limit: int | None = None
) -> list[ServerStat]:
    """Every domain (or the `limit` most recently active), most recently active first."""
    try:
        with client.pipeline(transaction=False) as pipe:
            for shard in keys.shards:
                stop = -1 if limit is None else max(limit - 1, 0)
                pipe.zrevrange(shard.active, 0, stop, withscores=True)
            ranked: list[list[tuple[str, float]]] = pipe.execute()
        entries: list[tuple[float, str, ShardKeys]] = [
            (score, domain, shard)
            for shard, members in zip(keys.shards, ranked, strict=True)
            for domain, score in members
        ]
        entries.sort(key=lambda entry: (-entry[0], entry[1]))
        if limit is not None:
            entries = entries[:limit]
        stats: list[ServerStat] = []
        for start in range(0, len(entries), READ_PAGE):
            page = entries[start : start + READ_PAGE]
            with client.pipeline(transaction=False) as pipe:
                for _score, domain, shard in page:
                    pipe.hgetall(shard.domain(domain))
                hashes: list[dict[str, str]] = pipe.execute()
            stats.extend(
                ServerStat.from_hash(domain, fields)
                for (_score, domain, _shard), fields in zip(page, hashes, strict=True)
                if fields
            )
    except redis.RedisError as exc:
        raise BackendUnavailableError(f"reading the stats: {exc}") from exc
    return stats


def read_one(client: redis.Redis, keys: NamespaceKeys, domain: str) -> ServerStat | None:
    """One domain's stats (any spelling; `InvalidDomainError` for a bad name), None if unknown."""
    name = normalize_domain(domain)
    try:
        fields = cast(dict[str, str], client.hgetall(keys.shard_for(name).domain(name)))
    except redis.RedisError as exc:
        raise BackendUnavailableError(f"reading the stats of {name}: {exc}") from exc
    return ServerStat.from_hash(name, fields) if fields else None


def count_domains(client: redis.Redis, keys: NamespaceKeys) -> int:
    """How many domains the namespace tracks (sum of the activity index sizes)."""
    try:
        with client.pipeline(transaction=False) as pipe:
            for shard in keys.shards:
                pipe.zcard(shard.active)
            return sum(int(n) for n in pipe.execute())
    except redis.RedisError as exc:
        raise BackendUnavailableError(f"counting domains: {exc}") from exc


class StatsReader:
    """Read-only access to a namespace's stats, for dashboards and operator tools."""

    def __init__(self, redis: str | Redis, *, namespace: str = "default") -> None:
        self.keys = NamespaceKeys(namespace)
        self._client = redis_client(redis)

    def get_all(self, limit: int | None = None) -> list[ServerStat]:
        return read_all(self._client, self.keys, limit)

    def get(self, domain: str) -> ServerStat | None:
        return read_one(self._client, self.keys, domain)

    def count(self) -> int:
        return count_domains(self._client, self.keys)

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self._client.close()
