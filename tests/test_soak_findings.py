"""Minimal reproductions of the bugs the soak (``python -m benchmarks.soak``) found, kept
as regression tests: a refused flusher keeps refusing after Redis loses its data (G11),
hydrate with another database raises even when nothing is missing (G11), and a change
whose rebuild loses the database raises PropagationPendingError, not a driver error."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from conftest import create_database, drop_database, upgrade_schema
from fedtrack_redis import FederationTracker, Flusher, PolicyStore
from fedtrack_redis.errors import DatabaseMismatchError, PropagationPendingError
from servers import RedisServer


@pytest.fixture
def other_database(postgres_admin_url: str) -> Iterator[str]:
    """A second PostgreSQL database with the schema (so its own identity), like staging."""
    url = upgrade_schema(create_database(postgres_admin_url))
    yield url
    drop_database(postgres_admin_url, url)


def lose_everything(client: redis.Redis, namespace: str) -> None:
    """What a Redis restart without persistence does to the namespace."""
    for key in client.scan_iter(match=f"fedtrack:{{{namespace}:*", count=1000):
        client.delete(key)


def test_a_refused_flusher_keeps_refusing_after_redis_loses_its_data(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    migrated_postgres_url: str,
    other_database: str,
) -> None:
    right = Flusher(redis_url, migrated_postgres_url, namespace=namespace, lock_ttl=2.0)
    right.flush_once()  # leads, hydrates the namespace: Redis names the right database
    right.stop()
    wrong = Flusher(redis_url, other_database, namespace=namespace, lock_ttl=2.0)
    try:
        with pytest.raises(DatabaseMismatchError):
            wrong.flush_once()  # refused: Redis names another database (it read it)
        assert wrong.mismatch
        lose_everything(redis_client, namespace)
        # Every flusher remembers for its lifetime the first identity it reads in Redis and
        # refuses any other even when Redis holds none (docs/safety.md).
        with pytest.raises(DatabaseMismatchError):
            wrong.flush_once()
    finally:
        wrong.stop()
    markers = {redis_client.get(key) for key in redis_client.scan_iter(f"fedtrack:{{{namespace}:*")}
    assert wrong.database_id not in markers


def test_hydrate_with_another_database_raises_when_nothing_is_missing(
    redis_url: str, namespace: str, migrated_postgres_url: str, other_database: str
) -> None:
    right = Flusher(redis_url, migrated_postgres_url, namespace=namespace)
    right.flush_once()  # the namespace is hydrated from the right database
    right.stop()
    tracker = FederationTracker(redis_url, namespace=namespace)
    try:
        tracker.touch("a.example")
        tracker.push()  # acknowledged: the tracker has seen the namespace's identity
        # FederationTracker.hydrate: "Raises DatabaseMismatchError, adding nothing, when
        # `database` is not the one this namespace's Redis data came from".
        with pytest.raises(DatabaseMismatchError):
            tracker.hydrate(other_database)
    finally:
        tracker.close()


def test_a_change_raises_a_fedtrack_error_when_the_database_fails_after_its_commit(
    migrated_postgres_url: str,
) -> None:
    server = RedisServer().start()
    engine = sa.create_engine(migrated_postgres_url, poolclass=NullPool)
    down = {"armed": False, "now": False}

    @sa.event.listens_for(engine, "do_connect")
    def refuse(*_args: object) -> None:
        if down["now"]:
            raise psycopg.OperationalError("the database system is shutting down")

    @sa.event.listens_for(engine, "commit")
    def after_commit(_connection: object) -> None:
        down["now"] = down["armed"]  # the change commits, then the database goes away

    store = PolicyStore(engine, server.url, namespace="findings")
    try:
        store.init()
        store.add_rule("a.example")
        server.restart()  # Redis comes back empty: it is now behind the database
        down["armed"] = True
        # Committed; Redis must then be rebuilt from the database, which is gone.
        with pytest.raises(PropagationPendingError, match="committed"):
            store.add_rule("b.example")
        down["armed"] = down["now"] = False
        assert store.has_rule("b.example")  # applied in this process
        with engine.connect() as connection:
            stored = connection.execute(sa.text("SELECT domain FROM federation_rules"))
            assert sorted(stored.scalars()) == ["a.example", "b.example"]
    finally:
        store.close()
        engine.dispose()
        server.close()
