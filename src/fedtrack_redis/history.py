"""History reads (docs/history.md): the cluster's and one domain's series of the nine event
counters, and the operators' watch list.

Where the buckets come from, written by push.lua inside its at-most-once apply (so every
sum is exact, G13):

* cluster-wide, each shard's 1-minute buckets (``series:m1``, kept three hours; a
  5-minute bucket is the sum of its minutes); the flusher leader adds finished buckets of
  all shards into one namespace-level hash per width (`series.SeriesCloser`), kept 48
  hours / 7 days;
* per domain, its counters before its first write in the current 5-minute bucket (the
  `BASE_FIELD` of its own hash): the open bucket is the live counters minus that base; a
  finished bucket waits in ``series:closed`` (or as its base) until the leader keeps it
  in the domain's day string ``s:<domain>:<day>`` (the caps) or drops it.

A read costs O(buckets), never O(domains): one HMGET of the namespace hash plus, for the
buckets the leader has not added yet, one HMGET per shard (a pipeline per node); a domain
reads its own keys on its shard. Nothing here scans.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import redis
from redis.cluster import RedisCluster

from .domain import normalize_domain
from .engine import RedisEngine
from .errors import BackendUnavailableError, InvalidWindowError
from .keys import NamespaceKeys, ShardKeys
from .stats import COUNTER_FIELDS, COUNTER_HASH_FIELDS

#: The nine event counters of a bucket (the `queued_messages` gauge is not one), in the
#: order push.lua numbers them 1-9.
COUNTERS: tuple[str, ...] = COUNTER_FIELDS
#: The domain hash's field holding its history base: ``<bucket>|<nine counters>``, its
#: counters just before its first write in that 5-minute bucket (push.lua).
BASE_FIELD = "B"
MINUTE, FIVE, DAY = 60, 300, 86_400
#: Windows by name, in seconds.
WINDOWS: dict[str, int] = {"1h": 3_600, "24h": 86_400, "7d": 604_800}
#: Buckets each shard keeps in ``series:m1`` (push.lua's MINUTES_KEPT), in minutes and in
#: 5-minute buckets: three hours for the leader to add them to the namespace hashes.
SHARD_MINUTES_KEPT, SHARD_FIVES_KEPT = 180, 36
#: Buckets the namespace hashes keep: 48 hours of minutes, 7 days of 5 minutes.
MINUTES_KEPT, FIVES_KEPT = 2_880, 2_016


@dataclass(frozen=True, slots=True)
class HistoryBucket:
    """One bucket of a series: `start` (unix seconds, a multiple of the width) and the
    nine event counters summed over it."""

    start: int
    failed_http: int = 0
    failed_https: int = 0
    failed_smtp: int = 0
    success_http: int = 0
    success_https: int = 0
    success_smtp: int = 0
    successful_deliveries: int = 0
    inbound_deliveries: int = 0
    total_latency_ms: int = 0

    def to_dict(self) -> dict[str, int]:
        """The JSON shape of the API (``start`` then the nine counters)."""
        return {
            "start": self.start,
            "failed_http": self.failed_http,
            "failed_https": self.failed_https,
            "failed_smtp": self.failed_smtp,
            "success_http": self.success_http,
            "success_https": self.success_https,
            "success_smtp": self.success_smtp,
            "successful_deliveries": self.successful_deliveries,
            "inbound_deliveries": self.inbound_deliveries,
            "total_latency_ms": self.total_latency_ms,
        }


def server_time(client: Any) -> float:
    """The Redis server's clock (the clock push.lua stamps buckets with); tests replace it."""
    seconds, micros = client.time()
    return int(seconds) + int(micros) / 1e6


def width_of(window: str, domain: bool) -> int:
    """Bucket width of `window` (seconds), or `InvalidWindowError`."""
    if not isinstance(window, str) or window not in WINDOWS:
        raise InvalidWindowError(f"window must be one of 1h, 24h, 7d, got {window!r}")
    return FIVE if domain or window == "7d" else MINUTE


def parse_counts(text: str) -> list[int]:
    """Nine comma-separated counts (as push.lua and the leader write them)."""
    values = list(map(int, text.split(",")))
    if len(values) != len(COUNTERS):
        raise ValueError(f"expected {len(COUNTERS)} counts, got {text!r}")
    return values


def _bucket(start: int, counts: list[int]) -> HistoryBucket:
    return HistoryBucket(start, *counts)


@dataclass
class _Settled:
    """What one process already read of a namespace hash: the buckets from `low` to
    `upto`, every one (zeros too), as built once: the leader never changes a bucket it
    added, so a poll reads only the buckets added since."""

    low: int
    upto: int
    buckets: dict[int, HistoryBucket]


#: Per engine: namespace hash → its settled buckets already read; day string of a
#: domain → (its length, its records by bucket) (append-only: a poll reads the tail).
_settled: weakref.WeakKeyDictionary[RedisEngine, dict[str, _Settled]] = weakref.WeakKeyDictionary()
_days: weakref.WeakKeyDictionary[
    RedisEngine, OrderedDict[str, tuple[int, dict[int, HistoryBucket]]]
] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()
#: Day strings remembered per engine (8 per domain for a 7-day window).
DAYS_CACHED = 256


def _flat_rows(texts: list[str]) -> list[list[int]]:
    """Rows of nine counts from their comma-separated texts, parsed in one pass."""
    if not texts:
        return []
    values = list(map(int, ",".join(texts).split(",")))
    width = len(COUNTERS)
    if len(values) != width * len(texts):
        raise ValueError("malformed history bucket")
    return [values[i : i + width] for i in range(0, len(values), width)]


def cluster_history(engine: RedisEngine, keys: NamespaceKeys, window: str) -> list[HistoryBucket]:
    """The cluster's series over `window`, oldest first, ending with the open bucket."""
    width = width_of(window, domain=False)
    count = WINDOWS[window] // width
    if width == MINUTE:
        compact, kept, total = keys.history_minutes, SHARD_MINUTES_KEPT, MINUTES_KEPT
    else:
        compact, kept, total = keys.history_fives, SHARD_FIVES_KEPT, FIVES_KEPT
    try:
        client = engine.node_for(compact)
        current = int(server_time(client) // width)
        first = current - count + 1
        with _cache_lock:
            cached = _settled.get(engine, {}).get(compact)
        settled = _read_settled(client, compact, first, current, width, cached)
        if settled is None:  # the hash went back (Redis lost it): read it afresh
            settled = _read_settled(client, compact, first, current, width, None)
        if settled is not None:
            oldest = current - total
            if settled.low < oldest:  # a new object: another thread may read the old one
                kept_buckets = {b: v for b, v in settled.buckets.items() if b >= oldest}
                settled = _Settled(oldest, settled.upto, kept_buckets)
            with _cache_lock:
                _settled.setdefault(engine, {})[compact] = settled
        upto = settled.upto if settled is not None else first - 1
        # buckets the leader has not added yet: straight from the shards
        fresh = list(range(max(upto + 1, first), current + 1))
        sums = [[0] * len(COUNTERS) for _ in fresh]
        rest = [b for b in fresh if b > current - kept]
        for index, row in enumerate(shard_sums(engine, keys, rest, width)):
            sums[rest[index] - fresh[0]] = row
    except redis.RedisError as exc:
        raise BackendUnavailableError(f"reading the cluster history: {exc}") from exc
    series = [settled.buckets[b] for b in range(first, upto + 1)] if settled else []
    return series + [_bucket(b * width, row) for b, row in zip(fresh, sums, strict=True)]


def shard_sums(
    engine: RedisEngine, keys: NamespaceKeys, buckets: list[int], width: int
) -> list[list[int]]:
    """The 16 shards' sums of each bucket of `width` (a 5-minute bucket is its five
    minutes): one HMGET per shard, a pipeline per node."""
    if not buckets:
        return []
    per = width // MINUTE
    counters = len(COUNTERS)
    fields = [
        f"{minute}:{f}"
        for bucket in buckets
        for minute in range(bucket * per, bucket * per + per)
        for f in range(1, counters + 1)
    ]

    def build(pipe: Any, shard: ShardKeys) -> None:
        pipe.hmget(shard.series_minutes, fields)

    sums = [[0] * counters for _ in buckets]
    for (reply,) in engine.per_shard(keys.shards, build):
        for position, value in enumerate(reply):
            if value:
                sums[position // (counters * per)][position % counters] += int(value)
    return sums


def _read_settled(
    client: Any, compact: str, first: int, current: int, width: int, cached: _Settled | None
) -> _Settled | None:
    """The settled buckets covering `first`..`upto`, reading only what `cached` lacks;
    None when the hash holds less than `cached` (it was lost meanwhile)."""
    if cached is None:
        need = list(range(first, current + 1))
    else:
        need = [*range(first, min(cached.low, current + 1)), *range(cached.upto + 1, current + 1)]
    upto_raw, *stored = client.hmget(compact, ["upto", *map(str, need)])
    upto = int(upto_raw) if upto_raw else None
    if cached is not None and (upto is None or upto < cached.upto):
        with _cache_lock:
            _settled.clear()
        return None
    if upto is None or upto < first:
        return cached
    found = [(b, str(text)) for b, text in zip(need, stored, strict=True) if text and b <= upto]
    rows = dict(zip([b for b, _ in found], _flat_rows([t for _, t in found]), strict=True))
    empty = [0] * len(COUNTERS)
    built = {b: _bucket(b * width, rows.get(b, empty)) for b in need if b <= upto}
    if cached is None:
        return _Settled(first, upto, built)
    merged = dict(cached.buckets)
    merged.update(built)
    return _Settled(min(cached.low, first), upto, merged)


def _day_records(text: str, name: str) -> dict[int, list[int]]:
    """A day string's records ``<bucket of the day>|<nine counts>;`` by bucket (summed)."""
    records: dict[int, list[int]] = {}
    if not text:
        return records
    step = len(COUNTERS) + 1
    values = list(map(int, text.rstrip(";").replace("|", ",").replace(";", ",").split(",")))
    if len(values) % step:
        raise BackendUnavailableError(f"malformed history of {name}")
    for at in range(0, len(values), step):
        counts = values[at + 1 : at + step]
        row = records.get(values[at])
        records[values[at]] = (
            counts if row is None else [a + b for a, b in zip(row, counts, strict=True)]
        )
    return records


def domain_history(
    engine: RedisEngine, keys: NamespaceKeys, domain: str, window: str
) -> list[HistoryBucket]:
    """One domain's 5-minute series over `window`, oldest first, ending with the open
    bucket; all zero for a domain outside the caps (`InvalidDomainError` for a bad name)."""
    width = width_of(window, domain=True)
    name = normalize_domain(domain)
    count = WINDOWS[window] // width
    shard = keys.shard_for(name)
    per_day = DAY // FIVE
    try:
        client = engine.node_for(shard.base)
        current = int(server_time(client) // width)
        first = current - count + 1
        days = [
            (day, shard.domain_day(name, day))
            for day in range(first // per_day, current // per_day + 1)
        ]
        with _cache_lock:
            remembered = _days.setdefault(engine, OrderedDict())
            known = {key: remembered.get(key) for _day, key in days}
        swept_raw = client.get(shard.series_swept)
        # closed buckets wait in `closed` only after the shard's last closing
        swept = max(int(swept_raw) if swept_raw else first - 1, first - 1)
        waiting = [f"{b}|{name}" for b in range(swept + 1, current + 1)]
        with client.pipeline(transaction=False) as pipe:
            for _day, key in days:
                entry = known[key]
                pipe.strlen(key)
                pipe.getrange(key, entry[0] if entry else 0, -1)
            pipe.hmget(shard.domain(name), [BASE_FIELD, *COUNTER_HASH_FIELDS])
            if waiting:
                pipe.hmget(shard.series_closed, waiting)
            replies = pipe.execute()
        kept = {
            day: _kept_day(client, remembered, key, known[key], replies[2 * i : 2 * i + 2], name)
            for i, (day, key) in enumerate(days)
        }
    except redis.RedisError as exc:
        raise BackendUnavailableError(f"reading the history of {name}: {exc}") from exc
    based, *live = replies[2 * len(days)]
    extra: dict[int, list[int]] = {}
    if waiting:
        for index, text in enumerate(replies[2 * len(days) + 1]):
            if text:
                extra[swept + 1 + index] = parse_counts(str(text))
    if based:
        number, text = str(based).split("|", 1)
        now = [int(value or 0) for value in live]
        opened = [max(0, a - b) for a, b in zip(now, parse_counts(text), strict=True)]
        row = extra.get(int(number))
        extra[int(number)] = opened if row is None else _plus(row, opened)
    empty = [0] * len(COUNTERS)
    series = []
    for bucket in range(first, current + 1):
        found = kept[bucket // per_day].get(bucket)
        more = extra.get(bucket)
        if found is not None and more is None:
            series.append(found)
            continue
        base = [getattr(found, f) for f in COUNTERS] if found is not None else empty
        series.append(_bucket(bucket * width, _plus(base, more) if more else base))
    return series


def _plus(a: list[int], b: list[int]) -> list[int]:
    return [x + y for x, y in zip(a, b, strict=True)]


def _kept_day(
    client: Any,
    remembered: OrderedDict[str, tuple[int, dict[int, HistoryBucket]]],
    key: str,
    entry: tuple[int, dict[int, HistoryBucket]] | None,
    reply: list[Any],
    name: str,
) -> dict[int, HistoryBucket]:
    """A day string's kept buckets, from what this process read of it before and the
    tail appended since (the string only grows; a shorter one is read whole again)."""
    length, tail = int(reply[0]), str(reply[1] or "")
    if entry is not None and length < entry[0]:  # expired or replaced
        tail, entry = str(client.get(key) or ""), None
        length = len(tail)
    if entry is not None and length == entry[0]:
        return entry[1]
    day = int(key.rsplit(":", 1)[1])
    start = day * (DAY // FIVE)
    buckets = dict(entry[1]) if entry is not None else {}
    for offset, added in _day_records(tail, name).items():
        bucket = start + offset
        old = buckets.get(bucket)
        counts = added if old is None else _plus([getattr(old, f) for f in COUNTERS], added)
        buckets[bucket] = _bucket(bucket * FIVE, counts)
    with _cache_lock:
        remembered[key] = (length, buckets)
        remembered.move_to_end(key)
        while len(remembered) > DAYS_CACHED:
            remembered.popitem(last=False)
    return buckets


def read_history(
    engine: RedisEngine | redis.Redis | RedisCluster,
    keys: NamespaceKeys,
    domain: str | None = None,
    window: str = "1h",
) -> list[HistoryBucket]:
    """`cluster_history` when `domain` is None, else `domain_history`."""
    engine = RedisEngine.wrap(engine)
    if domain is None:
        return cluster_history(engine, keys, window)
    return domain_history(engine, keys, domain, window)


def watch(engine: RedisEngine, keys: NamespaceKeys, domain: str) -> bool:
    """Keep `domain`'s history whatever its activity; True when it was not watched yet."""
    name = normalize_domain(domain)
    try:
        return bool(engine.node_for(keys.watched).sadd(keys.watched, name))
    except redis.RedisError as exc:
        raise BackendUnavailableError(f"watching {name}: {exc}") from exc


def unwatch(engine: RedisEngine, keys: NamespaceKeys, domain: str) -> bool:
    """Stop watching `domain` (its kept buckets stay until they age out); True when it
    was watched."""
    name = normalize_domain(domain)
    try:
        return bool(engine.node_for(keys.watched).srem(keys.watched, name))
    except redis.RedisError as exc:
        raise BackendUnavailableError(f"unwatching {name}: {exc}") from exc


def watched(engine: RedisEngine, keys: NamespaceKeys) -> list[str]:
    """The watched domains, sorted (an operator's list: small)."""
    try:
        members = engine.node_for(keys.watched).smembers(keys.watched)
    except redis.RedisError as exc:
        raise BackendUnavailableError(f"reading the watched domains: {exc}") from exc
    return sorted(str(member) for member in members)
