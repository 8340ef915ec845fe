"""Size (the installation to build for: a million domains): what grows with the number of
domains and what must not.

For each size (10,000, 100,000 and, with ``--size 1000000``, a million domains of typical
rows, pushed by a real tracker) on a throwaway Redis that logs every call over 10 ms:

* flush of every domain changed (rows stored already; the first flush, every row new, is
  reported beside it), and hydrate of every domain after Redis lost them: linear, ≤ 8 s
  at a million (≤ 1 s at 100,000);
* a page (``/servers?limit=50``, by activity and by failures), the status (totals and
  anomalies), and a name filter (a prefix of 1 in 9 names, a label suffix of 8 and one of
  1 in 13): p99 ≤ 50 ms, ≤ 50 ms, ≤ 300 ms at a million, flat;
  baseline: the old way, reading every domain (measured up to 100,000 domains);
* Redis memory per domain (≤ 450 B typical at a million, ≤ 512 B at 100,000);
* the SLOWLOG: no call over 10 ms through all of it.

    .venv/bin/python -m benchmarks --size 1000000    # writes benchmarks/size/RESULTS.md
"""

from __future__ import annotations

import collections
import functools
import hashlib
import time
from collections.abc import Callable
from typing import Any

import redis

from benchmarks.bench_flusher import mark_changed
from benchmarks.common import Env, percentile, scratch_database
from benchmarks.report import Report

SECTION = "size"
TARGETS = {  # at a million domains; 100,000 keeps the general ones
    "flush_s": 8.0,
    "hydrate_s": 8.0,
    "page_p99_ms": 50.0,
    "status_p99_ms": 50.0,
    "search_p99_ms": 300.0,
    "bytes_per_domain": 450.0,
}
READS = 40


def populate(url: str, namespace: str, count: int) -> None:
    """`count` domains of typical rows, pushed through a real tracker."""
    from fedtrack_redis import FederationTracker

    tracker = FederationTracker(url, namespace=namespace, push_interval=3600)
    try:
        for index in range(count):
            domain = f"mail{index}.host{index % 9973}.example{index % 13}.org"
            tracker.record_success(domain, 20 + index % 700, "HTTPS")
            tracker.record_success(domain, 5 + index % 40)
            if index % 11 == 0:
                tracker.record_failure(domain, "SMTP")
            if index % 50_000 == 49_999:
                tracker.push(timeout=600)
        tracker.push(timeout=600)
    finally:
        tracker.close(timeout=60)


def timed_p99(action: Callable[[], object], rounds: int = READS) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return percentile(samples, 99)


def freed(client: redis.Redis, timeout: float = 60.0) -> None:
    """Wait until Redis has freed what it frees in the background (UNLINKed keys), so
    that ``used_memory`` is what the data holds."""
    deadline = time.monotonic() + timeout
    while int(client.info("memory").get("lazyfree_pending_objects", 0)):
        if time.monotonic() > deadline:
            raise TimeoutError("Redis kept objects pending a background free")
        time.sleep(0.05)


def slow_calls(client: redis.Redis) -> list[dict[str, Any]]:
    return list(client.slowlog_get(1000))


def _command(entry: dict[str, Any]) -> str:
    """A SLOWLOG entry's command and first argument (for EVALSHA: the script's name)."""
    words = [word.decode(errors="replace") for word in entry["command"].split()[:2]]
    if len(words) == 2 and words[0].upper() == "EVALSHA":
        return _script_names().get(words[1], "EVALSHA ?")
    return " ".join(word[:40] for word in words) or "?"


@functools.cache
def _script_names() -> dict[str, str]:
    from fedtrack_redis.scripts import _REPO_LUA, lua_source

    names = [path.stem for path in _REPO_LUA.glob("*.lua")]
    return {hashlib.sha1(lua_source(name).encode()).hexdigest(): f"{name}.lua" for name in names}


def measure(env: Env, report: Report, count: int, client: redis.Redis) -> dict[str, float]:
    from fedtrack_redis import Flusher
    from fedtrack_redis.anomalies import indexed_anomalies
    from fedtrack_redis.hydrate import clear_namespace
    from fedtrack_redis.keys import NamespaceKeys
    from fedtrack_redis.reads import StatsReader, read_all

    namespace = env.namespace()
    keys = NamespaceKeys(namespace)
    figures: dict[str, float] = {"domains": count}
    with scratch_database(env.admin_url) as database:
        # flush_once alone renews no lock: a TTL longer than a flush of a million domains
        # (as the running flusher's renewal thread gives it) keeps the one leader
        flusher = Flusher(env.redis_url, database, namespace=namespace, interval=3600, lock_ttl=300)
        reader = StatsReader(env.redis_url, namespace=namespace, database=database)
        try:
            flusher.flush_once()  # leads, hydrates the new namespace
            before = int(client.info("memory")["used_memory"])
            client.slowlog_reset()  # from here: the push, the flush, the reads
            started = time.perf_counter()
            populate(env.redis_url, namespace, count)
            figures["push_s"] = time.perf_counter() - started
            started = time.perf_counter()
            rows = flusher.flush_once()
            figures["first_flush_s"] = time.perf_counter() - started
            report.check(
                SECTION, f"first flush wrote every domain ({count:,})", rows == count, f"{rows:,}"
            )
            freed(client)  # the flush UNLINKs its epoch's sets: freed in the background
            figures["bytes_per_domain"] = (
                int(client.info("memory")["used_memory"]) - before
            ) / count
            # every domain changed again, its row stored already (as bench_flusher's
            # figure at 100,000); the marking is the benchmark's, not logged
            slow = slow_calls(client)
            mark_changed(client, keys)
            client.slowlog_reset()
            started = time.perf_counter()
            rows = flusher.flush_once()
            figures["flush_s"] = time.perf_counter() - started
            report.check(
                SECTION, f"flush wrote every changed domain ({count:,})", rows == count, f"{rows:,}"
            )
            engine = reader.engine
            figures["page_p99_ms"] = timed_p99(lambda: reader.page("activity", 50))
            figures["page_failures_p99_ms"] = timed_p99(lambda: reader.page("failures", 50))

            def status() -> None:
                sums = reader.totals()
                indexed_anomalies(engine, keys, sums)

            figures["status_p99_ms"] = timed_p99(status)
            # as /servers?q=…&limit=50 does: the database filters, sorts and pages
            figures["search_p99_ms"] = timed_p99(
                lambda: reader.named(reader.search("mail1", 50, order="activity")[0])
            )
            figures["search_suffix_p99_ms"] = timed_p99(
                lambda: reader.named(reader.search("host77.example12.org", 50, order="activity")[0])
            )
            # a label suffix under which 1 in 13 domains lie: scattered through the table
            figures["search_broad_suffix_p99_ms"] = timed_p99(
                lambda: reader.named(reader.search("example3.org", 50, order="activity")[0])
            )
            slow += slow_calls(client)
            if count <= 100_000:  # the old way: read every domain (a baseline, not logged)
                figures["full_scan_ms"] = timed_p99(lambda: read_all(engine, keys), rounds=3)
            clear_namespace(engine, keys)
            client.slowlog_reset()  # from here: the hydrate
            started = time.perf_counter()
            flusher.flush_once()  # the leader hydrates the lost shards first
            figures["hydrate_s"] = time.perf_counter() - started
            restored = reader.totals()["domains"]
            report.check(
                SECTION,
                f"hydrate restored every domain ({count:,})",
                restored == count,
                f"{restored:,}",
            )
            slow += slow_calls(client)
            figures["slow_calls"] = len(slow)
            figures["slowest_ms"] = max((e["duration"] / 1000 for e in slow), default=0.0)
            figures["slow_commands"] = ", ".join(  # type: ignore[assignment]
                f"{_command(entry)} {entry['duration'] / 1000:.1f} ms"
                for entry in sorted(slow, key=lambda entry: -entry["duration"])[:5]
            )
            kinds = collections.Counter(_command(entry).split()[0] for entry in slow)
            figures["slow_kinds"] = ", ".join(  # type: ignore[assignment]
                f"{name} x{times}" for name, times in kinds.most_common()
            )
        finally:
            flusher.stop()
            clear_namespace(reader.engine, keys)  # free the memory for the next size
            reader.close()
    return figures


def run(env: Env, report: Report, sizes: tuple[int, ...] = (10_000, 100_000)) -> None:
    client = redis.Redis.from_url(env.redis_url)
    client.config_set("slowlog-log-slower-than", 10_000)
    results = []
    try:
        for count in sizes:
            print(f"  size: {count:,} domains", flush=True)
            results.append(measure(env, report, count, client))
    finally:
        client.close()
    report.series["size"] = results
    largest = results[-1]
    million = largest["domains"] >= 1_000_000
    scale = f"{largest['domains']:,.0f} domains"

    def bound(name: str, hundred_k: float) -> tuple[str, float]:
        return ("<=", TARGETS[name] if million else hundred_k)

    flat = ", ".join(f"{r['domains']:,.0f}: {r['page_p99_ms']:.1f} ms" for r in results)
    scan = next((r["full_scan_ms"] for r in reversed(results) if "full_scan_ms" in r), None)
    baseline = f"reading every domain at 100,000: {scan:,.0f} ms" if scan else ""
    report.figure(
        SECTION,
        f"/servers?limit=50 p99, {scale}",
        largest["page_p99_ms"],
        "ms",
        target=bound("page_p99_ms", 50.0),
        baseline=baseline,
        note=f"by size: {flat}",
    )
    report.figure(
        SECTION,
        f"/status p99 (totals + anomalies), {scale}",
        largest["status_p99_ms"],
        "ms",
        target=bound("status_p99_ms", 50.0),
        baseline=baseline,
    )
    report.figure(
        SECTION,
        f"name filter (prefix) p99, {scale}",
        largest["search_p99_ms"],
        "ms",
        target=bound("search_p99_ms", 300.0),
    )
    report.figure(
        SECTION,
        f"name filter (label suffix) p99, {scale}",
        largest["search_suffix_p99_ms"],
        "ms",
        target=bound("search_p99_ms", 300.0),
    )
    report.figure(
        SECTION,
        f"name filter (label suffix of 1 in 13 domains) p99, {scale}",
        largest["search_broad_suffix_p99_ms"],
        "ms",
        target=bound("search_p99_ms", 300.0),
    )
    report.figure(
        SECTION,
        f"flush of every domain changed, {scale}",
        largest["flush_s"],
        "s",
        target=bound("flush_s", 1.0 * largest["domains"] / 100_000),
        note="Every domain changed since the last flush, its row stored already (the"
        " steady state; bench_flusher's figure at 100,000 is the same).",
    )
    report.figure(
        SECTION,
        f"first flush, every row new, {scale}",
        largest["first_flush_s"],
        "s",
        note="Once per installation: PostgreSQL inserts every row. PostgreSQL alone, the"
        " same million rows by COPY + INSERT … ON CONFLICT from Python without Redis, took"
        " 19.6 s new and 10.0 s stored already on the AMD machine (a plain INSERT without"
        " ON CONFLICT costs the same).",
    )
    report.figure(
        SECTION,
        f"hydrate of every domain, {scale}",
        largest["hydrate_s"],
        "s",
        target=bound("hydrate_s", 1.0 * largest["domains"] / 100_000),
    )
    report.figure(
        SECTION,
        f"Redis memory per domain (typical rows), {scale}",
        largest["bytes_per_domain"],
        "B",
        target=bound("bytes_per_domain", 512.0),
        note=(
            "used_memory grown per domain from the empty namespace to after the first"
            " flush, once Redis freed the flush's UNLINKed sets in the background"
            " (lazyfree_pending_objects 0): every domain in its open history bucket, so"
            " with its base; key schema 3 (docs/redis-keys.md)"
        ),
    )
    report.figure(
        SECTION,
        f"Redis calls over 10 ms (SLOWLOG), {scale}",
        largest["slow_calls"],
        "",
        target=("<=", 0),
        baseline=f"slowest {largest['slowest_ms']:.1f} ms",
        note=f"The slowest: {largest['slow_commands'] or 'none'}. By command:"
        f" {largest['slow_kinds'] or 'none'}.",
    )
