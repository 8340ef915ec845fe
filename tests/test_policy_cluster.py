"""Policy propagation across processes, missed messages, cut subscriptions, Redis restarts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing

import pytest
import redis

from fedtrack_redis import Flusher, PolicyStore, PropagationPendingError, Rule
from fedtrack_redis.engine import RedisEngine
from fedtrack_redis.keys import NamespaceKeys
from fedtrack_redis.policy.state import Change
from fedtrack_redis.policy.sync import PolicyRedis
from policy_workers import Workers
from servers import RedisServer, wait_for


@pytest.fixture
def workers(migrated_postgres_url: str, redis_url: str, namespace: str) -> Iterator[Workers]:
    group = Workers(3, migrated_postgres_url, redis_url, namespace)
    yield group
    group.close()


def test_changes_reach_every_process(
    workers: Workers, migrated_postgres_url: str, redis_url: str, namespace: str
) -> None:
    with PolicyStore(migrated_postgres_url, redis_url, namespace=namespace) as store:
        store.add_rule("spam.example")
        workers.wait_all(lambda s: s[3] == ("spam.example",), "rule added everywhere")
        store.add_rule("junk.example")
        store.remove_rule("spam.example")
        workers.wait_all(lambda s: s[3] == ("junk.example",), "rule removed everywhere")
        store.set_policy("REJECT")
        workers.wait_all(lambda s: s[1] == "REJECT", "policy changed everywhere")
        store.set_enabled(False)
        workers.wait_all(lambda s: s[2] is False, "federation disabled everywhere")
        store.flush_rules()
        workers.wait_all(lambda s: s[3] == () and s[0] == store.version, "flushed everywhere")


def test_concurrent_changes_from_several_hosts_converge(
    workers: Workers,
    make_policy_store: Callable[..., PolicyStore],
    redis_client: redis.Redis,
    namespace: str,
    database_url: str,
    redis_url: str,
) -> None:
    stores = [make_policy_store() for _ in range(3)]

    import threading

    def churn(index: int, store: PolicyStore) -> None:
        for step in range(12):
            store.add_rule(f"r{step % 4}.example")
            if step % 3 == index:
                store.remove_rule(f"r{(step + index) % 4}.example")
            if step == 6:
                store.set_policy("REJECT" if index % 2 else "ACCEPT")

    threads = [threading.Thread(target=churn, args=(i, s)) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with PolicyStore(database_url, redis_url, namespace=namespace) as database:
        expected = (database.version, database.get_policy(), sorted(database.list_rules()))
    keys = NamespaceKeys(namespace)
    wait_for(
        lambda: (
            int(redis_client.hget(keys.policy_meta, "version") or 0) == expected[0]
            and sorted(redis_client.hkeys(keys.rules)) == expected[2]
        ),
        5,
        "Redis equals the database",
    )
    for store in stores:
        wait_for(
            lambda store=store: (
                (store.version, store.get_policy(), sorted(store.list_rules())) == expected
            ),
            5,
            "every in-process cache equals the database",
        )
    workers.wait_all(
        lambda s: (s[0], s[1], list(s[3])) == expected, "every process equals the database"
    )


def test_a_process_that_missed_messages_resyncs(
    make_policy_store: Callable[..., PolicyStore], redis_url: str, namespace: str
) -> None:
    writer = make_policy_store()
    reader = make_policy_store(resync_interval=1.0)
    writer.add_rule("seen.example")
    wait_for(lambda: reader.has_rule("seen.example"), 5, "first rule")
    # Apply the next change to Redis but announce it on a channel nobody listens to.
    engine = RedisEngine.open(redis_url)
    try:
        side = PolicyRedis(engine, NamespaceKeys(namespace))
        side.keys = SilentKeys(namespace)
        rule = Rule("missed.example", "exact", created_at=1)
        silent = Change(writer.version + 1, "add", rules=(rule,))
        identity = writer.database_id()
        assert identity is not None
        assert side.apply(silent, identity) == 1
    finally:
        engine.close()
    wait_for(lambda: reader.has_rule("missed.example"), 5, "resync after a missed message")


class SilentKeys(NamespaceKeys):
    """The namespace's keys, but a channel nobody subscribes to."""

    @property
    def policy_channel(self) -> str:  # type: ignore[override]
        return "fedtrack-test:nobody-listens"


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


@pytest.mark.slow
def test_cut_subscriptions_resync_and_converge(
    own_redis: RedisServer, migrated_postgres_url: str, namespace: str
) -> None:
    stores = [
        PolicyStore(
            migrated_postgres_url, own_redis.url, namespace=namespace, resync_interval=5.0
        ).init()
        for _ in range(3)
    ]
    try:
        stores[0].add_rule("before.example")
        for store in stores:
            wait_for(lambda store=store: store.has_rule("before.example"), 5, "before the cut")
        admin = redis.Redis(port=own_redis.port)
        with closing(admin):
            assert admin.client_kill_filter(_type="pubsub") >= 3
            stores[0].add_rule("during.example")  # may be published while nobody listens
            stores[0].set_policy("REJECT")
        for store in stores:
            wait_for(
                lambda store=store: (
                    store.has_rule("during.example") and store.get_policy() == "REJECT"
                ),
                5,
                "after the cut",
            )
    finally:
        for store in stores:
            store.close()


@pytest.mark.slow
def test_redis_restart_is_rebuilt_from_the_database_by_the_flusher_leader(
    own_redis: RedisServer, migrated_postgres_url: str, namespace: str
) -> None:
    url = migrated_postgres_url
    writer = PolicyStore(url, own_redis.url, namespace=namespace, resync_interval=0.2)
    reader = PolicyStore(url, own_redis.url, namespace=namespace, resync_interval=0.2)
    leader = Flusher(own_redis.url, url, namespace=namespace, interval=1.0, lock_ttl=2.0)
    with writer, reader, leader:
        writer.add_rule("kept.example")
        wait_for(lambda: reader.has_rule("kept.example"), 5, "rule reached the reader")
        own_redis.kill()
        # Redis is down: caches keep serving the last known rules.
        assert reader.has_rule("kept.example")
        assert writer.has_rule("kept.example")
        # A change now commits and applies here, and says it is not propagated yet.
        with pytest.raises(PropagationPendingError):
            writer.add_rule("while-down.example")
        assert writer.has_rule("while-down.example")
        assert not reader.has_rule("while-down.example")
        own_redis.start()  # empty: no persistence; the flusher leader rebuilds the policy
        wait_for(lambda: reader.has_rule("while-down.example"), 15, "change reached the reader")
        keys = NamespaceKeys(namespace)
        client = redis.Redis(port=own_redis.port, decode_responses=True)
        with closing(client):
            wait_for(
                lambda: sorted(client.hkeys(keys.rules)) == ["kept.example", "while-down.example"],
                5,
                "Redis rebuilt from the database",
            )
        writer.remove_rule("kept.example")
        wait_for(lambda: not reader.has_rule("kept.example"), 5, "changes flow again")
