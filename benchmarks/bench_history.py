"""History series (docs/history.md): what they cost the push, what they hold in Redis, and
how fast they are read.

* push with series on vs off: one worker, the push section's typical rows, the same
  process and minute, alternating rounds; "off" is push.lua with its series blocks cut
  out (``-- series:begin`` … ``-- series:end``). Target: within 10 %. Also the push that
  opens a new 5-minute bucket for every domain (each domain's base is recorded then),
  with the push script's clock moved 5 minutes between rounds;
* Redis memory of the series at 100,000 domains with the default caps: the open bucket
  of 100,000 active domains (measured, pushed by a tracker), then a week of kept
  buckets (the 1,000 most active domains x 2,016 buckets, and the full cluster hashes)
  filled synthetically in the layout the leader writes, measured with MEMORY USAGE;
* history request p99 at 1,000,000 domains (≤ 50 ms): the cluster's 1h / 24h / 7d and a
  kept domain's 7d, on a namespace whose open bucket holds a million domains' bases
  (filled synthetically, as the leader or push.lua would leave them), and the leader's
  closing of that bucket (its longest call, the SLOWLOG).

    .venv/bin/python -m benchmarks.bench_history [--quick]
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

from benchmarks.bench_tracker import mark_hydrated, record_interval
from benchmarks.common import (
    Env,
    delete_namespace,
    evalsha_usec,
    median,
    percentile,
    standalone_main,
)
from benchmarks.report import Report
from fedtrack_redis import FederationTracker, history, scripts
from fedtrack_redis.engine import RedisEngine
from fedtrack_redis.history import BASE_FIELD, DAY, FIVE, FIVES_KEPT, MINUTE, MINUTES_KEPT
from fedtrack_redis.keys import NamespaceKeys
from fedtrack_redis.reads import StatsReader
from fedtrack_redis.scripts import Scripts
from fedtrack_redis.series import TOP_DOMAINS, SeriesCloser
from fedtrack_redis.stats import FIELD_OF

SECTION = "history"
_SERIES_BLOCK = re.compile(r"-- series:begin\n.*?-- series:end\n", re.DOTALL)
_TIME = "local time = call('TIME')\n"


@contextmanager
def push_source(text: str) -> Iterator[None]:
    """Trackers built inside run this push.lua text."""
    real = scripts.lua_source
    scripts.lua_source = lambda name: text if name == "push" else real(name)  # type: ignore[assignment]
    try:
        yield
    finally:
        scripts.lua_source = real  # type: ignore[assignment]


def series_off() -> str:
    source = scripts.lua_source("push")
    stripped = _SERIES_BLOCK.sub("", source)
    assert stripped != source and "-- series:" not in stripped and "rebase" not in stripped
    return stripped


def with_clock(key: str) -> str:
    source = scripts.lua_source("push")
    return source.replace(
        _TIME,
        _TIME + f"local forced = call('GET', '{key}')\nif forced then time = {{forced, '0'}} end\n",
    )


def push_rate(
    tracker: FederationTracker, domains: list[str], rng: random.Random, client: redis.Redis
) -> tuple[float, float]:
    """(field updates per second of the push, per second of push.lua's own time)."""
    record_interval(tracker, domains, rng)
    before = tracker.push_stats.fields
    _, usec_before = evalsha_usec(client)
    started = time.perf_counter()
    tracker.push(timeout=120)
    elapsed = time.perf_counter() - started
    _, usec_after = evalsha_usec(client)
    fields = tracker.push_stats.fields - before
    return fields / elapsed, fields / max(1e-9, (usec_after - usec_before) / 1e6)


def bench_push(env: Env, report: Report) -> None:
    count = 5_000 if env.quick else 20_000
    rounds = 3 if env.quick else 11
    domains = [f"host{i}.example.net" for i in range(count)]
    client = redis.Redis.from_url(env.redis_url, decode_responses=True)
    namespaces = [env.namespace() for _ in range(3)]
    clock_key = f"fedtrack-bench-clock:{namespaces[2]}"
    client.set(clock_key, str(int(client.time()[0])))
    trackers: dict[str, FederationTracker] = {}
    rates: dict[str, list[float]] = {"on": [], "off": [], "boundary": []}
    script: dict[str, list[float]] = {"on": [], "off": [], "boundary": []}
    rng = random.Random(16)
    try:
        for namespace in namespaces:
            mark_hydrated(client, namespace)
        trackers["on"] = FederationTracker(
            env.redis_url, namespace=namespaces[0], push_interval=3600
        )
        with push_source(series_off()):
            trackers["off"] = FederationTracker(
                env.redis_url, namespace=namespaces[1], push_interval=3600
            )
        with push_source(with_clock(clock_key)):
            trackers["boundary"] = FederationTracker(
                env.redis_url, namespace=namespaces[2], push_interval=3600
            )
        for tracker in trackers.values():  # warm-up: creates the hashes
            push_rate(tracker, domains, rng, client)
        for _ in range(rounds):
            for label, tracker in trackers.items():
                if label == "boundary":
                    client.incrby(clock_key, FIVE)  # every domain opens a new bucket
                wall, own = push_rate(tracker, domains, rng, client)
                rates[label].append(wall)
                script[label].append(own)
    finally:
        for tracker in trackers.values():
            tracker.close()
        for namespace in namespaces:
            delete_namespace(namespace, env.redis_url)
        client.delete(clock_key)
        client.close()
    on, off, boundary = (median(rates[k]) for k in ("on", "off", "boundary"))
    own_on, own_off, own_boundary = (median(script[k]) for k in ("on", "off", "boundary"))
    cost = (off - on) / off * 100
    shown = {k: ", ".join(f"{r:,.0f}" for r in v) for k, v in rates.items()}
    report.figure(
        SECTION,
        "push cost of the series (on vs off)",
        cost,
        "%",
        target=("<=", 10),
        baseline=f"series off {off:,.0f} field updates/s",
        note=(
            f"one worker, {count:,} domains of typical rows per push, medians of {rounds}"
            f" alternating rounds in one process: on {on:,.0f}/s ({shown['on']}), off"
            f" {off:,.0f}/s ({shown['off']}). push.lua's own time (INFO commandstats):"
            f" {own_on:,.0f} vs {own_off:,.0f} field updates/s,"
            f" {(own_off - own_on) / own_off * 100:.1f} % apart."
        ),
    )
    report.figure(
        SECTION,
        "push that opens a 5-minute bucket for every domain",
        boundary,
        "field updates/s",
        baseline=f"series on, same bucket {on:,.0f}/s",
        note=(
            f"{(off - boundary) / off * 100:.0f} % below off ({shown['boundary']}; push.lua's"
            f" own time {own_boundary:,.0f}/s): each domain's"
            " first push of a bucket records its base (one HMGET and one or two HSET); with"
            " a push a second that is one push in 300, so it moves the average by"
            f" {(off - boundary) / off * 100 / 300:.2f} %."
        ),
    )
    report.series["history_push"] = rates


def _counts(rng: random.Random) -> str:
    ok = rng.randint(1, 400)
    fail = rng.randint(0, 30)
    return f"{fail},0,{rng.randint(0, 5)},0,{ok},0,{ok},{rng.randint(0, 50)},{ok * 180}"


def fill_week(client: redis.Redis, keys: NamespaceKeys, now: float, domains: list[str]) -> None:
    """A week of kept history as the leader writes it: `domains` with one member per
    5-minute bucket, the cluster hashes full, each shard's recent buckets full."""
    rng = random.Random(7)
    five, minute = int(now // FIVE), int(now // MINUTE)
    with client.pipeline(transaction=False) as pipe:
        per_day = DAY // FIVE
        for domain in domains:
            shard = keys.shard_for(domain)
            days: dict[int, list[str]] = {}
            for b in range(five - FIVES_KEPT, five):
                days.setdefault(b // per_day, []).append(f"{b % per_day}|{_counts(rng)};")
            for day, records in days.items():
                pipe.set(shard.domain_day(domain, day), "".join(records), ex=8 * DAY)
        pipe.execute()
        pipe.hset(
            keys.history_minutes,
            mapping={str(m): _counts(rng) for m in range(minute - MINUTES_KEPT, minute)},
        )
        pipe.hset(keys.history_minutes, "upto", str(minute - 1))
        pipe.hset(
            keys.history_fives,
            mapping={str(b): _counts(rng) for b in range(five - FIVES_KEPT, five)},
        )
        pipe.hset(keys.history_fives, "upto", str(five - 1))
        for shard in keys.shards:
            pipe.hset(
                shard.series_minutes,
                mapping={
                    f"{m}:{f}": rng.randint(1, 999)
                    for m in range(minute - 180, minute + 1)
                    for f in range(1, 10)
                },
            )
            pipe.hset(shard.series_minutes, "last", str(minute))
            pipe.set(shard.series_swept, str(five - 1))  # closed up to the open bucket
        pipe.execute()


def series_memory(
    client: redis.Redis, keys: NamespaceKeys, domains: list[str], now: float, active: list[str]
) -> dict[str, int]:
    """MEMORY USAGE (every element sampled) of the series keys, by kind. The open bucket
    is the `active` domains' bases in their own hashes: measured on a sample of them as
    what their hashes shrink by without the two fields (which then goes)."""
    sizes = {"open bucket": 0, "kept domains": 0, "cluster": 0}

    def usage(key: str) -> int:
        return int(client.memory_usage(key, samples=0) or 0)

    sample = [keys.shard_for(d).domain(d) for d in active[:: max(1, len(active) // 2000)]]
    with_base = sum(usage(key) for key in sample)
    five = int(now // FIVE)
    with client.pipeline(transaction=False) as pipe:
        for key in sample:
            pipe.hdel(key, BASE_FIELD, f"b{five}")
        pipe.execute()
    sizes["open bucket"] = round(
        (with_base - sum(usage(key) for key in sample)) * len(active) / max(1, len(sample))
    )
    for shard in keys.shards:
        sizes["open bucket"] += usage(shard.series_closed)
        sizes["cluster"] += usage(shard.series_minutes)
    sizes["cluster"] += usage(keys.history_minutes) + usage(keys.history_fives)
    days = range(int(now // DAY) - 8, int(now // DAY) + 1)
    sizes["kept domains"] = sum(
        usage(keys.shard_for(d).domain_day(d, day)) for d in domains for day in days
    )
    return sizes


def bench_memory(env: Env, report: Report) -> None:
    count = 10_000 if env.quick else 100_000
    client = redis.Redis.from_url(env.redis_url, decode_responses=True)
    namespace = env.namespace()
    keys = NamespaceKeys(namespace)
    mark_hydrated(client, namespace)
    tracker = FederationTracker(env.redis_url, namespace=namespace, push_interval=3600)
    domains = [f"mail{i}.host{i % 9973}.example{i % 13}.org" for i in range(count)]
    try:
        for start in range(0, count, 50_000):
            for domain in domains[start : start + 50_000]:
                tracker.record_success(domain, 120, "HTTPS")
            tracker.push(timeout=600)
        now = history.server_time(client)
        top = domains[: 100 if env.quick else TOP_DOMAINS]  # quick: a tenth of the week
        fill_week(client, keys, now, top)
        sizes = series_memory(client, keys, top, now, domains)
    finally:
        tracker.close()
        delete_namespace(namespace, env.redis_url)
        client.close()
    total = sum(sizes.values())
    churn = sizes["kept domains"] / (len(top) * FIVES_KEPT)
    report.figure(
        SECTION,
        f"Redis memory of the series, {count:,} domains, default caps",
        total / 1e6,
        "MB",
        note=(
            f"open 5-minute bucket of {count:,} active domains (their bases, in their hashes)"
            f" {sizes['open bucket'] / 1e6:.1f} MB ({sizes['open bucket'] / count:.0f} B per"
            f" active domain); a week of the {len(top):,} most active domains"
            f" ({FIVES_KEPT:,} buckets each) {sizes['kept domains'] / 1e6:.1f} MB"
            f" ({churn:.0f} B per kept bucket); cluster series (48 h of minutes, 7 d of"
            f" 5 minutes, the shards' last 3 h of minutes) {sizes['cluster'] / 1e6:.1f} MB."
            " Bounded by the caps, not by the history: a top list that changed completely"
            " every bucket would keep 1,000 new domains' strings per bucket instead (about"
            " 2 million single-record strings a week, a few hundred MB)."
        ),
    )
    report.series["history_memory"] = sizes  # type: ignore[assignment]


def fill_open_bucket(client: redis.Redis, keys: NamespaceKeys, now: float, count: int) -> None:
    """`count` domains based in the open bucket, as push.lua leaves them: the base and its
    bucket's field in the domain's hash, the domain in the activity index."""
    five = int(now // FIVE)
    stamp = int(now)
    batch = 20_000
    for start in range(0, count, batch):
        with client.pipeline(transaction=False) as pipe:
            active: dict[str, dict[str, int]] = {}
            for index in range(start, min(count, start + batch)):
                domain = f"mail{index}.host{index % 9973}.example{index % 13}.org"
                shard = keys.shard_for(domain)
                base = f"{five}|0,0,0,0,{index % 97},0,{index % 97},0,{index * 3}"
                pipe.hset(
                    shard.domain(domain),
                    mapping={BASE_FIELD: base, f"b{five}": 1, FIELD_OF["last_active"]: stamp},
                )
                active.setdefault(shard.active, {})[domain] = stamp
            for key, mapping in active.items():
                pipe.zadd(key, mapping)  # type: ignore[arg-type]
            pipe.execute()


def timed(action: Callable[[], object], rounds: int) -> tuple[float, float, float]:
    """(first call, median, p99) in ms: the first read of a window fills the reader's
    cache of settled buckets, the others read what was added since."""
    samples = []
    for _ in range(rounds + 1):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return samples[0], median(samples[1:]), percentile(samples[1:], 99)


def slow_calls(client: redis.Redis) -> list[dict[str, Any]]:
    return list(client.slowlog_get(1000))


def describe(slow: list[dict[str, Any]]) -> str:
    """How many calls by command, and the slowest."""
    if not slow:
        return "none"
    kinds: dict[str, int] = {}
    for entry in slow:
        command = entry["command"]
        words = (command.decode() if isinstance(command, bytes) else str(command)).split()
        name = words[0].upper() if words else "?"
        kinds[name] = kinds.get(name, 0) + 1
    slowest = max(entry["duration"] for entry in slow) / 1000
    return ", ".join(f"{n} x{c}" for n, c in sorted(kinds.items())) + f" (slowest {slowest:.1f} ms)"


def bench_requests(env: Env, report: Report) -> None:
    count = 20_000 if env.quick else 1_000_000
    rounds = 30 if env.quick else 200
    client = redis.Redis.from_url(env.redis_url, decode_responses=True)
    namespace = env.namespace()
    keys = NamespaceKeys(namespace)
    reader = StatsReader(env.redis_url, namespace=namespace)
    figures: dict[str, float] = {}
    try:
        now = history.server_time(client)
        kept = 100 if env.quick else TOP_DOMAINS
        top = [f"mail{i}.host{i % 9973}.example{i % 13}.org" for i in range(kept)]
        fill_week(client, keys, now, top)
        fill_open_bucket(client, keys, now, count)
        client.config_set("slowlog-log-slower-than", 10_000)
        client.slowlog_reset()
        reads: dict[str, tuple[float, float, float]] = {}
        for window in ("1h", "24h", "7d"):
            reads[f"cluster {window}"] = timed(
                lambda w=window: reader.history(None, w),  # type: ignore[misc]
                rounds,
            )
        reads["domain 7d"] = timed(lambda: reader.history(top[7], "7d"), rounds)
        reads["domain 1h"] = timed(lambda: reader.history(top[8], "1h"), rounds)
        for name, (_first, _median, p99) in reads.items():
            figures[name] = p99
        slow_reads = slow_calls(client)
        client.slowlog_reset()
        # the leader closes the million domains' bucket, in calls of 64 entries
        engine = RedisEngine.open(env.redis_url)
        closer = SeriesCloser(engine, Scripts(engine), keys)
        real = history.server_time
        history.server_time = lambda _client: now + FIVE  # type: ignore[assignment]
        try:
            started = time.perf_counter()
            closed = closer.sweep()
            figures["close_s"] = time.perf_counter() - started
        finally:
            history.server_time = real  # type: ignore[assignment]
            engine.close()
        report.check(
            SECTION, f"closing met every open entry ({count:,})", closed == count, f"{closed:,}"
        )
        slow_close = slow_calls(client)
        figures["slow_calls"] = len(slow_reads) + len(slow_close)
        figures["slowest_ms"] = max(
            (e["duration"] / 1000 for e in slow_reads + slow_close), default=0.0
        )
    finally:
        reader.close()
        delete_namespace(namespace, env.redis_url)
        client.close()
    worst = max(figures[k] for k in figures if k.startswith(("cluster", "domain")))
    report.figure(
        SECTION,
        f"history request p99, {count:,} domains",
        worst,
        "ms",
        target=("<=", 50),
        note=(
            "; ".join(
                f"{k}: p99 {p99:.1f} ms, median {mid:.1f} ms, first read {first:.1f} ms"
                for k, (first, mid, p99) in reads.items()
            )
            + f" ({rounds} reads each after the first, through StatsReader, as the API reads;"
            f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end);"
            " the week fully kept, the open bucket holding every domain. Calls over 10 ms"
            f" (SLOWLOG) during the reads: {describe(slow_reads)}."
        ),
    )
    report.figure(
        SECTION,
        f"closing a bucket of {count:,} active domains (leader, background)",
        figures["close_s"],
        "s",
        note=(
            f"once per 5 minutes, in calls of 64 entries; calls over 10 ms (SLOWLOG) during"
            f" the closing: {describe(slow_close)}"
        ),
    )
    report.figure(  # a timing, not a correctness check: it never fails the run
        SECTION,
        f"slowest call over 10 ms (SLOWLOG; 0: none) through reads and closing, {count:,}",
        figures["slowest_ms"],
        "ms",
        target=("<=", 10),
        note=f"{figures['slow_calls']:.0f} calls over 10 ms (SLOWLOG)",
    )
    report.series["history_requests"] = figures  # type: ignore[assignment]


def run(env: Env, report: Report) -> None:
    bench_push(env, report)
    bench_memory(env, report)
    bench_requests(env, report)


if __name__ == "__main__":
    standalone_main(__doc__, run, "small sizes, seconds")
