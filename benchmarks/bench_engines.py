"""Engines: one server, a 3-master Redis Cluster, a Sentinel set — beside each other in one
run (issue "distributed Redis"):

* push throughput of one worker (typical rows), on one server and on the cluster (on 2
  cores the cluster is not faster: the figure is how evenly the 16 shards spread over the
  masters, and how many round trips a push round costs per node);
* the cost of ``wait_replicas=1`` on push throughput (one server with one replica);
* the time from SIGKILL of a master to the first acknowledged push, on Sentinel and on
  Cluster.

    .venv/bin/python -m benchmarks --only engines
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import redis

from benchmarks.common import Env, median
from benchmarks.report import Report

SECTION = "engines"
DOMAINS = 20_000

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def typical(tracker: object, domains: list[str], rng: random.Random) -> None:
    for domain in domains:
        tracker.record_success(domain, rng.randint(20, 900), "HTTPS")  # type: ignore[attr-defined]
        tracker.record_success(domain, 30)  # type: ignore[attr-defined]


def push_rate(url: str, count: int, rounds: int = 3) -> tuple[float, int, int]:
    """(field updates/s of a push, pushes' calls per round, nodes) on the engine at `url`."""
    from fedtrack_redis import FederationTracker
    from fedtrack_redis.engine import RedisEngine
    from fedtrack_redis.keys import NamespaceKeys

    namespace = "bench" + str(random.randrange(10**9))
    engine = RedisEngine.open(url)
    for shard in NamespaceKeys(namespace).shards:
        engine.node_for(shard.base).set(shard.hydrated, "0")
    tracker = FederationTracker(url, namespace=namespace, push_interval=3600)
    domains = [f"e{i}.example.net" for i in range(count)]
    rng = random.Random(3)
    rates = []
    try:
        for round_ in range(rounds + 1):
            typical(tracker, domains, rng)
            before = tracker.push_stats.fields
            start = time.perf_counter()
            tracker.push(timeout=120)
            elapsed = time.perf_counter() - start
            if round_:
                rates.append((tracker.push_stats.fields - before) / elapsed)
        nodes = len(engine.primaries())
    finally:
        tracker.close()
        engine.close()
    return median(rates), 16, nodes


def shard_spread(cluster_url: str) -> str:
    from fedtrack_redis.engine import RedisEngine
    from fedtrack_redis.keys import NamespaceKeys

    engine = RedisEngine.open(cluster_url)
    try:
        owners = Counter(
            str(engine.node_for(shard.base).connection_pool.connection_kwargs.get("port"))
            for shard in NamespaceKeys("default").shards
        )
    finally:
        engine.close()
    return ", ".join(f"{count} shards on :{port}" for port, count in sorted(owners.items()))


def time_to_first_push(url: str, kill: Callable[[str], object]) -> float:
    """Seconds from SIGKILL of the master holding the probe's shard (`kill` is given that
    shard's key) to the first acknowledged push after it."""
    from fedtrack_redis import FederationTracker
    from fedtrack_redis.engine import RedisEngine
    from fedtrack_redis.errors import BackendUnavailableError
    from fedtrack_redis.keys import NamespaceKeys

    namespace = "bench" + str(random.randrange(10**9))
    engine = RedisEngine.open(url)
    for shard in NamespaceKeys(namespace).shards:
        engine.node_for(shard.base).set(shard.hydrated, "0")
    engine.close()
    tracker = FederationTracker(url, namespace=namespace, push_interval=3600)
    try:
        tracker.record_failure("probe.example", "SMTP")
        tracker.push()
        kill(NamespaceKeys(namespace).shard_for("probe.example").hydrated)
        killed = time.monotonic()
        while True:
            tracker.record_failure("probe.example", "SMTP")
            try:
                tracker.push(timeout=0.5)
                return time.monotonic() - killed
            except BackendUnavailableError:
                if time.monotonic() - killed > 60:
                    raise
    finally:
        tracker.close(timeout=30)


def run(env: Env, report: Report) -> None:
    from engines import RedisCluster, RedisSentinelSet
    from servers import RedisServer

    count = 5_000 if env.quick else DOMAINS
    single_rate, _calls, _ = push_rate(env.redis_url, count)
    with RedisCluster() as cluster:
        cluster_rate, calls, nodes = push_rate(cluster.url, count)
        spread = shard_spread(cluster.url)
        report.figure(
            SECTION,
            "push, one worker, typical rows, 3-master cluster: field updates/s",
            cluster_rate,
            "field updates/s",
            baseline=f"one server, same run: {single_rate:,.0f}/s",
            note=f"{spread}; a push round sends {calls} chunks as one pipeline per node"
            f" ({nodes} round trips per round, in parallel)",
        )
        cluster_failover = time_to_first_push(cluster.url, cluster.kill_master_for_key)
        report.figure(
            SECTION,
            "cluster: SIGKILL of a master → first acknowledged push",
            cluster_failover,
            "s",
            baseline="cluster-node-timeout 1000 ms; promotion ≈ 2.3 s (tests/engines.py)",
        )
    with RedisSentinelSet() as sentinels:
        sentinel_failover = time_to_first_push(sentinels.url, lambda _key: sentinels.kill_master())
        report.figure(
            SECTION,
            "sentinel: SIGKILL of the master → first acknowledged push",
            sentinel_failover,
            "s",
            baseline="down-after-milliseconds 1000; failover ≈ 2.3 s (tests/engines.py)",
        )
    primary = RedisServer().start()
    replica = RedisServer(extra_args=["--replicaof", "127.0.0.1", str(primary.port)]).start()
    try:
        client = redis.Redis(port=primary.port, decode_responses=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            info = client.info("replication")
            online = info.get("slave0", {}).get("state") == "online"
            if info.get("connected_slaves") == 1 and online:
                break
            time.sleep(0.05)
        client.close()
        plain, _, _ = push_rate(primary.url, count)
        waited, _, _ = push_rate(primary.url + "?wait_replicas=1", count)
        report.figure(
            SECTION,
            "push with wait_replicas=1 (one replica): field updates/s",
            waited,
            "field updates/s",
            baseline=f"the same server, wait_replicas=0: {plain:,.0f}/s"
            f" ({(1 - waited / plain) * 100:.0f} % less)",
        )
    finally:
        replica.close()
        primary.close()
