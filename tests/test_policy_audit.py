"""The audit log, on PostgreSQL and on SQLite: every kind of change leaves exactly one
entry with its actor, target, before and after; a change that changes nothing leaves
none; a rolled-back change leaves none; paging, targets and time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from fedtrack_redis import BackendUnavailableError, PolicyStore
from fedtrack_redis.engine import RedisEngine
from fedtrack_redis.identity import IdentityGuard
from fedtrack_redis.policy.audit import AuditEntry
from fedtrack_redis.policy.expiry import expire_due_rules
from fedtrack_redis.policy.rules import make_rule
from fedtrack_redis.policy.sync import PolicyRedis

ACTOR = "cli:ops@host1"


def kinds(entries: list[AuditEntry]) -> list[tuple[str, str, str]]:
    return [(e.action, e.target, e.actor) for e in reversed(entries)]


def test_every_action_kind_leaves_one_entry_with_before_and_after(
    policy_store: PolicyStore, database_url: str, redis_url: str, namespace: str
) -> None:
    store = policy_store
    store.add_rule(".spam.example", effect="block", reason="spam", actor=ACTOR)
    store.add_rule(".spam.example", reason="phishing", actor="api:ops@10.0.0.5")
    store.remove_rule(".spam.example", actor=ACTOR)
    store.add_rules(["a.example", "b.example"], actor=ACTOR)
    store.import_rules(
        [make_rule("c.example", effect="allow")], target="allow.csv", actor="api:bot@10.0.0.6"
    )
    store.flush_rules(actor=ACTOR)
    store.set_policy("REJECT", actor=ACTOR)
    store.set_enabled(False, actor=ACTOR)
    store.add_rule("brief.example", expires_at=int(time.time()) + 1, actor=ACTOR)
    engine = sa.create_engine(database_url)
    redis_engine = RedisEngine.open(redis_url)
    try:
        side = PolicyRedis(redis_engine, store.keys)
        removed = expire_due_rules(engine, side, IdentityGuard(namespace), now=int(time.time()) + 5)
    finally:
        redis_engine.close()
        engine.dispose()
    assert removed == 1
    entries = store.audit()
    assert kinds(entries) == [
        ("add", ".spam.example", ACTOR),
        ("update", ".spam.example", "api:ops@10.0.0.5"),
        ("remove", ".spam.example", ACTOR),
        ("import", "add_rules", ACTOR),
        ("import", "allow.csv", "api:bot@10.0.0.6"),
        ("flush", "*", ACTOR),
        ("policy", "policy", ACTOR),
        ("enabled", "enabled", ACTOR),
        ("add", "brief.example", ACTOR),
        ("expire", "brief.example", "system:expiry"),
    ]
    by: dict[tuple[str, str], Any] = {(e.action, e.target): e for e in entries}
    add = by["add", ".spam.example"]
    assert add.before is None
    assert (add.after["text"], add.after["effect"], add.after["reason"]) == (
        ".spam.example",
        "block",
        "spam",
    )
    update = by["update", ".spam.example"]
    assert (update.before["reason"], update.after["reason"]) == ("spam", "phishing")
    assert update.after["created_at"] == update.before["created_at"]
    assert update.after["updated_at"] is not None
    remove = by["remove", ".spam.example"]
    assert (remove.before["reason"], remove.after) == ("phishing", None)
    assert by["import", "add_rules"].after | {"texts": None} == {
        "format": "text",
        "added": 2,
        "updated": 0,
        "skipped": 0,
        "invalid": 0,
        "count": 2,
        "texts": None,
        "more": 0,
    }
    assert by["import", "add_rules"].after["texts"] == ["a.example", "b.example"]
    flush = by["flush", "*"]
    assert (flush.before, flush.after) == (
        {"count": 3, "texts": ["a.example", "b.example", "c.example"], "more": 0},
        None,
    )
    assert (by["policy", "policy"].before, by["policy", "policy"].after) == ("ACCEPT", "REJECT")
    assert (by["enabled", "enabled"].before, by["enabled", "enabled"].after) == (True, False)
    expire = by["expire", "brief.example"]
    assert (expire.before["text"], expire.after) == ("brief.example", None)
    ids = [entry.id for entry in entries]
    assert ids == sorted(ids, reverse=True)  # newest first
    now = int(time.time())
    assert all(now - 60 <= entry.at <= now + 5 for entry in entries)


def test_a_change_that_changes_nothing_writes_nothing(policy_store: PolicyStore) -> None:
    store = policy_store
    store.flush_rules()  # no rules
    store.set_policy("accept")  # already ACCEPT
    store.set_enabled(True)  # already on
    store.remove_rule("unknown.example")
    store.add_rule("a.example")
    store.add_rule("A.example.")
    store.add_rules(["a.example"])
    store.import_rules([make_rule("a.example")], target="same.txt")
    assert kinds(store.audit()) == [("add", "a.example", store.audit()[0].actor)]


def test_paging_by_before_id_by_target_and_since(policy_store: PolicyStore) -> None:
    store = policy_store
    for index in range(7):
        store.add_rule(f"r{index}.example", actor=ACTOR)
    store.add_rule("r3.example", reason="again", actor=ACTOR)
    first = store.audit(3)
    assert [e.target for e in first] == ["r3.example", "r6.example", "r5.example"]
    second = store.audit(3, before_id=first[-1].id)
    assert [e.target for e in second] == ["r4.example", "r3.example", "r2.example"]
    assert all(e.id < first[-1].id for e in second)
    assert [e.action for e in store.audit(target="R3.Example.")] == ["update", "add"]
    assert store.audit(target="never.example") == []
    assert len(store.audit(since=int(time.time()) - 60)) == 8
    assert store.audit(since=int(time.time()) + 60) == []
    for bad in (0, 1001, True):
        with pytest.raises(ValueError, match="limit"):
            store.audit(bad)


def test_a_failed_change_leaves_no_entry(
    make_policy_store: Callable[..., PolicyStore], database_url: str
) -> None:
    store = make_policy_store()
    store.add_rule("a.example")
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as connection:  # a change that cannot commit: the row vanishes
            connection.execute(sa.text("DROP TABLE federation_audit"))
        with pytest.raises((sa.exc.SQLAlchemyError, BackendUnavailableError)):
            store.add_rule("b.example")
    finally:
        engine.dispose()
    assert not store.has_rule("b.example")
    other = make_policy_store()
    assert sorted(other.list_rules()) == ["a.example"]
