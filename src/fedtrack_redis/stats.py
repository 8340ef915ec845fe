"""`ServerStat` and the fixed log-scale latency histogram, as stored in Redis.

The histogram is fixed (documented in ``docs/redis-keys.md``) so that every worker, the
flusher, PostgreSQL and any dashboard can add bucket counts together without
coordination: a worker only ever sends ``h<bucket> += count``. Four buckets per doubling
bound the relative error of a percentile, reported as its bucket's geometric midpoint, by
``2^(1/8) - 1`` (about 9.05 %) for latencies between 1 ms and about 7.8 hours.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

#: Buckets per doubling of the latency.
BUCKETS_PER_DOUBLING = 4
#: Highest bucket; it also holds every longer latency.
MAX_BUCKET = 100
#: Relative error bound of a percentile for latencies in [1 ms, 2^(99/4) ms).
RELATIVE_ERROR = 2 ** (1 / (2 * BUCKETS_PER_DOUBLING)) - 1

#: Counter fields of a domain hash, in the order push.lua receives them.
COUNTER_FIELDS: tuple[str, ...] = (
    "failed_http",
    "failed_https",
    "failed_smtp",
    "success_http",
    "success_https",
    "success_smtp",
    "successful_deliveries",
    "inbound_deliveries",
    "total_latency_ms",
)
#: Every integer field of `ServerStat` read from a domain hash (histogram aside).
HASH_FIELDS: tuple[str, ...] = ("queued_messages", *COUNTER_FIELDS, "last_active")
#: The JSON names of `ServerStat` (docs/redis-keys.md), in order.
JSON_FIELDS: tuple[str, ...] = ("domain", *HASH_FIELDS)
#: The domain hash's field of each of `HASH_FIELDS` (key schema version 3): one or two
#: letters, because a domain's hash is the largest part of its memory in Redis and the
#: long names were a third of it (docs/redis-keys.md). Shard totals keep the long names.
FIELD_OF: dict[str, str] = {
    "queued_messages": "q",
    "failed_http": "fh",
    "failed_https": "fs",
    "failed_smtp": "fm",
    "success_http": "sh",
    "success_https": "ss",
    "success_smtp": "sm",
    "successful_deliveries": "d",
    "inbound_deliveries": "i",
    "total_latency_ms": "l",
    "last_active": "a",
}
#: The hash fields of `COUNTER_FIELDS`, in the same order.
COUNTER_HASH_FIELDS: tuple[str, ...] = tuple(FIELD_OF[name] for name in COUNTER_FIELDS)

PERCENTILES = (50, 95, 99)


def bucket_of(latency_ms: float) -> int:
    """Histogram bucket of one latency: 0 below 1 ms, else ``floor(4·log2(ms)) + 1`` (≤ 100)."""
    if latency_ms < 1:
        return 0
    bucket = int(math.log2(latency_ms) * BUCKETS_PER_DOUBLING) + 1
    return bucket if bucket < MAX_BUCKET else MAX_BUCKET


def bucket_midpoint(bucket: int) -> float:
    """The value a percentile falling in `bucket` is reported as (its geometric midpoint)."""
    if bucket <= 0:
        return 0.5
    return float(2 ** ((bucket - 0.5) / BUCKETS_PER_DOUBLING))


def percentile(buckets: Mapping[int, int], p: int) -> float:
    """Percentile `p` (0 < p ≤ 100) of a histogram, nearest rank; 0.0 when it is empty.

    The rank is ``ceil(p/100 · total)``; the answer is the midpoint of the bucket where the
    running count first reaches it.
    """
    total = sum(count for count in buckets.values() if count > 0)
    if total <= 0:
        return 0.0
    rank = -(-p * total // 100)
    running = 0
    for bucket in sorted(buckets):
        count = buckets[bucket]
        if count <= 0:
            continue
        running += count
        if running >= rank:
            return bucket_midpoint(bucket)
    return bucket_midpoint(max(buckets))  # pragma: no cover - unreachable: running == total


def histogram_of(fields: Mapping[str, str]) -> dict[int, int]:
    """The ``h<b>`` fields of a domain hash as ``{bucket: count}`` (malformed ones skipped)."""
    buckets: dict[int, int] = {}
    for name, value in fields.items():
        if name[:1] == "h" and name[1:].isdigit():
            try:
                buckets[int(name[1:])] = int(value)
            except ValueError:
                continue
    return buckets


def _int(fields: Mapping[str, str], name: str) -> int:
    value = fields.get(name)
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        return int(float(value))


@dataclass
class ServerStat:
    """Delivery diagnostics of one domain, cluster-wide: the JSON fields of
    docs/redis-keys.md, plus summaries.

    ``last_active`` is unix seconds (the Redis server's clock at the push that last touched
    the domain), as in the original ``ServerStat``. ``mean_latency_ms`` averages every
    success, inbound included; the percentiles cover outbound successes only.
    """

    domain: str
    queued_messages: int = 0
    failed_http: int = 0
    failed_https: int = 0
    failed_smtp: int = 0
    success_http: int = 0
    success_https: int = 0
    success_smtp: int = 0
    successful_deliveries: int = 0
    inbound_deliveries: int = 0
    total_latency_ms: int = 0
    last_active: int = 0
    mean_latency_ms: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0

    @classmethod
    def from_hash(cls, domain: str, fields: Mapping[str, str]) -> ServerStat:
        """Build from a domain hash as ``HGETALL`` returns it (fields named by `FIELD_OF`;
        missing ones are 0)."""
        values = {name: _int(fields, FIELD_OF[name]) for name in HASH_FIELDS}
        successes = values["successful_deliveries"]
        mean = values["total_latency_ms"] / successes if successes > 0 else 0.0
        buckets = histogram_of(fields)
        p50, p95, p99 = (percentile(buckets, p) for p in PERCENTILES)
        return cls(domain, **values, mean_latency_ms=mean, p50_ms=p50, p95_ms=p95, p99_ms=p99)

    def to_dict(self) -> dict[str, object]:
        """The JSON form: the hash's field names, then the mean and the percentiles."""
        return asdict(self)
