"""The tracker's and the check's figures, each beside a baseline of the same run.

    .venv/bin/python -m benchmarks.bench_tracker [--quick]

* hot path: median ns per `record_success` call and per `check_federation_policy` call
  (10,000 rules), over batches of 1,000 calls on 1,000 distinct domains, beside a locked
  dict update and a Redis round trip per event (HINCRBY, SISMEMBER);
* push: field updates per second moved by one worker's `push()` and the longest single
  push.lua call, timed client-side (one call per round trip: an upper bound of the
  script's time); baseline: one Lua call of 1,000 domains x 8 plain HINCRBY;
* memory: Redis bytes per tracked domain (``used_memory`` grown per domain on the run's
  own server, and MEMORY USAGE per structure), and the pending batch per domain touched
  in an interval (tracemalloc).
"""

from __future__ import annotations

import contextlib
import gc
import random
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable

import redis

from benchmarks.common import (
    Env,
    delete_namespace,
    evalsha_usec,
    median,
    scratch_database,
    standalone_main,
)
from benchmarks.report import Report
from fedtrack_redis import FederationTracker, PolicyStore, check_federation_policy
from fedtrack_redis.ages import AgeQueue
from fedtrack_redis.batch import Recorder, release_inflight, take_batch
from fedtrack_redis.keys import NamespaceKeys

BASELINE_LUA = """
for i = 1, #KEYS do
  for j = 1, 8 do redis.call('HINCRBY', KEYS[i], 'f' .. j, 1) end
end
return #KEYS
"""
RULES = 10_000


def mark_hydrated(client: redis.Redis, namespace: str) -> None:
    for shard in NamespaceKeys(namespace).shards:
        client.set(shard.hydrated, "0")


def batch_ns(loop: Callable[[], None], batches: int, size: int) -> float:
    """Median over `batches` runs of `loop` (which makes `size` calls) of ns per call."""
    samples = []
    for _ in range(batches):
        start = time.perf_counter_ns()
        loop()
        samples.append((time.perf_counter_ns() - start) / size)
    return median(samples)


def round_trip_ns(call: Callable[[], object], count: int) -> float:
    samples = []
    for _ in range(count):
        start = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - start)
    return median(samples)


# -- hot path ----------------------------------------------------------------------------


def bench_hot_path(env: Env, report: Report) -> None:
    section = "hot path"
    batches = 200 if env.quick else 1000
    domains = [f"d{i}.example.com" for i in range(1000)]
    recorder = Recorder()
    for domain in domains:  # every domain known to the memo and present in the batch
        recorder.record_success(domain, 120, "HTTPS")
    success = recorder.record_success
    failure = recorder.record_failure
    increment = recorder.increment_queue

    def outbound() -> None:
        for domain in domains:
            success(domain, 150, "HTTPS")

    def inbound() -> None:
        for domain in domains:
            success(domain, 150)

    def failed() -> None:
        for domain in domains:
            failure(domain, "SMTP")

    def queued() -> None:
        for domain in domains:
            increment(domain)

    lock = threading.Lock()
    table: dict[str, int] = {}

    def locked_dict() -> None:
        for domain in domains:
            with lock:
                table[domain] = table.get(domain, 0) + 1

    gc.collect()
    hot = batch_ns(outbound, batches, len(domains))
    results = {
        "inbound": batch_ns(inbound, batches // 2, len(domains)),
        "failure": batch_ns(failed, batches // 2, len(domains)),
        "increment_queue": batch_ns(queued, batches // 2, len(domains)),
    }
    baseline = batch_ns(locked_dict, batches, len(domains))
    client = redis.Redis.from_url(env.redis_url)
    namespace = env.namespace()
    with contextlib.closing(client):
        key = f"fedtrack:{{{namespace}:baseline}}:d"
        trip = round_trip_ns(lambda: client.hincrby(key, "ss", 1), 300 if env.quick else 3000)
        rules_key = f"fedtrack:{{{namespace}:baseline}}:rules"
        client.sadd(rules_key, *domains[::2])
        member_trip = round_trip_ns(
            lambda: client.sismember(rules_key, "d5.example.com"), 300 if env.quick else 3000
        )
        client.delete(key, rules_key)
    report.figure(
        section,
        "record_success median per call",
        hot,
        "ns",
        target=("<=", 500),
        baseline=(
            f"locked dict update {baseline:.0f} ns; one HINCRBY round trip per event"
            f" {trip / 1000:.0f} µs = {trip / hot:,.0f}x record_success"
        ),
        note=(
            "Outbound success over 1,000 distinct domains (the loop over them included),"
            f" median of {batches} batches of 1,000 calls. Other calls, same way: inbound"
            f" success {results['inbound']:.0f} ns, record_failure {results['failure']:.0f} ns,"
            f" increment_queue {results['increment_queue']:.0f} ns."
        ),
    )
    report.series["hot_path_ns"] = {"record_success": hot, **results, "locked_dict": baseline}
    report.series["redis_round_trip_ns"] = {"HINCRBY": trip, "SISMEMBER": member_trip}
    bench_check(env, report, batches, member_trip)


def bench_check(env: Env, report: Report, batches: int, member_trip: float) -> None:
    section = "hot path"
    rules = [f"blocked{i}.example.net" for i in range(RULES)]
    namespace = env.namespace()
    with scratch_database(env.admin_url) as database_url:
        store = PolicyStore(database_url, env.redis_url, namespace=namespace).init()
        try:
            store.add_rules(rules)
            deadline = time.monotonic() + 10
            while store.count() < RULES and time.monotonic() < deadline:
                time.sleep(0.01)
            report.check(
                section,
                f"policy store holds the {RULES:,} rules",
                store.count() == RULES,
                f"{store.count():,} rules in the local cache",
            )
            # Half of the domains match a rule, half do not; every one is a valid name.
            domains = [rules[i] if i % 2 else f"allowed{i}.example.org" for i in range(1000)]
            check = check_federation_policy

            def readme_form() -> None:
                for domain in domains:
                    check(domain, local_domain="mail.example", store=store)

            def minimal_form() -> None:
                for domain in domains:
                    check(domain, store=store)

            rule_set = set(rules)

            def set_lookup() -> None:
                for domain in domains:
                    domain in rule_set  # noqa: B015

            allowed = sum(check(d, local_domain="mail.example", store=store) for d in domains)
            report.check(
                section,
                "check_federation_policy decisions (ACCEPT, half the domains blocked)",
                allowed == 500,
                f"{allowed} of 1,000 allowed",
            )
            gc.collect()
            full = batch_ns(readme_form, batches, len(domains))
            minimal = batch_ns(minimal_form, batches, len(domains))
            lookup = batch_ns(set_lookup, batches, len(domains))
        finally:
            store.close()
            delete_namespace(namespace, env.redis_url)
    report.figure(
        section,
        f"check_federation_policy median per call ({RULES:,} rules)",
        full,
        "ns",
        target=("<=", 300),
        baseline=(
            f"plain set lookup {lookup:.0f} ns; one SISMEMBER round trip per check"
            f" {member_trip / 1000:.0f} µs = {member_trip / full:,.0f}x the check"
        ),
        note=(
            "Called as in the README, `check_federation_policy(domain,"
            ' local_domain="mail.example", store=policy)`, over 1,000 distinct domains, half'
            f" of them blocked by a rule. Without `local_domain`: {minimal:.0f} ns."
        ),
    )
    report.series["check_ns"] = {"readme_form": full, "minimal_form": minimal, "set": lookup}


# -- push ---------------------------------------------------------------------------------


def record_interval(tracker: Recorder, domains: list[str], rng: random.Random) -> None:
    """One push interval of a relay: per domain a message queued, delivered, dequeued;
    every fourth domain also a failed attempt and an inbound delivery."""
    for index, domain in enumerate(domains):
        tracker.increment_queue(domain)
        tracker.record_success(domain, int(rng.lognormvariate(5.5, 0.8)), "HTTPS")
        tracker.decrement_queue(domain)
        if index % 4 == 0:
            tracker.record_failure(domain, "HTTP")
            tracker.record_success(domain, 30)


def heavy_interval(tracker: Recorder, domains: list[str], rng: random.Random) -> None:
    """A busier interval: three outbound successes per domain, failures, inbound."""
    for domain in domains:
        tracker.increment_queue(domain)
        tracker.increment_queue(domain)
        for transport in ("HTTPS", "HTTP", "SMTP"):
            tracker.record_success(domain, int(rng.lognormvariate(5.5, 0.8)), transport)
        tracker.record_failure(domain, "HTTP")
        tracker.record_success(domain, 20)
        tracker.decrement_queue(domain)


WORKLOADS = {
    "typical": (
        record_interval,
        "a message queued, delivered over HTTPS and dequeued per domain,"
        " a failure and an inbound delivery for every fourth",
    ),
    "heavy": (
        heavy_interval,
        "per domain three outbound successes (one per transport), a"
        " failure, an inbound delivery, one message left in flight",
    ),
}


def bench_push(env: Env, report: Report) -> None:
    section = "push"
    count = 5_000 if env.quick else 20_000
    rounds = 2 if env.quick else 4
    domains = [f"host{i}.example.net" for i in range(count)]
    client = redis.Redis.from_url(env.redis_url, decode_responses=True)
    namespace = env.namespace()
    mark_hydrated(client, namespace)
    baseline = client.register_script(BASELINE_LUA)
    base_keys = [f"fedtrack:{{{namespace}:baseline}}:d:{i}" for i in range(1000)]
    rng = random.Random(5)
    tracker = FederationTracker(env.redis_url, namespace=namespace, push_interval=3600)
    series: dict[str, list[float]] = {}
    try:
        for label, (workload, description) in WORKLOADS.items():
            rates, base_rates, script_shares, script_rates = [], [], [], []
            fields_per_push = 0
            for round_ in range(rounds + 1):
                baseline(keys=base_keys)
                start = time.perf_counter()
                baseline(keys=base_keys)
                base_rates.append(8000 / (time.perf_counter() - start))
                workload(tracker, domains, rng)
                before = tracker.push_stats.fields
                _, usec_before = evalsha_usec(client)
                start = time.perf_counter()
                tracker.push(timeout=60)
                elapsed = time.perf_counter() - start
                _, usec_after = evalsha_usec(client)
                fields = tracker.push_stats.fields - before
                if round_ == 0:
                    continue  # the first push creates the hashes: a warm-up
                fields_per_push = fields
                rates.append(fields / elapsed)
                script_shares.append((usec_after - usec_before) / 1e6 / elapsed)
                script_rates.append(fields / max(1e-9, (usec_after - usec_before) / 1e6))
            longest, calls = longest_call(tracker, workload, domains, rng)
            rate = median(rates)
            series[label] = rates
            share = median(script_shares) * 100
            report.figure(
                section,
                f"one worker, {label} rows: field updates/s",
                rate,
                "field updates/s",
                target=(">=", 750_000),
                baseline=(
                    f"one Lua call of 1,000 domains x 8 plain HINCRBY {median(base_rates):,.0f}/s"
                ),
                note=(
                    f"{count:,} domains per interval ({description}):"
                    f" {fields_per_push:,} field updates per push, median of {rounds} pushes"
                    f" ({', '.join(f'{r:,.0f}' for r in rates)}/s). Redis executing push.lua"
                    f" (INFO commandstats) takes {share:.0f} % of the push's wall time"
                    + (" (the server is shared with other clients)" if not env.own_redis else "")
                    + f": the script alone moves {median(script_rates):,.0f} field updates per"
                    " second of its own time, which bounds the push (each field update is one"
                    " HINCRBY/HSET inside the script, plus per domain the activity index and"
                    " the changed set)."
                ),
            )
            report.figure(
                section,
                f"longest push.lua call, {label} rows",
                longest * 1000,
                "ms",
                target=("<=", 10),
                note=(
                    f"Client-side round trip of each of {calls} calls, sent one per round trip"
                    " (an upper bound of the script's own time)."
                ),
            )
    finally:
        tracker.close()
        delete_namespace(namespace, env.redis_url)
        client.close()
    report.series["push_rates"] = series


def longest_call(
    tracker: FederationTracker,
    workload: Callable[[Recorder, list[str], random.Random], None],
    domains: list[str],
    rng: random.Random,
) -> tuple[float, int]:
    """Push one more interval with each chunk on its own round trip; the longest, in s."""
    pusher = tracker._pusher
    durations: list[float] = []
    send = pusher._send

    def one_by_one(calls: list) -> bool:  # type: ignore[type-arg]
        ok = True
        for chunk in calls:
            start = time.perf_counter()
            ok = send([chunk]) and ok
            durations.append(time.perf_counter() - start)
        return ok

    workload(tracker, domains, rng)
    pusher._send = one_by_one  # type: ignore[method-assign]
    seal_ahead = pusher._queues.seal_ahead
    pusher._queues.seal_ahead = lambda calls: None  # type: ignore[method-assign]
    try:
        tracker.push(timeout=60)
    finally:
        pusher._send = send  # type: ignore[method-assign]
        pusher._queues.seal_ahead = seal_ahead  # type: ignore[method-assign]
    return max(durations), len(durations)


# -- memory -------------------------------------------------------------------------------


def bench_memory(env: Env, report: Report) -> None:
    section = "memory"
    count = 5_000 if env.quick else 20_000
    rounds = 3 if env.quick else 6
    client = redis.Redis.from_url(env.redis_url, decode_responses=True)
    try:
        for label, (workload, description) in WORKLOADS.items():
            # On our own server the namespace is the default one, as in production: the
            # key prefix is part of every key's size.
            namespace = f"mem{label}" if not env.own_redis else "default"
            domains = [f"relay{i}.example.org" for i in range(count)]
            keys = NamespaceKeys(namespace)
            gc.collect()
            used_before = int(client.info("memory")["used_memory"])
            mark_hydrated(client, namespace)
            rng = random.Random(11)
            tracker = FederationTracker(env.redis_url, namespace=namespace, push_interval=3600)
            try:
                for _ in range(rounds):
                    workload(tracker, domains, rng)
                    tracker.push(timeout=60)
                release_inflight(tracker)
                tracker.push(timeout=60)
            finally:
                tracker.close()
            used_after = int(client.info("memory")["used_memory"])
            with client.pipeline(transaction=False) as pipe:
                for shard in keys.shards:
                    pipe.memory_usage(shard.active, samples=0)
                    pipe.memory_usage(shard.changed, samples=0)
                indexes = pipe.execute()
            sample = domains[:: max(1, count // 2000)]
            with client.pipeline(transaction=False) as pipe:
                for domain in sample:
                    pipe.memory_usage(keys.shard_for(domain).domain(domain), samples=0)
                    pipe.hkeys(keys.shard_for(domain).domain(domain))
                replies = pipe.execute()
            per_hash = sum(replies[0::2]) / len(sample)
            fields = sum(len(names) for names in replies[1::2]) / len(sample)
            buckets = sum(
                sum(1 for name in names if name.startswith("h")) for names in replies[1::2]
            ) / len(sample)
            active = sum(indexes[0::2]) / count
            changed = sum(indexes[1::2]) / count
            per_domain = (used_after - used_before) / count
            with client.pipeline(transaction=False) as pipe:
                for shard in keys.shards:
                    pipe.delete(shard.changed)  # what a flush does
                pipe.execute()
            flushed = (int(client.info("memory")["used_memory"]) - used_before) / count
            what = (
                "used_memory grown per domain on the run's own server"
                if env.own_redis
                else "MEMORY USAGE of hash + activity index + changed set (shared server)"
            )
            value = per_domain if env.own_redis else per_hash + active + changed
            report.figure(
                section,
                f"Redis bytes per tracked domain, {label} rows",
                value,
                "B",
                target=("<=", 512),
                baseline=f"{flushed if env.own_redis else per_hash + active:,.0f} B once flushed",
                note=(
                    f"{what}, {count:,} domains such as `relay123.example.org` after {rounds}"
                    f" intervals ({description}), namespace `{namespace}`. MEMORY USAGE per"
                    f" structure: hash {per_hash:.0f} B ({fields:.1f} fields, of which"
                    f" {buckets:.1f} latency buckets),"
                    f" activity index {active:.0f} B, changed set {changed:.0f} B (emptied"
                    " by each flush). The hash's field names are fixed by the key schema"
                    " (docs/redis-keys.md),"
                    " and each latency bucket a domain has seen is one more field."
                ),
            )
            delete_namespace(namespace, env.redis_url)
    finally:
        client.close()


def bench_pending(env: Env, report: Report) -> None:
    section = "memory"
    rng = random.Random(9)
    count = 5_000 if env.quick else 20_000
    for label, (workload, _description) in WORKLOADS.items():
        recorder = Recorder()
        domains = [f"m{i}.example.org" for i in range(count)]
        for domain in domains:  # warm the domain memo and the interning of the names
            recorder.touch(domain)
        take_batch(recorder)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        workload(recorder, domains, rng)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        gauge = _in_flight_bytes(recorder) / count
        total = (after - before) / count
        report.figure(
            section,
            f"pending batch per domain touched, {label} rows",
            total - gauge,
            "B",
            target=("<=", 300),
            note=(
                f"tracemalloc growth while {count:,} domains are recorded in one interval"
                f" ({total:.0f} B), less the in-flight state ({gauge:.0f} B per domain: the"
                " queue gauge and the enqueue times of the messages still in flight, which"
                " outlive the batch)."
            ),
        )


def _in_flight_bytes(recorder: Recorder) -> int:
    """What the worker keeps for messages in flight: the gauge map and the enqueue times
    (`batch.Recorder` internals, read for the measurement only)."""
    ages = recorder._ages
    times = sum(
        sys.getsizeof(value) + (sys.getsizeof(value.times) if isinstance(value, AgeQueue) else 0)
        for value in ages.values()
    )
    return sys.getsizeof(recorder._inflight) + sys.getsizeof(ages) + times


def run(env: Env, report: Report) -> None:
    bench_hot_path(env, report)
    bench_push(env, report)
    bench_memory(env, report)
    bench_pending(env, report)


def main() -> None:
    standalone_main(__doc__, run, "smaller, faster runs")


if __name__ == "__main__":
    main()
