"""Queue shape (qshape): what carrying ages costs the hot path and the push, and what a
qshape read costs at a million domains with messages in flight.

* ``increment_queue`` + ``decrement_queue`` per call, beside the same calls without ages
  (a recorder whose queue calls keep the count alone, as before ages existed);
* push of one interval where every domain keeps one more message in flight, with the
  ages and with them left out, alternated in the same run: young messages (the common
  case; target within 10 %), and messages 5 minutes old or more (every line carries ages);
* ``GET /api/federation/qshape?top=20`` p99 at a million domains with messages in flight
  (the per-shard sums and index filled directly), and the SLOWLOG over the reads: target
  ≤ 50 ms, no call over 10 ms.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable
from typing import Any

import redis

from benchmarks.common import Env, delete_namespace, evalsha_usec, median, percentile
from benchmarks.report import Report
from fedtrack_redis import FederationTracker
from fedtrack_redis.batch import QUEUED, Recorder, _new_row, _normalized
from fedtrack_redis.keys import NamespaceKeys, shard_of
from fedtrack_redis.qshape import read_qshape

SECTION = "qshape"


class CountOnly(Recorder):
    """The queue calls as they were before ages: the in-flight count alone (baseline)."""

    def increment_queue(self, domain: str, *, enqueued_at: float | None = None) -> None:
        name = _normalized(domain)
        with self._lock:
            inflight = self._inflight
            count = inflight.get(name, 0) + 1
            inflight[name] = count
            rows = self._rows
            row = rows.get(name)
            if row is None:
                rows[name] = _new_row(count, rows)
            else:
                row[QUEUED] = count

    def decrement_queue(self, domain: str) -> None:
        name = _normalized(domain)
        with self._lock:
            inflight = self._inflight
            count = inflight.get(name, 0)
            if count > 1:
                count -= 1
                inflight[name] = count
            elif count == 1:
                count = 0
                del inflight[name]
            rows = self._rows
            row = rows.get(name)
            if row is None:
                rows[name] = _new_row(count, rows)
            else:
                row[QUEUED] = count


def interleaved_ns(
    loops: dict[str, tuple[Callable[[], None], int]], batches: int
) -> dict[str, tuple[float, float]]:
    """(median, min) ns per call of each loop, the loops run in turn within each batch so
    that a noisy neighbour slows them alike."""
    samples: dict[str, list[float]] = {label: [] for label in loops}
    for _ in range(batches):
        for label, (loop, calls) in loops.items():
            started = time.perf_counter_ns()
            loop()
            samples[label].append((time.perf_counter_ns() - started) / calls)
    return {label: (median(values), min(values)) for label, values in samples.items()}


def queue_loops(
    recorder: Recorder, domains: list[str]
) -> dict[str, tuple[Callable[[], None], int]]:
    """A pair of queue calls per domain (its only message), and three deep (an AgeQueue)."""
    for domain in domains:
        recorder.record_success(domain, 120, "HTTPS")
    increment, decrement = recorder.increment_queue, recorder.decrement_queue

    def one_each() -> None:
        for domain in domains:
            increment(domain)
        for domain in domains:
            decrement(domain)

    def three_deep() -> None:
        for domain in domains:
            increment(domain)
            increment(domain)
            increment(domain)
        for domain in domains:
            decrement(domain)
            decrement(domain)
            decrement(domain)

    return {"one": (one_each, 2 * len(domains)), "three": (three_deep, 6 * len(domains))}


def bench_hot_path(env: Env, report: Report) -> None:
    domains = [f"d{i}.example.com" for i in range(1000)]
    batches = 40 if env.quick else 500
    loops: dict[str, tuple[Callable[[], None], int]] = {}
    for label, recorder in (("ages", Recorder()), ("count", CountOnly())):
        for depth, loop in queue_loops(recorder, domains).items():
            loops[f"{label} {depth}"] = loop
    gc.collect()
    figures = interleaved_ns(loops, batches)
    (ages, ages_min), (count, count_min) = figures["ages one"], figures["count one"]
    report.figure(
        SECTION,
        "increment_queue + decrement_queue, median per call",
        ages,
        "ns",
        baseline=f"the count alone (no ages) {count:.0f} ns",
        note=(
            f"1,000 domains, the two recorders in turn in each of {batches} batches; each call"
            " of a pair on its own domain (a domain's only message is a bare float): fastest"
            f" batch {ages_min:.0f} ns vs {count_min:.0f} ns; with three messages per domain"
            f" (an AgeQueue): median {figures['ages three'][0]:.0f} ns vs"
            f" {figures['count three'][0]:.0f} ns, fastest {figures['ages three'][1]:.0f} ns"
            f" vs {figures['count three'][1]:.0f} ns."
        ),
    )
    report.series["qshape_hot_path_ns"] = {label: list(pair) for label, pair in figures.items()}


def interval(
    tracker: FederationTracker, domains: list[str], rng: random.Random, age: float
) -> None:
    """One interval where every domain keeps one more message in flight, enqueued `age`
    seconds ago, beside a delivery, a failure and an inbound delivery."""
    enqueued = time.time() - age
    for domain in domains:
        tracker.increment_queue(domain, enqueued_at=enqueued)
        tracker.increment_queue(domain, enqueued_at=enqueued)
        tracker.record_success(domain, int(rng.lognormvariate(5.5, 0.8)), "HTTPS")
        tracker.record_failure(domain, "HTTP")
        tracker.record_success(domain, 20)
        tracker.decrement_queue(domain)


#: (label, age of the messages queued in each interval, what it shows)
PUSH_CASES = (
    ("young", 0.0, "messages under 5 minutes old: their column is T minus the others"),
    ("old", 400.0, "messages 5 minutes old or more: every line carries its ages"),
)


def bench_push(env: Env, report: Report) -> None:
    count = 2_000 if env.quick else 20_000
    rounds = 2 if env.quick else 6
    domains = [f"host{i}.example.net" for i in range(count)]
    client = redis.Redis.from_url(env.redis_url, decode_responses=True)
    rng = random.Random(7)
    try:
        for case, age, description in PUSH_CASES:
            seconds, script = push_pair(env, client, domains, rounds, age, rng, report)
            with_ages, without = min(seconds["ages"]), min(seconds["none"])
            step = median(seconds["step"])
            report.figure(
                SECTION,
                f"push with ages vs without, {case} messages: extra wall time",
                (with_ages / without - 1) * 100,
                "%",
                target=("<=", 10) if case == "young" else None,
                baseline=f"without ages {without * 1000:.0f} ms per push (fastest)",
                note=(
                    f"{count:,} domains per interval, each keeping one more message in flight"
                    f" ({description}); fastest of {rounds} alternated pushes: with ages"
                    f" {with_ages * 1000:.0f} ms, without {without * 1000:.0f} ms (medians"
                    f" {median(seconds['ages']) * 1000:.0f} and"
                    f" {median(seconds['none']) * 1000:.0f} ms); push.lua's own time, median"
                    f" {median(script['ages']) * 1000:.0f} ms vs"
                    f" {median(script['none']) * 1000:.0f} ms; the pusher's age step itself"
                    f" {step * 1000:.1f} ms per push ({step / without * 100:.1f} % of the push)."
                    " Without ages = the same tracker with that step switched off (push.lua"
                    " still mirrors queued_messages into the qshape index: one batched ZADD"
                    " per chunk)."
                ),
            )
            report.series[f"qshape_push_{case}_s"] = dict(seconds)
    finally:
        client.close()


def push_pair(
    env: Env,
    client: redis.Redis,
    domains: list[str],
    rounds: int,
    age: float,
    rng: random.Random,
    report: Report,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Push the same intervals with two trackers, one carrying ages, alternated."""
    namespaces = {"ages": env.namespace(), "none": env.namespace()}
    trackers: dict[str, FederationTracker] = {}
    for label, namespace in namespaces.items():
        for shard in NamespaceKeys(namespace).shards:
            client.set(shard.hydrated, "0")
        trackers[label] = FederationTracker(env.redis_url, namespace=namespace, push_interval=3600)
    queues = trackers["none"]._pusher._queues
    queues.absorb_ages = lambda now, batch: None  # type: ignore[method-assign]
    seconds: dict[str, list[float]] = {"ages": [], "none": [], "step": []}
    script: dict[str, list[float]] = {"ages": [], "none": []}
    aged = trackers["ages"]._pusher._queues
    absorb_ages = aged.absorb_ages

    def timed_step(now: float, batch: Any) -> None:
        started = time.perf_counter()
        absorb_ages(now, batch)
        seconds["step"].append(time.perf_counter() - started)

    aged.absorb_ages = timed_step  # type: ignore[method-assign]
    try:
        for round_ in range(rounds + 1):
            order = list(trackers.items())
            if round_ % 2:
                order.reverse()
            for label, tracker in order:
                interval(tracker, domains, rng, age)
                _, usec_before = evalsha_usec(client)
                started = time.perf_counter()
                tracker.push(timeout=120)
                elapsed = time.perf_counter() - started
                _, usec_after = evalsha_usec(client)
                if round_:  # the first push creates the hashes: a warm-up
                    seconds[label].append(elapsed)
                    script[label].append((usec_after - usec_before) / 1e6)
        del seconds["step"][0]  # the warm-up's
        shape = read_qshape(client, NamespaceKeys(namespaces["ages"]))
        expected = len(domains) * (rounds + 1)
        column = 0 if age < 300 else 1
        report.check(
            SECTION,
            f"qshape total equals the messages in flight ({age:.0f} s old)",
            shape.total[0] == shape.total[1 + column] == expected,
            f"{shape.total} for {expected:,}",
        )
    finally:
        for label, tracker in trackers.items():
            tracker.close(timeout=120)
            delete_namespace(namespaces[label], env.redis_url)
    return seconds, script


def fill(client: redis.Redis, namespace: str, count: int) -> None:
    """`count` domains with messages in flight, written straight into what pushes build
    (each shard's qshape index by T, its sums of the columns from 5 minutes on, its column
    totals and its queued_messages total), in commands of 1,000 members."""
    keys = NamespaceKeys(namespace)
    rng = random.Random(3)
    per_shard: dict[int, tuple[dict[str, str], dict[str, int]]] = {}
    totals = [[0] * 10 for _ in keys.shards]

    def send(index: int) -> None:
        sums, tops = per_shard.pop(index)
        shard = keys.shards[index]
        with client.pipeline(transaction=False) as pipe:
            if sums:
                pipe.hset(shard.qshape, mapping=sums)
            pipe.zadd(shard.qshape_top, tops)
            pipe.execute()

    for number in range(count):
        domain = f"mail{number}.host{number % 9973}.example{number % 13}.org"
        index = shard_of(domain)
        counts = [0] * 10
        for _ in range(1 + int(rng.paretovariate(1.5))):
            counts[min(9, int(rng.expovariate(0.7)))] += 1
        sums, tops = per_shard.setdefault(index, ({}, {}))
        if any(counts[1:]):
            sums[domain] = ",".join(map(str, counts[1:]))
        tops[domain] = sum(counts)
        for k, c in enumerate(counts):
            totals[index][k] += c
        if len(tops) >= 1000:
            send(index)
    for index in list(per_shard):
        send(index)
    for shard, sums in zip(keys.shards, totals, strict=True):
        client.hset(shard.qshape_total, mapping={str(k): c for k, c in enumerate(sums) if k})
        client.hset(shard.totals, "queued_messages", sum(sums))


def bench_read(env: Env, report: Report) -> None:
    from fastapi.testclient import TestClient

    from benchmarks.common import scratch_database
    from fedtrack_redis.api.app import create_app
    from fedtrack_redis.config import Settings

    count = 10_000 if env.quick else 1_000_000
    reads = 20 if env.quick else 200
    client = redis.Redis.from_url(env.redis_url, decode_responses=True)
    namespace = env.namespace()
    token = "bench-token-0123456789abcdefghijklmnop"
    try:
        started = time.perf_counter()
        fill(client, namespace, count)
        filled = time.perf_counter() - started
        members = sum(int(client.zcard(s.qshape_top)) for s in NamespaceKeys(namespace).shards)
        report.check(SECTION, f"index holds every domain ({count:,})", members == count)
        with scratch_database(env.admin_url) as database:
            settings = Settings(
                redis_url=env.redis_url,
                database_url=database,
                namespace=namespace,
                admin_token=token,
            )
            with TestClient(create_app(settings)) as api:
                headers = {"Authorization": f"Bearer {token}"}
                samples = []
                client.config_set("slowlog-log-slower-than", 10_000)
                client.slowlog_reset()
                for _ in range(reads):
                    started = time.perf_counter()
                    response = api.get("/api/federation/qshape?top=20", headers=headers)
                    samples.append((time.perf_counter() - started) * 1000)
                slow = list(client.slowlog_get(100))
                shape = response.json()
                deep = []
                for _ in range(reads // 4):
                    started = time.perf_counter()
                    api.get("/api/federation/qshape?top=1000", headers=headers)
                    deep.append((time.perf_counter() - started) * 1000)
                library = []  # the same read without HTTP: what Redis and the merge cost
                keys = NamespaceKeys(namespace)
                for _ in range(reads):
                    started = time.perf_counter()
                    read_qshape(client, keys, 20)
                    library.append((time.perf_counter() - started) * 1000)
        report.check(
            SECTION,
            "qshape rows are the largest T, ties by name",
            [row["domain"] for row in shape["rows"]]
            == [
                r["domain"]
                for r in sorted(shape["rows"], key=lambda r: (-r["counts"][0], r["domain"]))
            ]
            and len(shape["rows"]) == 20,
        )
        report.check(SECTION, "no Redis call over 10 ms during the reads", not slow, f"{len(slow)}")
    finally:
        delete_namespace(namespace, env.redis_url)
        client.close()
    report.figure(
        SECTION,
        f"GET /api/federation/qshape?top=20 p99, {count:,} domains in flight",
        percentile(samples, 99),
        "ms",
        target=("<=", 50),
        baseline=(
            f"median {median(samples):.1f} ms; the library read alone (no HTTP) p99"
            f" {percentile(library, 99):.1f} ms, median {median(library):.1f} ms;"
            f" top=1000 p99 {percentile(deep, 99):.1f} ms"
        ),
        note=(
            f"{reads} requests through the API (in-process HTTP client, token check included)"
            f" after filling the per-shard sums and index of {count:,} domains directly"
            f" ({filled:.0f} s); a read is, per shard, one ZREVRANGE of the index by T, one"
            " HGETALL of the column totals and one HGET of queued_messages, then one HMGET"
            " per shard holding a listed domain."
        ),
    )


def run(env: Env, report: Report) -> None:
    bench_hot_path(env, report)
    bench_push(env, report)
    bench_read(env, report)
