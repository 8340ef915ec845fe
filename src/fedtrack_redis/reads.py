"""Cluster-wide reads of the per-domain stats in Redis, for the tracker, the CLI and the API.

Domains are listed from the per-shard indexes (never ``KEYS``/``SCAN``) and their hashes
fetched in pipelined pages, one pipeline per node. Pages and the cluster's totals cost the
same at a million domains as at a hundred: `page` reads each shard's index (activity, or
the bounded top lists of failures, latency and backlog, `tops`) as one merged order
(`ranked`), only as deep as the page,
and `totals` adds up the 16 per-shard totals hashes. Only `read_all` (the tracker's
`get_all`, for small namespaces and tests) reads every domain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any, cast

import redis
import sqlalchemy as sa
from redis.cluster import RedisCluster

from . import history
from .chunk import TOP_SIZE
from .connections import database_engine
from .domain import normalize_domain
from .engine import RedisEngine
from .errors import BackendUnavailableError, ConfigurationError
from .history import HistoryBucket, read_history
from .keys import NamespaceKeys, ShardKeys
from .qshape import QShape, read_qshape
from .ranked import FIRST_CHUNK, LARGEST_CHUNK, Budget, walk
from .stats import HASH_FIELDS, ServerStat
from .tops import score_pairs

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


#: Sort orders of `page` and the index each reads.
INDEXES = {
    "activity": "active",
    "failures": "top_failures",
    "latency": "top_latency",
    "queued": "top_queued",
}
#: Deepest page (offset + limit) of an order read from a bounded top list.
TOP_DEPTH = TOP_SIZE
#: Deepest page of the activity order (its cost grows with the depth).
ACTIVITY_DEPTH = 10_000
#: Matches of a name search counted at most; a filter matching more is paged from its
#: order's index (`StatsReader.matching`).
SEARCH_CAP = 10_000
#: Entries of an index a name search reads at most before the database pages it.
SEARCH_WALK = 10_000


def top(
    engine: RedisEngine,
    keys: NamespaceKeys,
    order: str,
    depth: int,
    per_shard: int,
) -> list[tuple[str, float, ShardKeys]]:
    """The `depth` first (domain, score, shard) of an order, merged across shards from
    the first `per_shard` of each shard (one round trip per node: the anomalies'
    candidates, where a shard's cut need not be exact)."""
    index = INDEXES[order]
    replies = engine.per_shard(
        keys.shards,
        lambda pipe, shard: pipe.execute_command(
            "ZREVRANGE", getattr(shard, index), 0, per_shard - 1, "WITHSCORES"
        ),
    )
    # (-score, domain) sorts as the order does; a domain lives in one shard, so the
    # shard itself is never compared
    merged = [
        (-score, domain, shard)
        for shard, (reply,) in zip(keys.shards, replies, strict=True)
        for domain, score in score_pairs(reply)
    ]
    merged.sort()
    return [(domain, -negated, shard) for negated, domain, shard in merged[:depth]]


def in_order(
    engine: RedisEngine,
    keys: NamespaceKeys,
    order: str,
    depth: int,
    largest: int = LARGEST_CHUNK,
    *,
    keep: Callable[[str], bool] | None = None,
    budget: Budget | None = None,
    complete: bool = True,
) -> Iterator[tuple[str, float, ShardKeys]]:
    """An order's entries, highest score first and equal scores by name, read lazily
    (`ranked.walk`: `keep`, `budget`, `complete`); the first round reads about twice a
    shard's share of `depth`, at most `largest` a shard."""
    index = INDEXES[order]
    first = min(largest, max(FIRST_CHUNK, 2 * depth // len(keys.shards) + 1))
    return walk(
        engine,
        keys.shards,
        lambda shard: str(getattr(shard, index)),
        first,
        largest,
        keep=keep,
        budget=budget,
        complete=complete,
    )


def page(
    engine: RedisEngine | redis.Redis,
    keys: NamespaceKeys,
    order: str = "activity",
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[ServerStat], int]:
    """One page of domains in `order` and how many domains the order holds.

    Raises `ValueError` for an unknown order or a page deeper than the order's index
    keeps (`TOP_DEPTH` for failures, latency and queued; `ACTIVITY_DEPTH` for activity).
    """
    engine = RedisEngine.wrap(engine)
    if order not in INDEXES:
        raise ValueError(f"unknown order {order!r}: expected one of {', '.join(INDEXES)}")
    deepest = ACTIVITY_DEPTH if order == "activity" else TOP_DEPTH
    if offset + limit > deepest:
        raise ValueError(
            f"a page by {order} reaches {deepest:,} domains at most (offset + limit);"
            " filter by name, or page by activity"
        )
    try:
        entries = list(
            islice(in_order(engine, keys, order, offset + limit), offset, offset + limit)
        )
        stats = read_hashes(engine, [(domain, shard) for domain, _score, shard in entries])
        index = INDEXES[order]
        sizes = engine.per_shard(keys.shards, lambda pipe, s: pipe.zcard(getattr(s, index)))
    except redis.RedisError as exc:
        raise BackendUnavailableError(f"reading the stats: {exc}") from exc
    return stats, sum(int(size[0]) for size in sizes)


def totals(engine: RedisEngine | redis.Redis, keys: NamespaceKeys) -> dict[str, int]:
    """The cluster's sums of every counter and histogram bucket, and ``domains``: 32
    constant-time reads whatever the number of domains."""
    engine = RedisEngine.wrap(engine)
    try:
        replies = engine.per_shard(
            keys.shards, lambda pipe, shard: (pipe.hgetall(shard.totals), pipe.zcard(shard.active))
        )
    except redis.RedisError as exc:
        raise BackendUnavailableError(f"reading the totals: {exc}") from exc
    summed: dict[str, int] = {name: 0 for name in HASH_FIELDS if name != "last_active"}
    summed["domains"] = 0
    for fields, size in replies:
        summed["domains"] += int(size)
        for name, value in fields.items():
            summed[name] = summed.get(name, 0) + int(value)
    return summed


class StatsReader:
    """Read-only access to a namespace's stats, for dashboards and operator tools."""

    def __init__(
        self,
        redis: str | redis.Redis | RedisCluster,
        *,
        namespace: str = "default",
        database: str | sa.Engine | None = None,
    ) -> None:
        self.keys = NamespaceKeys(namespace)
        self.engine = RedisEngine.open(redis)
        self._database_source = database
        self._database: sa.Engine | None = None

    def get_all(self, limit: int | None = None) -> list[ServerStat]:
        return read_all(self.engine, self.keys, limit)

    def page(
        self, order: str = "activity", limit: int = 100, offset: int = 0
    ) -> tuple[list[ServerStat], int]:
        """See `page`: one page of domains in `order`, and the order's size."""
        return page(self.engine, self.keys, order, limit, offset)

    def totals(self) -> dict[str, int]:
        """See `totals`."""
        return totals(self.engine, self.keys)

    def qshape(self, top: int = 20) -> QShape:
        """See `qshape.read_qshape`: the largest queues by age, and the totals."""
        return read_qshape(self.engine, self.keys, top)

    def search(
        self,
        text: str,
        limit: int,
        offset: int = 0,
        *,
        cap: int = SEARCH_CAP,
        order: str = "domain",
    ) -> tuple[list[str], int]:
        """Domains by name (`store.search`): the page of names in `order` (``domain``,
        ``activity``, ``failures``, ``latency``, ``queued``), and how many match (at most
        `cap`). Needs the reader's ``database``.

        The database counts the matches and, for up to `cap` of them, sorts and pages
        them. A filter that matches more than `cap` (``mail``, a large provider's domain)
        is paged from its order's index instead (`matching`; not for ``domain``): so
        broad a filter fills a page within the first few thousand entries, where the
        database would sort every match (at a million domains, a label suffix of 77,000
        of them took 195 ms that way, reading most of the table, and 6 ms from the
        index). Where the index cannot tell (the page lies deeper than the walk's budget,
        or past a top list), the database pages it after all."""
        from .store import search

        if self._database_source is None:
            raise ConfigurationError("searching names needs the database (FEDTRACK_DATABASE_URL)")
        if self._database is None:
            self._database = database_engine(self._database_source, pooled=False)
        try:
            total = search.count_domains(self._database, text, cap)
            names = None
            if text and order in INDEXES and total >= cap:
                names = self.matching(order, search.name_filter(text), limit, offset)
            if names is None:
                names = search.find_domains(self._database, text, limit, offset, order)
            return names, total
        except sa.exc.DBAPIError as exc:
            raise BackendUnavailableError(f"searching names ({type(exc.orig).__name__})") from exc

    def matching(
        self, order: str, value: str, limit: int, offset: int = 0, budget: int = SEARCH_WALK
    ) -> list[str] | None:
        """The page of domains matching the filter `value` (`store.search.matches`) in
        `order` (a key of `INDEXES`; ties by name), from that order's index (`ranked`).
        None when the page needs more than `budget` entries of it, or (top lists: they
        hold each shard's best 1,000 only) reaches past a shard's list: the database
        then sorts the matches."""
        from .store.search import matches

        within = Budget(limit=budget)
        # chunks of at most half a shard's share, so that the walk stops near its budget
        largest = max(FIRST_CHUNK, budget // (2 * len(self.keys.shards)))
        found: list[str] = []
        try:
            entries = in_order(
                self.engine,
                self.keys,
                order,
                offset + limit,
                largest,
                keep=lambda domain: matches(domain, value),
                budget=within,
                complete=order == "activity",
            )
            for domain, _score, _shard in entries:
                if within.exhausted:
                    return None
                found.append(domain)
                if len(found) == offset + limit:
                    break
        except redis.RedisError as exc:
            raise BackendUnavailableError(f"reading the {order} index: {exc}") from exc
        return None if within.exhausted and len(found) < offset + limit else found[offset:]

    def named(self, domains: list[str]) -> list[ServerStat]:
        """The stats of these (normalized) domains, in order; unknown ones left out."""
        pairs = [(domain, self.keys.shard_for(domain)) for domain in domains]
        try:
            return read_hashes(self.engine, pairs)
        except redis.RedisError as exc:
            raise BackendUnavailableError(f"reading the stats: {exc}") from exc

    def get(self, domain: str) -> ServerStat | None:
        return read_one(self.engine, self.keys, domain)

    def count(self) -> int:
        return count_domains(self.engine, self.keys)

    def history(self, domain: str | None = None, window: str = "1h") -> list[HistoryBucket]:
        """See `history.read_history`: the cluster's or one domain's series."""
        return read_history(self.engine, self.keys, domain, window)

    def watch(self, domain: str) -> bool:
        """See `history.watch`."""
        return history.watch(self.engine, self.keys, domain)

    def unwatch(self, domain: str) -> bool:
        """See `history.unwatch`."""
        return history.unwatch(self.engine, self.keys, domain)

    def watched(self) -> list[str]:
        """See `history.watched`."""
        return history.watched(self.engine, self.keys)

    def ping(self) -> bool:
        return self.engine.ping()

    def status(self) -> dict[str, Any]:
        """The engine's nodes and replication state (see `RedisEngine.status`)."""
        return self.engine.status()

    def close(self) -> None:
        self.engine.close()
        if self._database is not None and not isinstance(self._database_source, sa.Engine):
            self._database.dispose()
