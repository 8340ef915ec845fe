"""Key schema 2 → 3 (`upgrade`): an old shard is retired before its new shard hydrates,
only when it holds nothing the database lacks, and old processes then refuse it."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import redis
import sqlalchemy as sa

from fedtrack_redis import upgrade
from fedtrack_redis.cli.main import main
from fedtrack_redis.engine import RedisEngine
from fedtrack_redis.errors import DatabaseMismatchError
from fedtrack_redis.flusher import Flusher
from fedtrack_redis.identity import IdentityGuard, database_id, is_identity
from fedtrack_redis.keys import SHARDS, NamespaceKeys, shard_of, shard_tag
from fedtrack_redis.reads import StatsReader
from fedtrack_redis.scripts import Scripts
from flusher_helpers import make_flusher, make_rows, pg_engine, write_rows

__all__ = ["make_flusher", "pg_engine"]


def old_shard_with_data(
    client: redis.Redis, keys: NamespaceKeys, identity: str, shard: int, *, changed: bool
) -> list[str]:
    """Fill old shard `shard` as the previous release leaves it: marker, a few domain
    hashes in its activity index, a lease; `changed` puts one domain in its changed set."""
    old = upgrade.previous_keys(keys).shards[shard]
    domains = [d for d in (f"old{i}.example" for i in range(400)) if shard_of(d) == shard][:5]
    client.set(old.hydrated, identity)
    for domain in domains:
        client.hset(old.domain(domain), mapping={"success_https": 3, "last_active": 1})
        client.zadd(old.active, {domain: 1})
    client.zadd(old.leases, {"worker-1": 10**13})
    client.hset(old.lease("worker-1"), domains[0], 1)
    client.hset(old.totals, "success_https", 15)
    if changed:
        client.sadd(old.changed, domains[0])
    return domains


def test_schema_3_tags_differ_from_schema_2_and_keep_the_slot_spread() -> None:
    for shard in range(SHARDS):
        new, old = shard_tag("fedtrack", shard), shard_tag("fedtrack", shard, 2)
        assert new != old and new.startswith(f"fedtrack:{shard:02d}:")
        assert old.startswith(f"fedtrack:{shard:02d}.")
    assert NamespaceKeys("n").shards[3].domain("a.example") != (
        upgrade.previous_keys(NamespaceKeys("n")).shards[3].domain("a.example")
    )
    with pytest.raises(ValueError, match="schema version 1"):
        shard_tag("fedtrack", 0, 1)


def test_the_retired_marker_is_refused_by_the_old_release_identity_check() -> None:
    """Workers and flushers of the previous release run this same check (G11): a marker
    naming another database stops them."""
    assert is_identity(upgrade.RETIRED)
    guard = IdentityGuard("n")
    with pytest.raises(DatabaseMismatchError):
        guard.check("0123456789abcdef0123456789abcdef", [upgrade.RETIRED])


def test_a_flushed_old_shard_is_retired_and_its_new_shard_hydrated(
    redis_client: redis.Redis,
    namespace: str,
    pg_engine: sa.Engine,
    make_flusher: Callable[..., Flusher],
) -> None:
    keys = NamespaceKeys(namespace)
    identity = database_id(pg_engine)
    write_rows(pg_engine, make_rows(40, prefix="kept"))
    old = [old_shard_with_data(redis_client, keys, identity, s, changed=False) for s in (2, 9)]
    flusher = make_flusher(pg_engine)
    flusher.flush_once()  # leads, retires, hydrates, deletes the old keys
    previous = upgrade.previous_keys(keys)
    for shard in range(SHARDS):
        assert redis_client.get(keys.shards[shard].hydrated) == identity
    for shard, domains in zip((2, 9), old, strict=True):
        gone = previous.shards[shard]
        assert redis_client.get(gone.hydrated) == upgrade.RETIRED  # the marker stays
        assert redis_client.exists(*(gone.domain(d) for d in domains)) == 0
        assert redis_client.exists(gone.active, gone.leases, gone.totals) == 0
        assert redis_client.exists(gone.lease("worker-1")) == 0
    reader = StatsReader(redis_client, namespace=namespace)
    assert reader.totals()["domains"] == 40  # the database's rows, in the new shards


def test_an_old_shard_with_changes_not_flushed_holds_its_new_shard_back(
    redis_client: redis.Redis,
    namespace: str,
    pg_engine: sa.Engine,
    make_flusher: Callable[..., Flusher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = NamespaceKeys(namespace)
    identity = database_id(pg_engine)
    old_shard_with_data(redis_client, keys, identity, 5, changed=True)
    old_shard_with_data(redis_client, keys, identity, 6, changed=False)
    flusher = make_flusher(pg_engine)
    with caplog.at_level(logging.ERROR, logger="fedtrack_redis.upgrade"):
        flusher.flush_once()
        flusher.flush_once()
    said = [r.getMessage() for r in caplog.records if "key schema 2" in r.getMessage()]
    assert len(said) == 1 and "[5]" in said[0]  # once, naming the shard
    previous = upgrade.previous_keys(keys)
    assert redis_client.get(previous.shards[5].hydrated) == identity
    assert redis_client.get(previous.shards[6].hydrated) == upgrade.RETIRED
    assert redis_client.get(keys.shards[5].hydrated) is None  # waits
    assert redis_client.get(keys.shards[6].hydrated) == identity
    # a flusher of the previous release flushes it (its epoch ends: changed emptied)
    redis_client.delete(previous.shards[5].changed)
    flusher.flush_once()
    assert redis_client.get(previous.shards[5].hydrated) == upgrade.RETIRED
    assert redis_client.get(keys.shards[5].hydrated) == identity


def test_retirement_leaves_other_databases_shards_and_closing_epochs_alone(
    redis_client: redis.Redis, namespace: str
) -> None:
    keys = NamespaceKeys(namespace)
    previous = upgrade.previous_keys(keys)
    mine, theirs = "a" * 32, "b" * 32
    redis_client.set(previous.shards[0].hydrated, theirs)
    redis_client.set(previous.shards[1].hydrated, mine)
    redis_client.hset(previous.shards[1].flush_state, "fence", "7")  # a flush in progress
    redis_client.set(previous.shards[2].hydrated, "1700000000")  # a legacy stamp: ours
    scripts = Scripts(RedisEngine.wrap(redis_client))
    assert upgrade.retire_previous(scripts, keys, mine) == [1]
    assert redis_client.get(previous.shards[0].hydrated) == theirs
    assert redis_client.get(previous.shards[1].hydrated) == mine
    assert redis_client.get(previous.shards[2].hydrated) == upgrade.RETIRED
    assert upgrade.retire_previous(scripts, keys, mine, force=True) == []
    assert redis_client.get(previous.shards[1].hydrated) == upgrade.RETIRED


def test_drop_retired_deletes_a_budget_of_domains_per_call(
    redis_client: redis.Redis, namespace: str
) -> None:
    keys = NamespaceKeys(namespace)
    previous = upgrade.previous_keys(keys).shards[4]
    redis_client.set(previous.hydrated, upgrade.RETIRED)
    domains = [f"d{i}.example" for i in range(700)]
    for domain in domains:
        redis_client.hset(previous.domain(domain), "success_https", 1)
    redis_client.zadd(previous.active, {domain: 1 for domain in domains})
    redis_client.hset(previous.totals, "success_https", 700)
    engine = RedisEngine.wrap(redis_client)
    assert upgrade.drop_retired(engine, keys, budget=300) == 300
    assert redis_client.zcard(previous.active) == 400
    assert redis_client.exists(previous.totals) == 1  # until the domains are gone
    assert upgrade.drop_retired(engine, keys, budget=None) == 400 + 1  # and the totals
    assert upgrade.drop_retired(engine, keys) == 0
    assert redis_client.get(previous.hydrated) == upgrade.RETIRED


def test_rehydrate_retires_and_deletes_the_old_shards_whatever_they_hold(
    redis_client: redis.Redis,
    redis_url: str,
    namespace: str,
    pg_engine: sa.Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = NamespaceKeys(namespace)
    identity = database_id(pg_engine)
    domains = old_shard_with_data(redis_client, keys, identity, 3, changed=True)
    monkeypatch.setenv("FEDTRACK_REDIS_URL", redis_url)
    monkeypatch.setenv("FEDTRACK_DATABASE_URL", pg_engine.url.render_as_string(False))
    monkeypatch.setenv("FEDTRACK_NAMESPACE", namespace)
    with pytest.raises(SystemExit) as code:
        main(["db", "rehydrate", "--yes"])
    assert code.value.code in (0, None), capsys.readouterr().err
    previous = upgrade.previous_keys(keys).shards[3]
    assert redis_client.get(previous.hydrated) == upgrade.RETIRED
    assert redis_client.exists(previous.changed, *(previous.domain(d) for d in domains)) == 0
    assert redis_client.get(keys.shards[3].hydrated) == identity
