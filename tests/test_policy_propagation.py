"""Rules v2 across processes: every field of a rule reaches every process (by message and
by a resync from Redis), an expired rule stops matching everywhere within a second by
each process's clock, and the flusher leader removes it within 10 s with per-rule
removals (no resync), without ever deadlocking with concurrent changes."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from fedtrack_redis import Flusher, PolicyStore, Rule
from fedtrack_redis.keys import NamespaceKeys
from fedtrack_redis.policy.state import Change
from policy_workers import Workers
from servers import wait_for


@pytest.fixture
def workers(migrated_postgres_url: str, redis_url: str, namespace: str) -> Iterator[Workers]:
    group = Workers(2, migrated_postgres_url, redis_url, namespace)
    yield group
    group.close()


@pytest.fixture
def store(migrated_postgres_url: str, redis_url: str, namespace: str) -> Iterator[PolicyStore]:
    with PolicyStore(
        migrated_postgres_url, redis_url, namespace=namespace, resync_interval=0.2
    ) as writer:
        yield writer


def as_tuples(rules: list[Rule]) -> tuple[tuple[object, ...], ...]:
    return tuple(dataclasses.astuple(rule) for rule in rules)


def test_every_field_reaches_every_process(
    workers: Workers,
    store: PolicyStore,
    migrated_postgres_url: str,
    redis_url: str,
    namespace: str,
) -> None:
    store.add_rule(
        ".spam.example",
        effect="block",
        reason="phishing ✓",
        private_comment="ticket 42",
        created_by="alice",
        expires_at=2**40,
        source="manual",
        actor="cli:alice@host",
    )
    store.add_rule("*.relay?.example", effect="allow")
    store.add_rule("2001:db8::/32")
    expected = as_tuples(store.rules())
    wait_for(lambda: workers.ask("rules") == [expected] * 2, 5, "every field everywhere")
    store.add_rule(".spam.example", reason="phishing and scams")  # an update overwrites
    updated = as_tuples(store.rules())
    assert updated != expected
    wait_for(lambda: workers.ask("rules") == [updated] * 2, 5, "the update everywhere")
    assert workers.ask(("check", "www.spam.example"))[0][0] is False
    # A process that starts now loads everything from Redis (no message): the same rules.
    late = Workers(1, migrated_postgres_url, redis_url, namespace)
    try:
        assert late.ask("rules") == [updated]
    finally:
        late.close()
    store.remove_rule(".spam.example")
    remaining = as_tuples(store.rules())
    wait_for(lambda: workers.ask("rules") == [remaining] * 2, 5, "the removal everywhere")


def test_a_large_import_reaches_every_process_whole(workers: Workers, store: PolicyStore) -> None:
    rules = [
        Rule(f".bulk{i}.example", "subdomains", "block", f"reason {i}", source="import")
        for i in range(1500)
    ]
    report = store.import_rules(rules, format="fedtrack-json", target="bulk.json")
    assert len(report.added) == 1500
    expected = as_tuples(store.rules())
    wait_for(lambda: workers.ask("rules") == [expected] * 2, 10, "the import everywhere")


def test_expiry_is_seen_everywhere_within_a_second_then_removed_by_the_leader(
    workers: Workers,
    store: PolicyStore,
    migrated_postgres_url: str,
    redis_url: str,
    namespace: str,
) -> None:
    ops: list[str] = []
    store.add_listener(lambda change: ops.append(change.op))
    store.add_rule("kept.example", effect="block")
    expires = int(time.time()) + 3
    store.add_rule(".brief.example", effect="block", reason="for now", expires_at=expires)
    wait_for(
        lambda: all(not allowed for allowed, _ in workers.ask(("check", "x.brief.example"))),
        5,
        "the rule reached every worker",
    )
    seen: dict[int, float] = {}

    def every_process_allows() -> bool:
        for index, (allowed, at) in enumerate(workers.ask(("check", "x.brief.example"))):
            if allowed:
                seen.setdefault(index, at)
            else:
                assert at < expires + 1, f"worker {index} still blocks 1 s after the expiry"
        return len(seen) == len(workers.pipes)

    wait_for(every_process_allows, 10, "every worker stops matching the rule")
    assert all(at - expires <= 1.0 for at in seen.values()), (expires, seen)
    assert all(at >= expires for at in seen.values())
    assert store.has_rule(".brief.example")  # listed until the leader removes it
    with Flusher(redis_url, migrated_postgres_url, namespace=namespace, interval=1.0, lock_ttl=2.0):
        wait_for(lambda: not store.has_rule(".brief.example"), 12, "the leader removed it")
    removed_at = time.time()
    assert removed_at - expires <= 10 + 3  # the leader had to be elected first
    wait_for(
        lambda: all(".brief.example" not in s[3] for s in workers.states()),
        5,
        "the removal reached every worker",
    )
    [entry] = store.audit(target=".brief.example", limit=1)
    assert (entry.action, entry.actor, entry.after) == ("expire", "system:expiry", None)
    assert entry.before["reason"] == "for now"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert client.hkeys(NamespaceKeys(namespace).rules) == ["kept.example"]
    finally:
        client.close()
    assert "expire" in ops and "resync" not in ops  # per-rule removal, not a full reload


def test_the_leader_removes_expired_rules_within_ten_seconds(
    store: PolicyStore, migrated_postgres_url: str, redis_url: str, namespace: str
) -> None:
    with Flusher(redis_url, migrated_postgres_url, namespace=namespace, interval=1.0, lock_ttl=2.0):
        expires = int(time.time()) + 2
        store.add_rule("short.example", expires_at=expires)
        wait_for(lambda: not store.has_rule("short.example"), 15, "removed by the leader")
        assert time.time() - expires <= 10


def test_expiry_never_deadlocks_with_concurrent_changes(
    store: PolicyStore, migrated_postgres_url: str, redis_url: str, namespace: str
) -> None:
    """The leader's expiry and add_rule take the version row first, both: many of each at
    once end with every expired rule gone and no deadlock error."""
    errors: list[BaseException] = []
    stop = threading.Event()

    def churn() -> None:
        index = 0
        try:
            while not stop.is_set():
                store.add_rule(f"c{index % 20}.example", expires_at=int(time.time()) + 1)
                index += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn) for _ in range(3)]
    with Flusher(redis_url, migrated_postgres_url, namespace=namespace, interval=1.0, lock_ttl=2.0):
        for thread in threads:
            thread.start()
        wait_for(lambda: any(e.actor == "system:expiry" for e in store.audit(50)), 15, "expiry")
        stop.set()
        for thread in threads:
            thread.join()
        wait_for(lambda: store.count() == 0, 15, "every expired rule removed")
    assert errors == []


def test_messages_and_redis_values_carry_every_field(store: PolicyStore) -> None:
    from fedtrack_redis.policy.codec import decode_change, decode_rule, encode_change, encode_rule

    store.add_rule("m.example", effect="allow", reason="r", private_comment="p", expires_at=2**40)
    rule = store.get_rule("m.example")
    assert rule is not None
    assert decode_change(encode_change(Change(7, "add", rules=(rule,)))) == Change(
        7, "add", rules=(rule,)
    )
    assert decode_rule(rule.text, encode_rule(rule)) == rule
    assert decode_rule("old.example", "1700000000") == Rule(
        "old.example", "exact", created_at=1700000000
    )
    expire = Change(8, "expire", texts=("a.example", "b.example"))
    assert decode_change(encode_change(expire)) == expire
    old_add = '{"v": 9, "op": "add", "d": "old.example", "t": 17, "p": "", "e": true}'
    assert decode_change(old_add) == Change(
        9, "add", rules=(Rule("old.example", "exact", created_at=17),)
    )
    old_remove = '{"v": 10, "op": "remove", "d": "old.example", "t": 0, "p": "", "e": true}'
    assert decode_change(old_remove) == Change(10, "remove", texts=("old.example",))
    assert decode_change('{"v": 11, "op": "add"}') is None
