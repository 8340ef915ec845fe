"""Rule metadata through the store, on PostgreSQL and on SQLite: every field kept in the
database, Redis and the cache; a re-add changes only what it passes; bad fields change
nothing; imports merge in one transaction."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

import pytest
import redis
import sqlalchemy as sa

from fedtrack_redis import InvalidDomainError, InvalidRuleError, PolicyStore, Rule
from fedtrack_redis.keys import NamespaceKeys
from fedtrack_redis.policy.codec import decode_rule
from fedtrack_redis.policy.rules import make_rule
from servers import wait_for


def test_a_rule_keeps_every_field(policy_store: PolicyStore) -> None:
    before = int(time.time())
    expires = before + 3600
    total = policy_store.add_rule(
        ".Spam.Example",
        effect="block",
        reason="phishing",
        private_comment="ticket 42",
        expires_at=expires,
        source="manual",
        actor="cli:ops@host",
    )
    assert total == 1
    [rule] = policy_store.rules()
    assert rule == Rule(
        ".spam.example",
        "subdomains",
        "block",
        "phishing",
        "ticket 42",
        "cli:ops@host",  # created_by defaults to the actor
        "manual",
        rule.created_at,
        None,
        expires,
    )
    assert before <= rule.created_at <= int(time.time())
    assert policy_store.get_rule(".SPAM.example.") == rule
    assert policy_store.list_rules() == {".spam.example": rule.created_at}
    assert policy_store.has_rule(".spam.example")
    assert not policy_store.has_rule("spam.example")  # a rule's text, not what it matches


def test_the_default_actor_and_creator_are_the_library_on_this_host(
    policy_store: PolicyStore,
) -> None:
    policy_store.add_rule("a.example")
    [rule] = policy_store.rules()
    assert rule.created_by == f"library:{socket.gethostname()}"
    assert policy_store.audit()[0].actor == f"library:{socket.gethostname()}"
    policy_store.add_rule("b.example", created_by="importer 7")
    assert policy_store.get_rule("b.example").created_by == "importer 7"  # type: ignore[union-attr]


def test_a_re_add_changes_only_what_it_passes(policy_store: PolicyStore) -> None:
    policy_store.add_rule("x.example", effect="block", reason="spam", expires_at=2**40)
    first = policy_store.get_rule("x.example")
    assert first is not None and first.updated_at is None
    version = policy_store.version
    assert policy_store.add_rule("X.example") == 1  # parity call: changes nothing
    assert policy_store.add_rule("x.example", effect="block") == 1  # the same value
    assert policy_store.version == version  # nothing written, nothing sent
    assert len(policy_store.audit()) == 1
    policy_store.add_rule("x.example", reason="spam and scams")
    second = policy_store.get_rule("x.example")
    assert second is not None
    assert (second.effect, second.reason, second.expires_at) == ("block", "spam and scams", 2**40)
    assert second.created_at == first.created_at
    assert second.updated_at is not None and second.updated_at >= first.created_at
    policy_store.add_rule("x.example", effect="exception", expires_at=None)
    third = policy_store.get_rule("x.example")
    assert third is not None
    assert (third.effect, third.reason, third.expires_at) == ("exception", "spam and scams", None)


@pytest.mark.parametrize(
    ("text", "fields", "message"),
    [
        ("bad domain", {}, "invalid rule"),
        ("192.0.2.7/24", {}, "host bits set"),
        (".[1.2.3.4]", {}, "address literal"),
        ("ok.example", {"effect": "deny"}, "effect 'deny'"),
        ("ok.example", {"expires_at": 1}, "not in the future"),
        ("ok.example", {"expires_at": True}, "unix seconds"),
        ("ok.example", {"reason": 5}, "reason must be a string"),
        ("ok.example", {"reason": "x" * 5000}, "longer than"),
    ],
)
def test_bad_rules_and_fields_raise_and_change_nothing(
    policy_store: PolicyStore, text: str, fields: dict[str, object], message: str
) -> None:
    policy_store.add_rule("kept.example")
    version = policy_store.version
    with pytest.raises(InvalidRuleError, match=message) as info:
        policy_store.add_rule(text, **fields)  # type: ignore[arg-type]
    assert isinstance(info.value, InvalidDomainError)
    assert "\n" not in str(info.value)
    assert policy_store.version == version
    assert [rule.text for rule in policy_store.rules()] == ["kept.example"]
    assert len(policy_store.audit()) == 1


def test_every_field_is_in_the_database_and_in_redis(
    policy_store: PolicyStore, database_url: str, redis_client: redis.Redis, namespace: str
) -> None:
    policy_store.add_rule("*.relay.example", effect="allow", reason="ünïcode ✓", expires_at=2**40)
    rule = policy_store.get_rule("*.relay.example")
    assert rule is not None
    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        row = connection.execute(
            sa.text("SELECT domain, kind, effect, reason, expires_at FROM federation_rules")
        ).one()
    engine.dispose()
    assert tuple(row) == ("*.relay.example", "glob", "allow", "ünïcode ✓", 2**40)
    stored = redis_client.hgetall(NamespaceKeys(namespace).rules)
    assert decode_rule("*.relay.example", stored["*.relay.example"]) == rule
    assert json.loads(stored["*.relay.example"])["e"] == "allow"


def test_remove_takes_any_spelling_of_the_text(policy_store: PolicyStore) -> None:
    policy_store.add_rule("[IPv6:2001:DB8::]/32")
    policy_store.add_rule(".Example.org")
    assert policy_store.remove_rule("2001:db8:0::/32") == 1
    version = policy_store.version
    assert policy_store.remove_rule("never.example") == 1  # unknown: nothing written
    assert policy_store.version == version
    assert policy_store.remove_rule(".EXAMPLE.org.") == 0


def test_an_import_merges_in_one_transaction(make_policy_store: Callable[..., PolicyStore]) -> None:
    writer = make_policy_store()
    reader = make_policy_store()
    writer.add_rule(".kept.example", effect="block", reason="old", private_comment="mine")
    version = writer.version
    incoming = [
        make_rule(".kept.example", effect="block", reason="new", source="import"),
        make_rule("new.example", effect="allow", source="import"),
        make_rule("same.example"),
    ]
    writer.add_rule("same.example")
    report = writer.import_rules(
        incoming, fields=("effect", "reason"), format="mastodon-csv", target="blocks.csv"
    )
    assert [rule.text for rule in report.added] == ["new.example"]
    assert [after.reason for _before, after in report.updated] == ["new"]
    assert report.skipped == ["same.example"]
    assert report.total == 3
    assert writer.version == version + 2  # same.example, then the whole import
    kept = writer.get_rule(".kept.example")
    assert kept is not None and (kept.reason, kept.private_comment) == ("new", "mine")
    assert kept.updated_at is not None
    wait_for(lambda: reader.rules() == writer.rules(), 5, "the import reached the reader")
    [entry] = writer.audit(1)
    assert (entry.action, entry.target) == ("import", "blocks.csv")
    dry = writer.import_rules([make_rule("dry.example")], target="x", dry_run=True)
    assert [r.text for r in dry.added] == ["dry.example"] and dry.dry_run
    assert not writer.has_rule("dry.example")
    assert writer.version == version + 2


def test_a_large_import_is_one_entry_and_one_resync(
    make_policy_store: Callable[..., PolicyStore],
) -> None:
    writer = make_policy_store()
    reader = make_policy_store()
    writer.add_rule("first.example")  # the reader follows Redis before the import starts
    wait_for(lambda: reader.count() == 1, 10, "the reader follows the writer")
    resyncs: list[int] = []
    reader.add_listener(
        lambda change: resyncs.append(change.version) if change.op == "resync" else None
    )
    texts = [f"host{i}.bulk.example" for i in range(2500)]
    assert writer.add_rules(texts) == 2500
    wait_for(lambda: reader.count() == 2501, 10, "the import reached the reader")
    assert resyncs == [writer.version]
    entries = writer.audit()
    assert [entry.action for entry in entries] == ["import", "add"]  # newest first
    after = entries[0].after
    assert (after["added"], after["count"], len(after["texts"]), after["more"]) == (
        2500,
        2500,
        1000,
        1500,
    )


def test_a_large_update_by_import_changes_every_rule(
    policy_store: PolicyStore, database_url: str
) -> None:
    """Past a hundred rows PostgreSQL takes them by COPY: the same rules come out."""
    texts = [f".r{i}.example" for i in range(300)]
    first = [make_rule(text, effect="block", reason="first\ttab\nline") for text in texts]
    assert len(policy_store.import_rules(first, target="one").added) == 300
    second = [make_rule(text, effect="allow", reason="second") for text in texts]
    report = policy_store.import_rules(second, fields=("effect", "reason"), target="two")
    assert len(report.updated) == 300
    rules = policy_store.rules()
    assert {(rule.effect, rule.reason) for rule in rules} == {("allow", "second")}
    assert all(rule.updated_at is not None for rule in rules)
    assert {before.reason for before, _after in report.updated} == {"first\ttab\nline"}
    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        stored = connection.execute(
            sa.text("SELECT effect, reason, count(*) FROM federation_rules GROUP BY 1, 2")
        ).all()
    engine.dispose()
    assert [tuple(row) for row in stored] == [("allow", "second", 300)]
