"""check_federation_policy: the original package's decision table, against a real store."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from fedtrack_redis import FedtrackError, PolicyStore, check_federation_policy
from fedtrack_redis.check import explain_federation_policy


@pytest.fixture
def store(migrated_postgres_url: str, redis_url: str, namespace: str) -> Iterator[PolicyStore]:
    with PolicyStore(migrated_postgres_url, redis_url, namespace=namespace) as policy_store:
        yield policy_store


def no_setting(key: str) -> tuple[str, bool, object]:
    return "", False, None


def test_accept_without_rules_allows_everything(store: PolicyStore) -> None:
    assert check_federation_policy("any.example", "ACCEPT", store=store)
    assert check_federation_policy("[9.9.9.9]", "ACCEPT", store=store)


def test_accept_blocks_listed_domains_case_insensitively(store: PolicyStore) -> None:
    store.add_rule("Spam.Example")
    assert not check_federation_policy("spam.example", "ACCEPT", store=store)
    assert not check_federation_policy("SPAM.EXAMPLE.", "ACCEPT", store=store)
    assert check_federation_policy("ham.example", "ACCEPT", store=store)


def test_reject_without_rules_refuses_everything(store: PolicyStore) -> None:
    assert not check_federation_policy("any.example", "REJECT", store=store)


def test_reject_allows_only_listed_domains(store: PolicyStore) -> None:
    store.add_rule("friend.example")
    assert check_federation_policy("FRIEND.example", "REJECT", store=store)
    assert not check_federation_policy("stranger.example", "REJECT", store=store)


def test_ip_literal_rules_match_every_spelling(store: PolicyStore) -> None:
    store.add_rule("[1.2.3.4]")
    assert not check_federation_policy("1.2.3.4", "ACCEPT", store=store)
    assert not check_federation_policy("[1.2.3.4]", "ACCEPT", store=store)
    assert not check_federation_policy("[IPv6:::ffff:1.2.3.4]", "ACCEPT", store=store)
    store.add_rule("[2001:db8::1]")
    assert check_federation_policy("[IPv6:2001:DB8:0::1]", "REJECT", store=store)


def test_local_domain_is_always_allowed(store: PolicyStore) -> None:
    store.add_rule("mail.example")
    assert check_federation_policy("MAIL.example", "ACCEPT", "mail.EXAMPLE", store=store)
    assert check_federation_policy("mail.example", "REJECT", "mail.example", store=store)
    assert check_federation_policy("[10.0.0.1]", "REJECT", "10.0.0.1", store=store)
    assert not check_federation_policy("other.example", "REJECT", "mail.example", store=store)


def test_default_policy_is_the_cluster_policy_then_accept(store: PolicyStore) -> None:
    store.add_rule("listed.example")
    assert not check_federation_policy("listed.example", store=store)  # ACCEPT by default
    store.set_policy("REJECT")
    assert check_federation_policy("listed.example", store=store)
    assert not check_federation_policy("unlisted.example", store=store)


def test_policy_from_get_setting(store: PolicyStore) -> None:
    store.add_rule("listed.example")
    calls: list[str] = []

    def get_setting(key: str) -> tuple[str, bool, object]:
        calls.append(key)
        return "reject", True, None

    assert check_federation_policy("listed.example", "", "", get_setting, store=store)
    assert not check_federation_policy("unlisted.example", "", "", get_setting, store=store)
    assert calls == ["__FEDERATION_POLICY__", "__FEDERATION_POLICY__"]


def test_get_setting_that_finds_nothing_or_fails_falls_through(store: PolicyStore) -> None:
    store.set_policy("REJECT")
    store.add_rule("listed.example")
    for answer in [("", True, None), ("ACCEPT", False, None), ("ACCEPT", True, OSError("x"))]:

        def get_setting(
            key: str, answer: tuple[str, bool, object] = answer
        ) -> tuple[str, bool, object]:
            return answer

        assert not check_federation_policy("other.example", "", "", get_setting, store=store)


def test_explicit_policy_overrides_the_setting(store: PolicyStore) -> None:
    store.add_rule("listed.example")

    def get_setting(key: str) -> tuple[str, bool, object]:
        return "REJECT", True, None

    assert check_federation_policy("other.example", "accept", "", get_setting, store=store)


def test_unknown_policy_allows_and_warns_once(
    store: PolicyStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.add_rule("listed.example")
    with caplog.at_level(logging.WARNING, logger="fedtrack_redis.policy"):
        for _ in range(3):
            assert check_federation_policy("listed.example", "MAYBE", store=store)
        assert check_federation_policy("listed.example", "PERHAPS", store=store)
    warnings = [
        r.getMessage() for r in caplog.records if "unknown federation policy" in r.getMessage()
    ]
    assert len(warnings) == 2
    assert "'MAYBE'" in warnings[0]
    assert "'PERHAPS'" in warnings[1]


def test_invalid_domain_matches_no_rule_and_never_raises(store: PolicyStore) -> None:
    assert check_federation_policy("not a domain", "ACCEPT", store=store)
    assert not check_federation_policy("not a domain", "REJECT", store=store)
    assert not check_federation_policy("", "REJECT", "", no_setting, store=store)


def test_disabled_federation_refuses_all_but_the_local_domain(store: PolicyStore) -> None:
    store.set_enabled(False)
    assert not check_federation_policy("any.example", "ACCEPT", store=store)
    assert check_federation_policy("mail.example", "ACCEPT", "mail.example", store=store)
    store.set_enabled(True)
    assert check_federation_policy("any.example", "ACCEPT", store=store)


def test_uninitialised_store_raises(postgres_url: str, redis_url: str) -> None:
    with pytest.raises(FedtrackError):
        check_federation_policy("a.example", store=PolicyStore(postgres_url, redis_url))


def test_explain_gives_the_reason(store: PolicyStore) -> None:
    store.add_rule("spam.example")
    decision = explain_federation_policy("SPAM.example", store)
    assert (decision.allowed, decision.policy, decision.rule) == (False, "ACCEPT", "spam.example")
    assert decision.reason == "blocked by rule"
    local = explain_federation_policy("spam.example", store, local_domain="spam.example")
    assert local.allowed
    assert local.reason == "local domain is always allowed"


def test_default_store_is_the_global_policy(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, namespace: str, migrated_postgres_url: str
) -> None:
    from fedtrack_redis import global_policy
    from fedtrack_redis.globals import reset_globals

    monkeypatch.setenv("FEDTRACK_REDIS_URL", redis_url)
    monkeypatch.setenv("FEDTRACK_DATABASE_URL", migrated_postgres_url)
    monkeypatch.setenv("FEDTRACK_NAMESPACE", namespace)
    reset_globals()
    try:
        store = global_policy()
        assert global_policy() is store
        assert store.view.ready  # already initialised
        store.add_rule("global.example")
        assert not check_federation_policy("global.example")
        assert check_federation_policy("other.example")
    finally:
        reset_globals()


def test_the_global_policy_needs_a_named_database(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, tmp_path: Any
) -> None:
    """No silent SQLite: without FEDTRACK_DATABASE_URL, one line naming it, no file made."""
    from fedtrack_redis import ConfigurationError, global_policy
    from fedtrack_redis.globals import reset_globals

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEDTRACK_REDIS_URL", redis_url)
    monkeypatch.delenv("FEDTRACK_DATABASE_URL", raising=False)
    reset_globals()
    with pytest.raises(ConfigurationError) as info:
        global_policy()
    assert "FEDTRACK_DATABASE_URL" in str(info.value)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_an_old_schema_fails_at_start_with_one_line(
    postgres_url: str, redis_url: str, namespace: str, sqlite_url: str
) -> None:
    """Workers and the API check the schema, never change it: an old one is one line."""
    from fedtrack_redis.connections import database_engine
    from fedtrack_redis.errors import SchemaMismatchError
    from fedtrack_redis.store import migrate

    engine = database_engine(postgres_url)
    try:
        from alembic import command

        config = migrate.alembic_config(engine)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0002")
        with pytest.raises(SchemaMismatchError) as info:
            PolicyStore(engine, redis_url, namespace=namespace).init()
        assert "0002" in str(info.value) and "fedtrack db upgrade" in str(info.value)
        assert migrate.current_revision(engine) == "0002"  # nothing changed
        with pytest.raises(SchemaMismatchError) as empty:
            PolicyStore(sqlite_url, redis_url, namespace=namespace).init()
        assert "no fedtrack schema" in str(empty.value)
    finally:
        engine.dispose()
