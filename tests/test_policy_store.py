"""PolicyStore against real Redis, on PostgreSQL and on SQLite: the original package's
behaviours, persistence, ordering and bad input."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from fedtrack_redis import (
    FedtrackError,
    InvalidDomainError,
    InvalidPolicyError,
    NotInitializedError,
    PolicyStore,
)
from fedtrack_redis.keys import NamespaceKeys
from servers import wait_for


def test_add_has_remove(policy_store: PolicyStore) -> None:
    assert policy_store.add_rule("spam.example") == 1
    assert policy_store.has_rule("spam.example")
    assert policy_store.has_rule("SPAM.Example.")
    assert not policy_store.has_rule("other.example")
    assert policy_store.remove_rule("spam.example") == 0
    assert not policy_store.has_rule("spam.example")


def test_duplicate_add_keeps_first_created_at(policy_store: PolicyStore) -> None:
    assert policy_store.add_rule("dup.example") == 1
    first = policy_store.list_rules()["dup.example"]
    assert policy_store.add_rule("DUP.example") == 1
    assert policy_store.count() == 1
    assert policy_store.list_rules()["dup.example"] == first


def test_ip_literal_rules(policy_store: PolicyStore) -> None:
    policy_store.add_rule("[1.2.3.4]")
    assert policy_store.has_rule("1.2.3.4")
    assert policy_store.has_rule("[1.2.3.4]")
    policy_store.add_rule("[IPv6:2001:DB8::1]")
    assert policy_store.has_rule("[2001:db8:0::1]")
    policy_store.add_rule("[IPv6:::ffff:5.6.7.8]")
    assert policy_store.has_rule("5.6.7.8")


def test_flush_list_count(policy_store: PolicyStore) -> None:
    before = int(time.time())
    for name in ("a.example", "b.example", "c.example"):
        policy_store.add_rule(name)
    rules = policy_store.list_rules()
    assert sorted(rules) == ["a.example", "b.example", "c.example"]
    assert all(before <= created <= int(time.time()) for created in rules.values())
    assert policy_store.count() == 3
    policy_store.flush_rules()
    assert policy_store.count() == 0
    assert policy_store.list_rules() == {}


def test_list_rules_is_a_copy(policy_store: PolicyStore) -> None:
    policy_store.add_rule("a.example")
    rules = policy_store.list_rules()
    rules["injected.example"] = 1
    assert not policy_store.has_rule("injected.example")


def test_remove_unknown_rule_is_not_an_error(policy_store: PolicyStore) -> None:
    policy_store.add_rule("keep.example")
    assert policy_store.remove_rule("never-added.example") == 1


def test_policy_defaults_to_accept_and_is_case_insensitive(policy_store: PolicyStore) -> None:
    assert policy_store.get_policy() == "ACCEPT"
    policy_store.set_policy("reject")
    assert policy_store.get_policy() == "REJECT"
    policy_store.set_policy(" Accept ")
    assert policy_store.get_policy() == "ACCEPT"


def test_enabled_switch(policy_store: PolicyStore) -> None:
    assert policy_store.get_enabled() is True
    policy_store.set_enabled(False)
    assert policy_store.get_enabled() is False


def test_state_survives_a_restart(make_policy_store: Callable[..., PolicyStore]) -> None:
    first = make_policy_store()
    first.add_rule("persisted.example")
    first.set_policy("REJECT")
    first.set_enabled(False)
    first.close()
    second = make_policy_store()
    assert second.has_rule("persisted.example")
    assert second.get_policy() == "REJECT"
    assert second.get_enabled() is False


def test_rules_are_in_the_database_and_redis(
    policy_store: PolicyStore, database_url: str, redis_client: redis.Redis, namespace: str
) -> None:
    policy_store.add_rule("stored.example")
    policy_store.set_policy("REJECT")
    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        domains = connection.execute(sa.text("SELECT domain FROM federation_rules")).scalars().all()
        policy = connection.execute(
            sa.text("SELECT value FROM federation_settings WHERE key = 'policy'")
        ).scalar_one()
    engine.dispose()
    assert domains == ["stored.example"]
    assert policy == "REJECT"
    keys = NamespaceKeys(namespace)
    assert redis_client.hkeys(keys.rules) == ["stored.example"]
    meta = redis_client.hgetall(keys.policy_meta)
    assert meta["policy"] == "REJECT"
    assert int(meta["version"]) == policy_store.version == 2


def test_use_before_init_or_after_close_raises(
    database_url: str, redis_url: str, namespace: str
) -> None:
    store = PolicyStore(database_url, redis_url, namespace=namespace)
    with pytest.raises(FedtrackError):
        store.has_rule("a.example")
    with pytest.raises(NotInitializedError):
        store.add_rule("a.example")
    store.init(migrate=True)
    store.close()
    store.close()  # idempotent
    with pytest.raises(NotInitializedError):
        store.count()


@pytest.mark.parametrize("bad", ["", "bad domain", "[IPv6:zz]", "x" * 64 + ".example", "a{b}.c"])
def test_bad_domains_raise_and_change_nothing(policy_store: PolicyStore, bad: str) -> None:
    policy_store.add_rule("kept.example")
    version = policy_store.version
    with pytest.raises(InvalidDomainError):
        policy_store.add_rule(bad)
    with pytest.raises(InvalidDomainError):
        policy_store.remove_rule(bad)
    assert policy_store.list_rules().keys() == {"kept.example"}
    assert policy_store.version == version
    assert policy_store.has_rule(bad) is False  # never raises on the read path


@pytest.mark.parametrize("bad", ["", "allow", "DENY", "ACCEPT;DROP TABLE x"])
def test_bad_policy_raises_and_changes_nothing(policy_store: PolicyStore, bad: str) -> None:
    policy_store.set_policy("REJECT")
    with pytest.raises(InvalidPolicyError):
        policy_store.set_policy(bad)
    assert policy_store.get_policy() == "REJECT"


def test_many_threads_adding_removing_and_checking(
    make_policy_store: Callable[..., PolicyStore],
) -> None:
    store = make_policy_store()
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for index in range(15):
                name = f"w{worker}-{index}.example"
                store.add_rule(name)
                assert store.has_rule(name)
                if index % 3 == 0:
                    store.remove_rule(name)
                store.count()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    expected = {f"w{w}-{i}.example" for w in range(6) for i in range(15) if i % 3}
    assert set(store.list_rules()) == expected
    other = make_policy_store()
    assert set(other.list_rules()) == expected
    wait_for(lambda: store.version == other.version, 5, "caches agree on the version")


def _connections_of_this_process(url: str) -> int:
    with sa.create_engine(url, poolclass=NullPool).connect() as connection:
        return int(
            connection.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND client_port = ANY(:ports)"
                ),
                {"ports": _client_ports(sa.make_url(url).port or 5432)},
            ).scalar_one()
        )


def _client_ports(server_port: int) -> list[int]:
    """The local TCP ports of this process's connections to the server on `server_port`
    (a throwaway PostgreSQL listens on a port of its own)."""
    ports = []
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, remote, state = line.split()[1:4]
            if state == "01" and int(remote.rsplit(":", 1)[1], 16) == server_port:
                ports.append(int(local.rsplit(":", 1)[1], 16))
    return ports


def test_a_store_keeps_no_database_connection_unless_pooled(
    migrated_postgres_url: str, redis_url: str, namespace: str
) -> None:
    worker = PolicyStore(migrated_postgres_url, redis_url, namespace=namespace).init()
    admin = PolicyStore(migrated_postgres_url, redis_url, namespace=namespace, database_pool=True)
    try:
        worker.add_rule("a.example")
        assert _connections_of_this_process(migrated_postgres_url) == 0
        admin.init().add_rule("b.example")
        kept = _connections_of_this_process(migrated_postgres_url)
        admin.add_rule("c.example")  # the same connection again, not a new one
        assert kept == _connections_of_this_process(migrated_postgres_url) == 1
    finally:
        worker.close()
        admin.close()
    assert _connections_of_this_process(migrated_postgres_url) == 0


def test_a_change_does_not_count_the_rules_in_the_database(policy_store: PolicyStore) -> None:
    """A count(*) of the rules table grew with every rule (1.4 ms at 10,000): a change
    answers with the process's own count, which holds the change."""
    policy_store.add_rules(f"r{i}.example" for i in range(50))
    statements: list[str] = []
    database = policy_store.audit_database()
    sa.event.listen(database, "before_cursor_execute", lambda *a: statements.append(a[2]))
    assert policy_store.add_rule("new.example") == 51
    assert policy_store.add_rule("new.example") == 51  # unchanged: nothing written
    assert policy_store.remove_rule("r0.example") == 50
    assert statements and not [s for s in statements if "count(" in s.lower()]
