"""The cluster-wide queue shape (Postfix's ``qshape`` across every worker): reads.

Workers report their in-flight messages per age column with their leases (`ages`,
push.lua). T, a domain's in-flight messages, is its ``queued_messages`` (the G8 gauge),
which push.lua mirrors into each shard's ``qshape:top`` index (exactly the domains with
T > 0); the columns from 5 minutes on are the live workers' sums per domain and column
(``qshape``, fields ``<domain>|<column>``) and per shard (``qshape:total``); the first
column is T minus those. A read therefore never scans: the `top` largest T of each shard
(and, when a shard's cut falls inside a run of equal T, the first names of that run),
merged; then those domains' columns, the 16 column totals and the 16 ``queued_messages``
totals. Each Redis call is O(log n + top) whatever the number of domains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from .ages import AGE_COLUMNS, COLUMNS
from .engine import RedisEngine
from .errors import BackendUnavailableError, InvalidValueError
from .keys import NamespaceKeys, ShardKeys

#: Most rows one qshape read returns.
MAX_TOP = 1000
DEFAULT_TOP = 20


@dataclass(frozen=True)
class QShape:
    """One qshape read: `rows` (domain, then T and the ten column counts), largest T first,
    ties by name; `total` the same eleven counts over every domain."""

    rows: list[tuple[str, list[int]]]
    total: list[int]

    def to_dict(self) -> dict[str, Any]:
        """The API's shape: ``columns``, ``rows`` ({domain, counts}), ``total``."""
        return {
            "columns": list(COLUMNS),
            "rows": [{"domain": domain, "counts": counts} for domain, counts in self.rows],
            "total": self.total,
        }


def validate_top(top: object) -> int:
    """`top` unchanged when it is an int in [1, MAX_TOP], else `InvalidValueError`."""
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOP:
        raise InvalidValueError(f"top must be a whole number from 1 to {MAX_TOP}, got {top!r}")
    return top


def shape_row(t: int, older: list[int]) -> list[int]:
    """T and the ten columns from T and the columns from 5 minutes on: the first column
    is what T holds beyond them (never below 0; T then grows to the sum of the columns,
    for a moment where the ages arrived before the count they belong to)."""
    young = max(t - sum(older), 0)
    return [young + sum(older), young, *older]


def read_qshape(
    engine: RedisEngine | redis.Redis, keys: NamespaceKeys, top: int = DEFAULT_TOP
) -> QShape:
    """The `top` domains with the most in-flight messages and the cluster's totals.

    Raises `InvalidValueError` for a bad `top`, `BackendUnavailableError` when Redis
    does not answer.
    """
    top = validate_top(top)
    engine = RedisEngine.wrap(engine)
    try:
        replies = engine.per_shard(
            keys.shards,
            lambda pipe, shard: (
                pipe.zrevrange(shard.qshape_top, 0, top - 1, withscores=True),
                pipe.hgetall(shard.qshape_total),
                pipe.hget(shard.totals, "queued_messages"),
            ),
        )
        ranked: list[tuple[int, str, ShardKeys]] = []
        older_total = [0] * (AGE_COLUMNS - 1)
        queued = 0
        full: list[ShardKeys] = []
        for shard, (members, sums, shard_queued) in zip(keys.shards, replies, strict=True):
            ranked += [(int(score), str(domain), shard) for domain, score in members]
            if len(members) == top:
                full.append(shard)
            queued += int(shard_queued or 0)
            for column, count in sums.items():
                k = int(column)
                if 1 <= k < AGE_COLUMNS:
                    older_total[k - 1] += int(count)
        ranked.sort(key=lambda entry: (-entry[0], entry[1]))
        if full and len(ranked) >= top:
            ranked = _with_ties(engine, ranked, full, top)
        chosen = ranked[:top]
        columns = _columns(engine, [(domain, shard) for _t, domain, shard in chosen])
    except redis.RedisError as exc:
        raise BackendUnavailableError(f"reading the queue shape: {exc}") from exc
    rows = [
        (domain, shape_row(t, older))
        for (t, domain, _s), older in zip(chosen, columns, strict=True)
    ]
    rows.sort(key=lambda row: (-row[1][0], row[0]))
    return QShape(rows=rows, total=shape_row(queued, older_total))


def _with_ties(
    engine: RedisEngine,
    ranked: list[tuple[int, str, ShardKeys]],
    full: list[ShardKeys],
    top: int,
) -> list[tuple[int, str, ShardKeys]]:
    """Ties by name across the cut: a shard that returned `top` members may hold more of
    the last T kept than it returned (Redis orders equal scores by reverse name); ask
    those shards for the first names of that T, in name order."""
    last = ranked[top - 1][0]
    asked = [shard for shard in full if any(t == last and s is shard for t, _d, s in ranked)]
    if not asked:
        return ranked
    replies = engine.per_shard(
        asked, lambda pipe, shard: pipe.zrangebyscore(shard.qshape_top, last, last, 0, top)
    )
    seen = {(domain, shard.shard) for _t, domain, shard in ranked}
    for shard, (members,) in zip(asked, replies, strict=True):
        ranked += [
            (last, str(domain), shard)
            for domain in members
            if (str(domain), shard.shard) not in seen
        ]
    ranked.sort(key=lambda entry: (-entry[0], entry[1]))
    return ranked


def _columns(engine: RedisEngine, domains: list[tuple[str, ShardKeys]]) -> list[list[int]]:
    """Each domain's columns from 5 minutes on, in order (one HMGET per shard, one
    pipeline per node)."""
    by_shard: dict[int, list[str]] = {}
    shards: dict[int, ShardKeys] = {}
    for domain, shard in domains:
        by_shard.setdefault(shard.shard, []).append(domain)
        shards[shard.shard] = shard
    if not by_shard:
        return []
    asked = [shards[index] for index in by_shard]
    fields = {
        index: [f"{domain}|{k}" for domain in names for k in range(1, AGE_COLUMNS)]
        for index, names in by_shard.items()
    }
    replies = engine.per_shard(
        asked, lambda pipe, shard: pipe.hmget(shard.qshape, fields[shard.shard])
    )
    found: dict[tuple[int, str], list[int]] = {}
    width = AGE_COLUMNS - 1
    for shard, (values,) in zip(asked, replies, strict=True):
        for n, domain in enumerate(by_shard[shard.shard]):
            found[shard.shard, domain] = [
                max(int(value), 0) if value else 0 for value in values[n * width : (n + 1) * width]
            ]
    return [found[shard.shard, domain] for domain, shard in domains]
