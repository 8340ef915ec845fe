"""policy/sync.py through its own interface: `PolicyRedis` (the two scripts, snapshot
reads), `PolicySync`'s message handling and version checks, and the leader's
`rebuild_redis` / `reconcile_with_database` (G7, G11).

The script tests run on fakeredis and on the real Redis (`script_client`); the publish,
rebuild and reconcile tests need the real Redis and PostgreSQL.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import redis

from fedtrack_redis import PolicyStore, parse_rule
from fedtrack_redis.connections import database_engine
from fedtrack_redis.engine import RedisEngine
from fedtrack_redis.errors import DatabaseMismatchError
from fedtrack_redis.identity import IdentityGuard
from fedtrack_redis.keys import NamespaceKeys
from fedtrack_redis.policy import sync
from fedtrack_redis.policy.codec import encode_change
from fedtrack_redis.policy.state import ACCEPT, REJECT, Change, PolicyState, Snapshot
from fedtrack_redis.policy.sync import (
    PolicyRedis,
    PolicySync,
    rebuild_redis,
    reconcile_with_database,
)

DB_A = "a" * 32
DB_B = "b" * 32


@pytest.fixture
def side(script_client: redis.Redis, namespace: str) -> Iterator[PolicyRedis]:
    yield PolicyRedis(RedisEngine.wrap(script_client), NamespaceKeys(namespace))
    for key in script_client.scan_iter(match=f"fedtrack:{{{namespace}:*"):
        script_client.delete(key)


def add(version: int, *texts: str) -> Change:
    return Change(version, "add", rules=tuple(parse_rule(text) for text in texts))


def snapshot(version: int, *texts: str, policy: str = ACCEPT) -> Snapshot:
    return Snapshot(version, policy, True, {t: parse_rule(t) for t in texts})


def texts_of(state: PolicyState) -> set[str]:
    return {text for text, _rule in state.rules.items()}


def message(change: Change) -> dict[str, str]:
    return {"type": "message", "data": encode_change(change)}


# -- PolicyRedis ------------------------------------------------------------------------


def test_changes_apply_once_in_version_order(side: PolicyRedis) -> None:
    assert side.version() is None and side.read_snapshot() is None
    assert side.replace(snapshot(1, "a.example"), DB_A) == 1
    assert side.apply(add(2, "b.example"), DB_A) == 1
    assert side.apply(add(2, "b.example"), DB_A) == 0  # a retry: already there
    assert side.apply(add(4, "d.example"), DB_A) == -1  # version 3 is missing
    assert side.apply(Change(3, "policy", policy=REJECT), DB_A) == 1
    assert side.apply(Change(4, "remove", texts=("a.example",)), DB_A) == 1
    found = side.read_snapshot()
    assert found is not None
    state, identity = found
    assert (state.version, state.policy, identity) == (4, REJECT, DB_A)
    assert sorted(state.rules) == ["b.example"]


def test_a_change_or_snapshot_of_another_database_is_refused(side: PolicyRedis) -> None:
    assert side.replace(snapshot(3, "a.example"), DB_A) == 1
    assert side.apply(add(4, "evil.example"), DB_B) == -2
    assert side.replace(snapshot(9, "evil.example"), DB_B) == -2
    found = side.read_snapshot()
    assert found is not None and found[0].version == 3 and list(found[0].rules) == ["a.example"]
    assert side.identity() == DB_A


def test_replace_installs_only_newer_snapshots_and_leaves_no_staging(
    side: PolicyRedis, script_client: redis.Redis
) -> None:
    texts = [f"host{i}.example" for i in range(2 * sync.STAGING_BATCH + 17)]
    assert side.replace(snapshot(5, *texts), DB_A) == 1
    assert side.replace(snapshot(5, "other.example"), DB_A) == 0
    assert side.replace(snapshot(4, "other.example"), DB_A) == 0
    found = side.read_snapshot()  # read in slices: more rules than one batch
    assert found is not None and found[0].version == 5 and sorted(found[0].rules) == sorted(texts)
    staging = list(script_client.scan_iter(match=f"{side.keys.policy_tag}:staging:*"))
    assert staging == []


def test_a_sliced_read_never_mixes_two_versions(
    side: PolicyRedis, script_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [f"host{i}.example" for i in range(sync.STAGING_BATCH + 1)]
    assert side.replace(snapshot(1, *texts), DB_A) == 1
    original = script_client.hscan_iter
    changes = iter([add(2, "new.example"), add(3, "newer.example")])

    def moving(*args: object, **kwargs: object) -> Iterator[object]:
        change = next(changes, None)
        if change is not None:  # a change lands between the version read and the slices
            assert side.apply(change, DB_A) == 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(script_client, "hscan_iter", moving)
    found = side.read_snapshot()
    assert found is not None
    state, _ = found
    assert state.version == 3
    assert set(state.rules) == {*texts, "new.example", "newer.example"}


def test_a_change_is_published_with_its_version(redis_client: redis.Redis, namespace: str) -> None:
    side = PolicyRedis(RedisEngine.wrap(redis_client), NamespaceKeys(namespace))
    with redis_client.pubsub() as pubsub:
        pubsub.subscribe(side.keys.policy_channel)
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
        assert side.replace(snapshot(1), DB_A) == 1
        assert side.apply(add(2, "a.example"), DB_A) == 1
        first = pubsub.get_message(timeout=5)
        second = pubsub.get_message(timeout=5)
    assert first is not None and json.loads(first["data"])["op"] == "resync"
    assert second is not None
    published = json.loads(second["data"])
    assert (published["v"], published["op"]) == (2, "add")
    assert [rule["t"] for rule in published["r"]] == ["a.example"]


# -- PolicySync -------------------------------------------------------------------------


class Recorded:
    """A PolicySync (not started) over `side`, with the changes it notified."""

    def __init__(self, side: PolicyRedis, guard: IdentityGuard | None = None) -> None:
        self.state = PolicyState()
        self.seen: list[Change] = []
        self.sync = PolicySync(
            self.state,
            side,
            guard or IdentityGuard(side.keys.namespace),
            listeners=[self._broken, self.seen.append],
        )

    @staticmethod
    def _broken(_change: Change) -> None:
        raise RuntimeError("a listener that fails must not stop the others")


def test_messages_apply_in_order_and_a_gap_resyncs_from_redis(side: PolicyRedis) -> None:
    assert side.replace(snapshot(1, "a.example"), DB_A) == 1
    process = Recorded(side)
    process.sync.handle({"type": "subscribe"})  # (re)subscribed: reads Redis in full
    assert process.state.version == 1 and "a.example" in process.state.rules
    assert side.apply(add(2, "b.example"), DB_A) == 1
    process.sync.handle(message(add(2, "b.example")))
    process.sync.handle(message(add(2, "b.example")))  # a duplicate is stale
    assert process.state.version == 2 and "b.example" in process.state.rules
    # Versions 3 and 4 reach Redis, but only 4's message arrives: a gap, so a resync.
    assert side.apply(add(3, "c.example"), DB_A) == 1
    assert side.apply(add(4, "d.example"), DB_A) == 1
    process.sync.handle(message(add(4, "d.example")))
    assert process.state.version == 4
    assert {text for text, _ in process.state.rules.items()} == {
        "a.example",
        "b.example",
        "c.example",
        "d.example",
    }
    assert [change.op for change in process.seen] == ["resync", "add", "resync"]


def test_a_malformed_message_is_ignored(
    side: PolicyRedis, caplog: pytest.LogCaptureFixture
) -> None:
    assert side.replace(snapshot(1, "a.example"), DB_A) == 1
    process = Recorded(side)
    process.sync.handle({"type": "subscribe"})
    with caplog.at_level(logging.WARNING, "fedtrack_redis.policy"):
        process.sync.handle({"type": "message", "data": "{not json"})
        process.sync.handle({"type": "message", "data": '{"v": "x", "op": "add"}'})
    assert process.state.version == 1
    assert caplog.text.count("malformed") == 2


def test_a_missed_message_is_caught_on_the_second_look(
    side: PolicyRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert side.replace(snapshot(1), DB_A) == 1
    process = Recorded(side)
    process.sync.handle({"type": "subscribe"})
    resyncs: list[int] = []
    original = process.sync.resync_from_redis
    monkeypatch.setattr(
        process.sync, "resync_from_redis", lambda: (resyncs.append(1), original())[1]
    )
    # A message in flight: Redis is ahead at one look, the message arrives before the next.
    assert side.apply(add(2, "a.example"), DB_A) == 1
    process.sync.check_version()
    process.sync.handle(message(add(2, "a.example")))
    process.sync.check_version()
    assert resyncs == [] and process.state.version == 2
    # A missed message: still behind at the second look, so one resync.
    assert side.apply(add(3, "b.example"), DB_A) == 1
    process.sync.check_version()
    assert resyncs == []
    process.sync.check_version()
    assert resyncs == [1] and process.state.version == 3


def test_redis_of_another_database_or_without_a_policy_leaves_the_rules_alone(
    side: PolicyRedis, script_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    assert side.replace(snapshot(2, "a.example"), DB_A) == 1
    guard = IdentityGuard(side.keys.namespace)
    process = Recorded(side, guard)
    process.sync.handle({"type": "subscribe"})
    assert guard.remembered == DB_A and process.state.version == 2
    # Redis lost the policy: the hot path keeps the last rules, warned once.
    script_client.delete(side.keys.rules, side.keys.policy_meta)
    with caplog.at_level(logging.WARNING, "fedtrack_redis.policy"):
        process.sync.resync_from_redis()
        process.sync.resync_from_redis()
    assert caplog.text.count("Redis holds no policy") == 1
    # Another database's policy got into Redis: refused, the rules stay.
    assert side.replace(snapshot(7, "evil.example"), DB_B) == 1
    with caplog.at_level(logging.ERROR, "fedtrack_redis.policy"):
        process.sync.resync_from_redis()
    assert process.state.version == 2 and {text for text, _ in process.state.rules.items()} == {
        "a.example"
    }
    assert f"Redis holds the policy of database {DB_B}" in caplog.text


# -- the leader's side: rebuild and reconcile (real Redis and PostgreSQL) ---------------


@pytest.fixture
def committed(
    migrated_postgres_url: str, redis_url: str, namespace: str
) -> Iterator[tuple[PolicyStore, PolicyRedis]]:
    """A database holding a policy at version 2 (two rules), and the namespace's Redis."""
    store = PolicyStore(migrated_postgres_url, redis_url, namespace=namespace)
    store.init(migrate=False)
    store.add_rule("a.example")
    store.add_rule("b.example")
    side = PolicyRedis(RedisEngine.open(redis_url), NamespaceKeys(namespace))
    yield store, side
    store.close()
    side.engine.close()


def test_reconcile_rebuilds_a_lost_policy_at_once_and_a_lagging_one_on_the_second_look(
    committed: tuple[PolicyStore, PolicyRedis], migrated_postgres_url: str
) -> None:
    _store, side = committed
    database = database_engine(migrated_postgres_url)
    guard = IdentityGuard(side.keys.namespace)
    lagging: list[int | None] = [None]
    version = side.version()
    assert version is not None
    assert reconcile_with_database(database, side, guard, lagging) is False  # up to date
    side.client.delete(side.keys.rules, side.keys.policy_meta)
    assert reconcile_with_database(database, side, guard, lagging) is True  # lost: at once
    found = side.read_snapshot()
    assert found is not None and found[0].version == version
    assert set(found[0].rules) == {"a.example", "b.example"}
    # Behind (a change committed while Redis was away): rebuilt on the second look only,
    # since a change in flight is behind for a moment too.
    side.client.hset(side.keys.policy_meta, "version", version - 1)
    side.client.hdel(side.keys.rules, "b.example")
    assert reconcile_with_database(database, side, guard, lagging) is False
    assert reconcile_with_database(database, side, guard, lagging) is True
    found = side.read_snapshot()
    assert found is not None and found[0].version == version and "b.example" in found[0].rules
    database.dispose()


def test_rebuild_refuses_a_database_that_is_not_the_namespaces(
    committed: tuple[PolicyStore, PolicyRedis], migrated_postgres_url: str
) -> None:
    _store, side = committed
    database = database_engine(migrated_postgres_url)
    before = side.read_snapshot()
    with pytest.raises(DatabaseMismatchError):
        rebuild_redis(database, side, IdentityGuard(side.keys.namespace, pinned=DB_B))
    side.client.hset(side.keys.policy_meta, "database_id", DB_B)  # Redis names another one
    with pytest.raises(DatabaseMismatchError):
        rebuild_redis(database, side, IdentityGuard(side.keys.namespace))
    after = side.read_snapshot()
    assert before is not None and after is not None and after[0] == before[0]
    database.dispose()
