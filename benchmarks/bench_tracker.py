"""The tracker's §5 figures, each beside a baseline measured in the same process and minute.

    .venv/bin/python -m benchmarks.bench_tracker [--quick] [--redis-url URL]

* hot path: median ns per `record_success` call (batches of 1,000 calls) vs a locked dict
  update, and as a ratio to one HINCRBY round trip per event (target ≤ 500 ns);
* push: field updates per second moved by one worker's `push()` (target ≥ 750,000/s) and
  the longest single push.lua call from SLOWLOG (target ≤ 10 ms); baseline: one script
  of 1,000 domains x 8 plain HINCRBY;
* Redis bytes per tracked domain: MEMORY USAGE of the domain hash plus its share of the
  shard's activity index and changed set (target ≤ 512 B);
* pending bytes per domain touched in an interval, from tracemalloc (target ≤ 300 B).

Redis is a throwaway ``redis-server`` started here (its SLOWLOG is reconfigured), unless
``--redis-url`` names another (then SLOWLOG is left alone and the client-side time of one
single-chunk call stands in for the script time).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Iterator

import redis

from benchmarks.common import machine, median
from fedtrack_redis import FederationTracker, __version__
from fedtrack_redis.batch import Recorder
from fedtrack_redis.keys import NamespaceKeys

BASELINE_LUA = """
for i = 1, #KEYS do
  for j = 1, 8 do redis.call('HINCRBY', KEYS[i], 'f' .. j, 1) end
end
return #KEYS
"""


@contextlib.contextmanager
def throwaway_redis() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    directory = tempfile.mkdtemp(prefix="fedtrack-bench-")
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", directory],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        process.terminate()
        process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def mark_hydrated(client: redis.Redis, namespace: str) -> None:
    for shard in NamespaceKeys(namespace).shards:
        client.set(shard.hydrated, "0")


def per_call_ns(call: object, args: tuple[object, ...], batches: int, size: int = 1000) -> float:
    """Median over `batches` of the mean ns per call within a batch of `size` calls."""
    function = call  # local for speed
    samples = []
    for _ in range(batches):
        start = time.perf_counter_ns()
        for _ in range(size):
            function(*args)  # type: ignore[operator]
        samples.append((time.perf_counter_ns() - start) / size)
    return median(samples)


def bench_hot_path(client: redis.Redis, quick: bool) -> None:
    import threading

    recorder = Recorder()
    domains = [f"d{i}.example.com" for i in range(1000)]
    for domain in domains:
        recorder.record_success(domain, 120, "HTTPS")
    batches = 100 if quick else 400
    hot = per_call_ns(recorder.record_success, ("d5.example.com", 150, "HTTPS"), batches)
    inbound = per_call_ns(recorder.record_success, ("d5.example.com", 150), batches)
    failure = per_call_ns(recorder.record_failure, ("d5.example.com", "SMTP"), batches)
    queue = per_call_ns(recorder.increment_queue, ("d5.example.com",), batches)
    lock = threading.Lock()
    table: dict[str, int] = {}

    def locked_update(key: str) -> None:
        with lock:
            table[key] = table.get(key, 0) + 1

    baseline = per_call_ns(locked_update, ("d5.example.com",), batches)
    round_trips = []
    for _ in range(200 if quick else 2000):
        start = time.perf_counter_ns()
        client.hincrby("bench:baseline", "f", 1)
        round_trips.append(time.perf_counter_ns() - start)
    trip = median(round_trips)
    print("hot path (median per call, batches of 1,000)")
    print(f"  record_success HTTPS     {hot:8.0f} ns   (target ≤ 500 ns)")
    print(f"  record_success inbound   {inbound:8.0f} ns")
    print(f"  record_failure           {failure:8.0f} ns")
    print(f"  increment_queue          {queue:8.0f} ns")
    print(f"  baseline locked dict     {baseline:8.0f} ns")
    print(
        f"  baseline HINCRBY trip    {trip:8.0f} ns   (record_success = 1/{trip / hot:.0f} of it)"
    )


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


def bench_push(url: str, client: redis.Redis, quick: bool, own_server: bool) -> list[str]:
    """Print the push figures; return the Redis memory lines (measured meanwhile)."""
    domains = [f"p{i}.example.net" for i in range(5_000 if quick else 20_000)]
    namespace = "bench" + uuid.uuid4().hex[:8]
    mark_hydrated(client, namespace)
    baseline = client.register_script(BASELINE_LUA)
    keys = [f"bench:{{b}}:d:{i}" for i in range(1000)]
    if own_server:
        client.config_set("slowlog-log-slower-than", 200)  # µs; inner calls are far faster
        client.config_set("slowlog-max-len", 10_000)
    rng = random.Random(5)
    tracker = FederationTracker(url, namespace=namespace, push_interval=3600)
    results = []
    memory = []
    try:
        for workload in (record_interval, heavy_interval):
            for _round in range(2 if quick else 3):
                baseline(keys=keys)
                start = time.perf_counter()
                baseline(keys=keys)
                base_rate = 8000 / (time.perf_counter() - start)
                workload(tracker, domains, rng)
                if own_server:
                    client.slowlog_reset()
                before = tracker.push_stats.fields
                start = time.perf_counter()
                tracker.push(timeout=60)
                elapsed = time.perf_counter() - start
                fields = tracker.push_stats.fields - before
                longest = "n/a"
                if own_server:
                    entries = [
                        entry["duration"]
                        for entry in client.slowlog_get(10_000)
                        if str(entry["command"]).upper().lstrip("B'\"").startswith("EVALSHA")
                    ]
                    longest = f"{max(entries) / 1000:.2f} ms" if entries else "< 0.2 ms"
                results.append(
                    f"  {workload.__name__:16s} {len(domains):6d} domains  {fields:8d} fields in"
                    f" {elapsed * 1000:6.0f} ms = {fields / elapsed:10,.0f}/s  longest call"
                    f" {longest:>9s}  (baseline Lua HINCRBY {base_rate:10,.0f}/s)"
                )
            memory.append(redis_bytes(client, namespace, domains, workload.__name__))
    finally:
        tracker.close()
        if own_server:
            client.config_set("slowlog-log-slower-than", 10_000)
    print("push (one worker; a field update = one counter of one domain set by one call)")
    for line in results:
        print(line)
    print("  targets: ≥ 750,000 field updates/s, no call > 10 ms")
    return memory


def redis_bytes(client: redis.Redis, namespace: str, domains: list[str], label: str) -> str:
    keys = NamespaceKeys(namespace)
    sample = domains[:: max(1, len(domains) // 2000)]
    with client.pipeline(transaction=False) as pipe:
        for domain in sample:
            pipe.memory_usage(keys.shard_for(domain).domain(domain), samples=0)
        hashes = pipe.execute()
    per_hash = sum(hashes) / len(hashes)
    with client.pipeline(transaction=False) as pipe:
        for shard in keys.shards:
            pipe.memory_usage(shard.active, samples=0)
            pipe.memory_usage(shard.changed, samples=0)
        indexes = pipe.execute()
    active = sum(indexes[0::2]) / len(domains)
    changed = sum(indexes[1::2]) / len(domains)
    field_count = sum(client.hlen(keys.shard_for(d).domain(d)) for d in sample) / len(sample)
    return (
        f"  after {label:16s} hash {per_hash:4.0f} B ({field_count:4.1f} fields) + activity"
        f" index {active:3.0f} B + changed set {changed:3.0f} B ="
        f" {per_hash + active + changed:4.0f} B ({per_hash + active:.0f} B once flushed)"
    )


def bench_pending(quick: bool) -> None:
    rng = random.Random(9)
    count = 5_000 if quick else 20_000
    print("pending batch per domain touched in one interval (tracemalloc; target ≤ 300 B)")
    for workload in (record_interval, heavy_interval):
        recorder = Recorder()
        domains = [f"m{i}.example.org" for i in range(count)]
        for domain in domains:  # warm the domain memo and the interning of the names
            recorder.touch(domain)
        recorder.swap()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        workload(recorder, domains, rng)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        inflight = recorder.inflight_snapshot()
        gauge = sys.getsizeof(inflight) / count if inflight else 0.0
        total = (after - before) / count
        print(
            f"  {workload.__name__:16s} {total - gauge:6.0f} B batch"
            f" (+ {gauge:3.0f} B for the in-flight map of the messages still queued)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller, faster runs")
    parser.add_argument("--redis-url", help="use this Redis instead of a throwaway one")
    options = parser.parse_args()
    print(f"fedtrack-redis {__version__} bench_tracker; {machine()}; redis-py {redis.__version__}")
    print(time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    with contextlib.ExitStack() as stack:
        url = options.redis_url or stack.enter_context(throwaway_redis())
        client = redis.Redis.from_url(url, decode_responses=True)
        stack.callback(client.close)
        print(f"Redis {client.info('server')['redis_version']} at {url}")
        bench_hot_path(client, options.quick)
        memory = bench_push(url, client, options.quick, own_server=options.redis_url is None)
        print("Redis memory per tracked domain (MEMORY USAGE, SAMPLES 0; target ≤ 512 B)")
        for line in memory:
            print(line)
        bench_pending(options.quick)


if __name__ == "__main__":
    main()
