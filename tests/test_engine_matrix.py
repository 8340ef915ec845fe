"""One test body over every engine: one Redis server, Sentinel, Cluster (G2, G5, G6, G7, G8);
the queue shape too.

Each test runs three times through `engine_url`; the Sentinel and Cluster runs carry the
``engines`` mark. The deployments are the session's shared ones (tests/engines.py), and
each test cleans its own namespace on every node.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from fedtrack_redis import FederationTracker, Flusher, PolicyStore
from fedtrack_redis.engine import RedisEngine
from fedtrack_redis.hydrate import missing_shards
from fedtrack_redis.keys import NamespaceKeys
from fedtrack_redis.reads import read_all
from flusher_helpers import db_stats, make_engine
from servers import wait_for
from tracker_helpers import (
    expected_totals,
    finish_child,
    is_history_field,
    named,
    read_line,
    run_worker,
    start_child,
    workload,
)

WORKERS = 4
EVENTS = 6_000


@pytest.fixture
def engine(engine_url: str, namespace: str) -> Iterator[RedisEngine]:
    """An engine on the URL of this run; the namespace's keys go from every node after."""
    opened = RedisEngine.open(engine_url)
    yield opened
    for client in opened.primaries():
        for key in client.scan_iter(match=f"fedtrack:{{{namespace}:*", count=1000):
            client.delete(key)
    opened.close()


def engine_hashes(engine: RedisEngine, keys: NamespaceKeys) -> dict[str, dict[str, str]]:
    """Every domain hash of the namespace, through the activity index of each shard, its
    fields under their JSON names (`tracker_helpers.named`)."""
    found: dict[str, dict[str, str]] = {}
    for shard in keys.shards:
        client = engine.node_for(shard.base)
        for domain in client.zrange(shard.active, 0, -1):
            found[str(domain)] = named(client.hgetall(shard.domain(str(domain))))  # type: ignore[arg-type]
    return found


def expected_for(seeds: range) -> dict[str, dict[str, int]]:
    expected: dict[str, dict[str, int]] = {}
    for seed in seeds:
        for domain, fields in expected_totals(workload(seed, 300, EVENTS)).items():
            into = expected.setdefault(domain, {})
            for name, amount in fields.items():
                into[name] = into.get(name, 0) + amount
    return expected


def counters_only(fields: dict[str, str]) -> dict[str, int]:
    """The counters and histogram buckets of a domain hash (not last_active, the queue
    gauge or the history's bucket field)."""
    return {
        name: int(value)
        for name, value in fields.items()
        if name not in ("last_active", "queued_messages") and not is_history_field(name)
    }


@pytest.fixture
def leader(engine_url: str, namespace: str, migrated_postgres_url: str) -> Iterator[Flusher]:
    """The flusher leader of the namespace (it hydrates the new namespace first)."""
    flusher = Flusher(engine_url, migrated_postgres_url, namespace=namespace, interval=3600)
    assert flusher.flush_once() == 0
    yield flusher
    flusher.stop()


def test_workers_add_up_exactly_and_the_flush_equals_redis(
    engine_url: str,
    engine: RedisEngine,
    namespace: str,
    leader: Flusher,
    migrated_postgres_url: str,
) -> None:
    keys = NamespaceKeys(namespace)
    with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
        ids = pool.starmap(
            run_worker, [(engine_url, namespace, seed, EVENTS) for seed in range(WORKERS)]
        )
    assert len(set(ids)) == WORKERS
    stored = engine_hashes(engine, keys)
    expected = expected_for(range(WORKERS))
    assert set(stored) == set(expected)
    for domain, fields in stored.items():
        assert int(fields.get("queued_messages", "0")) == 0  # every worker closed
        assert counters_only(fields) == expected[domain], domain
    assert leader.flush_once() == len(stored)
    with make_engine(migrated_postgres_url) as database:
        rows = db_stats(database)
    for domain, fields in stored.items():
        assert rows[domain]["total_latency_ms"] == int(fields.get("total_latency_ms", 0))
        assert rows[domain]["last_active"] == int(fields["last_active"])
        histogram = {int(k[1:]): int(v) for k, v in fields.items() if k.startswith("h")}
        assert rows[domain]["histogram"] == histogram
    assert leader.flush_once() == 0


def test_a_lost_redis_is_hydrated_once_by_the_leader(
    engine_url: str, engine: RedisEngine, namespace: str, leader: Flusher
) -> None:
    keys = NamespaceKeys(namespace)
    tracker = FederationTracker(engine_url, namespace=namespace, push_interval=3600)
    try:
        for index in range(300):
            tracker.record_success(f"h{index % 60}.example", index, "HTTPS")
        tracker.push()
        assert leader.flush_once() == 60
        before = {s.domain: s for s in read_all(engine, keys)}
        for client in engine.primaries():  # Redis loses everything of the namespace
            for key in client.scan_iter(match=f"fedtrack:{{{namespace}:*", count=1000):
                client.delete(key)
        assert missing_shards(engine, keys)
        tracker.record_failure("h1.example", "SMTP")
        leader.flush_once()  # the leader hydrates, then flushes
        assert missing_shards(engine, keys) == []
        tracker.push(timeout=10)  # refused until hydrated, then applied once
        after = {s.domain: s for s in read_all(engine, keys)}
        assert set(after) == set(before)
        assert after["h1.example"].failed_smtp == 1
        for domain, stat in before.items():
            assert after[domain].success_https == stat.success_https, domain
            assert after[domain].total_latency_ms == stat.total_latency_ms, domain
    finally:
        tracker.close()


def test_a_lost_reply_is_retried_without_counting_twice(
    engine_url: str,
    engine: RedisEngine,
    namespace: str,
    leader: Flusher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The script ran, its reply never came back (the connection broke): the pusher sends
    the same chunks again and push.lua answers duplicate."""
    from fedtrack_redis.pusher import Pusher

    original = Pusher._read_from
    dropped: list[int] = []

    def lose_the_first_replies(self: Pusher, *args: Any) -> Any:
        replies = original(self, *args)
        if replies is not None and not dropped:
            dropped.append(len(replies))
            self._failed([chunk for chunk, _ in replies], redis.ConnectionError("reply lost"))
            return None
        return replies

    monkeypatch.setattr(Pusher, "_read_from", lose_the_first_replies)
    keys = NamespaceKeys(namespace)
    tracker = FederationTracker(engine_url, namespace=namespace, push_interval=3600)
    try:
        for index in range(400):
            tracker.record_failure(f"l{index % 40}.example", "SMTP")
        tracker.push(timeout=10)
        assert dropped and tracker.push_stats.duplicates >= 1
        stats = read_all(engine, keys)
        assert sum(stat.failed_smtp for stat in stats) == 400
        assert {stat.domain for stat in stats} == {f"l{i}.example" for i in range(40)}
    finally:
        tracker.close()


STORE_CHILD = """
    import sys, time
    from fedtrack_redis import PolicyStore
    database, url, namespace = ARGS
    store = PolicyStore(database, url, namespace=namespace, resync_interval=0.2).init()
    print("ready", flush=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if store.has_rule("spam.example") and store.get_policy() == "REJECT":
            print("seen", flush=True)
            break
        time.sleep(0.01)
    store.close()
"""


def test_policy_changes_reach_every_process(
    engine_url: str, engine: RedisEngine, namespace: str, migrated_postgres_url: str
) -> None:
    child = start_child(
        STORE_CHILD.replace("ARGS", repr((migrated_postgres_url, engine_url, namespace)))
    )
    try:
        assert read_line(child) == "ready"
        with PolicyStore(migrated_postgres_url, engine_url, namespace=namespace) as store:
            other = PolicyStore(
                migrated_postgres_url, engine_url, namespace=namespace, resync_interval=0.2
            ).init()
            try:
                store.add_rule("spam.example")
                store.set_policy("REJECT")
                wait_for(
                    lambda: other.has_rule("spam.example") and other.get_policy() == "REJECT",
                    5,
                    "the change reaches the other store",
                )
            finally:
                other.close()
            assert read_line(child) == "seen"
    finally:
        finish_child(child)


LEASED_CHILD = """
    import signal
    from fedtrack_redis import FederationTracker
    url, namespace = ARGS
    tracker = FederationTracker(url, namespace=namespace, push_interval=0.05, lease_ttl=2.0)
    for domain in ("a.example", "b.example", "c.example"):
        tracker.increment_queue(domain)
    tracker.push()
    print(tracker.worker_id, flush=True)
    while True:
        signal.pause()
"""


def test_a_killed_workers_queue_lease_is_released(
    engine_url: str, engine: RedisEngine, namespace: str, leader: Flusher
) -> None:
    keys = NamespaceKeys(namespace)
    live = FederationTracker(engine_url, namespace=namespace, push_interval=0.05, lease_ttl=2.0)
    try:
        live.increment_queue("a.example")
        live.push()
        child = start_child(LEASED_CHILD.replace("ARGS", repr((engine_url, namespace))))
        try:
            read_line(child)

            def queued() -> dict[str, int]:
                return {s.domain: s.queued_messages for s in read_all(engine, keys)}

            assert queued() == {"a.example": 2, "b.example": 1, "c.example": 1}
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        finally:
            finish_child(child)
        # The live tracker's reaper releases the dead lease (2 s TTL, reaped every 1 s).
        wait_for(
            lambda: queued() == {"a.example": 1, "b.example": 0, "c.example": 0},
            15,
            "the dead worker's in-flight count leaves",
        )
    finally:
        live.close()


def test_qshape_sums_two_workers_on_every_engine(
    engine_url: str, engine: RedisEngine, namespace: str, leader: Flusher
) -> None:
    import time

    names = [f"q{i}.example" for i in range(40)]  # spread over every shard (and node)
    one = FederationTracker(engine_url, namespace=namespace, push_interval=3600)
    two = FederationTracker(engine_url, namespace=namespace, push_interval=3600)
    try:
        now = time.time()
        for name in names:
            one.increment_queue(name)
            two.increment_queue(name, enqueued_at=now - 700)  # column 20
        two.increment_queue("q0.example", enqueued_at=now - 100_000)  # 1280+
        one.push()
        two.push()
        shape = one.qshape(top=3)
        assert shape[0] == ("q0.example", [3, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1])
        assert shape[1:] == [(n, [2, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0]) for n in sorted(names)[1:3]]
        two.close()
        assert one.qshape(top=1) == [("q0.example", [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0])]
    finally:
        one.close()
        two.close()


def test_the_api_names_the_engine_its_nodes_and_their_replicas(
    engine_url: str, namespace: str, migrated_postgres_url: str
) -> None:
    from fastapi.testclient import TestClient

    from fedtrack_redis.api.app import create_app
    from fedtrack_redis.config import Settings

    token = "matrix-token-0123456789abcdefghijklmn"
    settings = Settings(
        redis_url=engine_url,
        database_url=migrated_postgres_url,
        namespace=namespace,
        admin_token=token,
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/federation/engine").status_code == 401
        body = client.get(
            "/api/federation/engine", headers={"Authorization": f"Bearer {token}"}
        ).json()
        health = client.get("/healthz").json()
    kind = RedisEngine.open(engine_url).kind
    assert body["redis"] == "ok"
    assert body["engine"] == health["engine"] == kind
    assert all(node["up"] and node["role"] == "master" for node in body["nodes"])
    # The session's deployments: one bare server, a master with 2 replicas, 3 masters
    # with one replica each.
    expected = {"single": [0], "sentinel": [2], "cluster": [1, 1, 1]}[kind]
    assert sorted(node["replicas"] for node in body["nodes"]) == expected
    if kind == "sentinel":
        assert body["master"] == body["nodes"][0]["address"]
    for node in body["nodes"]:
        assert len(node["replica_details"]) == node["replicas"]
        assert all(r["state"] == "online" for r in node["replica_details"])
