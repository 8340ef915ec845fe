"""hydrate_shards: PostgreSQL's totals go back into an empty Redis exactly once (G6)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from fedtrack_redis import hydrate
from fedtrack_redis.connections import database_engine
from fedtrack_redis.engine import RedisEngine
from fedtrack_redis.errors import DatabaseMismatchError
from fedtrack_redis.identity import IdentityGuard, database_id
from fedtrack_redis.keys import SHARDS, NamespaceKeys, shard_of
from fedtrack_redis.scripts import Scripts
from fedtrack_redis.stats import FIELD_OF
from fedtrack_redis.store import migrate
from fedtrack_redis.store import stats as store_stats
from fedtrack_redis.store.schema import federation_flusher
from flusher_helpers import (
    db_stats,
    engine,
    keys,
    make_rows,
    push,
    redis_stats,
    run_python,
    totals,
    without,
    write_rows,
)

__all__ = ["engine", "keys"]


def markers(client: redis.Redis, keys: NamespaceKeys) -> list[bool]:
    return [bool(client.exists(shard.hydrated)) for shard in keys.shards]


def read_plans(
    client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine, shards: list[int]
) -> tuple[str, dict[int, Any]]:
    return hydrate._read_plans(
        RedisEngine.wrap(client), keys, engine, shards, IdentityGuard(keys.namespace)
    )


def runner(client: redis.Redis) -> Scripts:
    return Scripts(RedisEngine.wrap(client))


def test_empty_database_sets_every_marker_and_adds_nothing(
    redis_client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine
) -> None:
    assert hydrate.missing_shards(redis_client, keys) == list(range(SHARDS))
    assert hydrate.hydrate_shards(redis_client, keys, engine) == 0
    assert markers(redis_client, keys) == [True] * SHARDS
    assert hydrate.missing_shards(redis_client, keys) == []
    for shard in keys.shards:
        assert not redis_client.exists(shard.active, shard.acks, shard.hydrating, shard.changed)
        assert redis_client.get(shard.hydrated) == database_id(engine)  # G11


def test_creates_missing_tables(
    redis_client: redis.Redis, keys: NamespaceKeys, sqlite_url: str
) -> None:
    created = sa.create_engine(sqlite_url)
    try:
        assert hydrate.hydrate_shards(redis_client, keys, created) == 0
        assert sa.inspect(created).has_table("federation_server_stats")
    finally:
        created.dispose()


def test_restores_rows_acks_and_activity(
    redis_client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine
) -> None:
    rows = make_rows(40)
    acks = [(shard_of("d1.example"), "w-1", 17), (3, "w.2", 5), (3, "w-1", 9)]
    write_rows(engine, rows, acks)

    assert hydrate.hydrate_shards(redis_client, keys, engine) == 40
    restored = redis_stats(redis_client, keys, list(rows))
    assert set(restored) == set(rows)
    for domain, row in rows.items():
        assert restored[domain] == {**row, "queued_messages": 0}, domain  # gauge not restored
        shard = keys.shard_for(domain)
        assert redis_client.zscore(shard.active, domain) == row["last_active"]
        assert not redis_client.sismember(shard.changed, domain)
    assert redis_client.hget(keys.shards[shard_of("d1.example")].acks, "w-1") == "17"
    assert redis_client.hgetall(keys.shards[3].acks) == {"w.2": "5", "w-1": "9"}
    assert redis_client.zscore(keys.shards[3].ack_seen, "w.2")
    assert markers(redis_client, keys) == [True] * SHARDS

    # Second call: nothing missing, nothing added.
    assert hydrate.hydrate_shards(redis_client, keys, engine) == 0
    assert redis_stats(redis_client, keys, list(rows)) == restored


def test_additive_onto_existing_hash_and_max_last_active(
    redis_client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine
) -> None:
    rows = make_rows(2)
    write_rows(engine, rows, [])
    first, second = sorted(rows)
    key = keys.shard_for(first).domain(first)
    newer = rows[first]["last_active"] + 100
    redis_client.hset(
        key, mapping={FIELD_OF["failed_smtp"]: 5, FIELD_OF["last_active"]: newer, "h3": 1}
    )
    other = keys.shard_for(second).domain(second)
    redis_client.hset(other, mapping={FIELD_OF["last_active"]: 1})
    redis_client.hset(keys.shard_for(first).acks, "w", 50)

    hydrate.hydrate_shards(redis_client, keys, engine)
    got = redis_stats(redis_client, keys, [first, second])
    expected = dict(rows[first])
    expected["queued_messages"] = 0
    expected["failed_smtp"] += 5
    expected["last_active"] = newer
    expected["histogram"] = dict(expected["histogram"])
    expected["histogram"][3] = expected["histogram"].get(3, 0) + 1
    assert got[first] == expected
    assert got[second]["last_active"] == rows[second]["last_active"]


def test_only_requested_shards(
    redis_client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine
) -> None:
    rows = make_rows(60)
    write_rows(engine, rows, [])
    restored = hydrate.hydrate_shards(redis_client, keys, engine, shards=[2, 5])
    assert restored == sum(1 for d in rows if shard_of(d) in (2, 5))
    assert [i for i, present in enumerate(markers(redis_client, keys)) if present] == [2, 5]
    assert set(redis_stats(redis_client, keys, list(rows))) == {
        d for d in rows if shard_of(d) in (2, 5)
    }
    with pytest.raises(ValueError):
        hydrate.hydrate_shards(redis_client, keys, engine, shards=[16])


def test_hydrator_dying_midway_is_completed_exactly_once(
    redis_client: redis.Redis,
    keys: NamespaceKeys,
    engine: sa.Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hydrate, "CHUNK_DOMAINS", 3)
    rows = make_rows(200)
    write_rows(engine, rows, [(0, "w", 3)])
    script = runner(redis_client)
    identity, plans = read_plans(redis_client, keys, engine, [0, 1])
    read_at = int(redis_client.time()[0])
    for shard in (0, 1):
        plan = plans[shard]
        assert len(plan.chunks) > 2
        # "Die" after two chunks of the plan; replaying them is a no-op.
        codes = [
            hydrate.apply_chunk(script, keys.shards[shard], plan, index, read_at, identity)
            for index in (0, 1, 0, 1)
        ]
        assert codes == [1, 1, 0, 0]
        progress = redis_client.hgetall(keys.shards[shard].hydrating)
        assert progress["next"] == "2"
        assert not redis_client.exists(keys.shards[shard].hydrated)

    total = hydrate.hydrate_shards(redis_client, keys, engine)
    assert total == len(rows) - 12
    restored = redis_stats(redis_client, keys, list(rows))
    assert restored == {d: {**row, "queued_messages": 0} for d, row in rows.items()}
    assert not redis_client.exists(keys.shards[0].hydrating)
    assert redis_client.hget(keys.shards[0].acks, "w") == "3"


def test_stale_read_and_foreign_plan_are_refused(
    redis_client: redis.Redis,
    keys: NamespaceKeys,
    engine: sa.Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hydrate, "CHUNK_DOMAINS", 2)
    rows = make_rows(40)
    write_rows(engine, rows, [])
    shard = shard_of("d0.example")
    script = runner(redis_client)
    identity, plans = read_plans(redis_client, keys, engine, [shard])
    plan = plans[shard]
    now = int(redis_client.time()[0])
    # A read older than MAX_READ_AGE is not applied.
    assert hydrate._apply(script, keys.shards[shard], plan, now - 3600, identity) == (0, False)
    assert redis_stats(redis_client, keys, list(rows)) == {}
    # One chunk of a plan applied, then a chunk of a different plan is refused.
    assert hydrate.apply_chunk(script, keys.shards[shard], plan, 0, now, identity) == 1
    other = hydrate._Plan(plan.chunks, plan.acks, "0" * 32)
    assert hydrate._apply(script, keys.shards[shard], other, now, identity) == (0, False)
    # The real hydrator continues the plan in progress.
    hydrate.hydrate_shards(redis_client, keys, engine, shards=[shard])
    expected = {d: {**r, "queued_messages": 0} for d, r in rows.items() if shard_of(d) == shard}
    assert redis_stats(redis_client, keys, list(rows)) == expected


def test_lost_progress_restarts_from_a_fresh_read(
    redis_client: redis.Redis,
    keys: NamespaceKeys,
    engine: sa.Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hydrate, "CHUNK_DOMAINS", 2)
    rows = make_rows(150)
    write_rows(engine, rows, [])
    shard = shard_of("d0.example")
    script = runner(redis_client)
    identity, plans = read_plans(redis_client, keys, engine, [shard])
    plan = plans[shard]
    now = int(redis_client.time()[0])
    for index in (0, 1):
        assert hydrate.apply_chunk(script, keys.shards[shard], plan, index, now, identity) == 1
    # Redis loses the shard again mid-hydration (progress and data).
    shard_domains = [d for d in rows if shard_of(d) == shard]
    redis_client.delete(
        keys.shards[shard].hydrating,
        keys.shards[shard].active,
        *(keys.shards[shard].domain(d) for d in shard_domains),
    )
    # A hydrator still holding the old plan hits a gap at chunk 2 and starts over.
    assert hydrate.apply_chunk(script, keys.shards[shard], plan, 2, now, identity) == -1
    assert hydrate.hydrate_shards(redis_client, keys, engine, shards=[shard]) == len(shard_domains)
    expected = {d: {**rows[d], "queued_messages": 0} for d in shard_domains}
    assert redis_stats(redis_client, keys, list(rows)) == expected


def test_takes_a_fencing_token(
    redis_client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine
) -> None:
    with engine.connect() as connection:
        before = store_stats.current_fence(connection)
    hydrate.hydrate_shards(redis_client, keys, engine)
    with engine.connect() as connection:
        after = store_stats.current_fence(connection)
        assert connection.execute(sa.select(federation_flusher.c.id)).scalar_one() == 1
    assert after == before + 1
    # Nothing missing: no read, no token.
    hydrate.hydrate_shards(redis_client, keys, engine)
    with engine.connect() as connection:
        assert store_stats.current_fence(connection) == after


def test_pushes_are_refused_until_hydrated_then_kept(
    redis_client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine
) -> None:
    rows = make_rows(10)
    write_rows(engine, rows, [(shard_of("d3.example"), "w", 4)])
    batch = {"d3.example": {"failed_http": 2}, "new.example": {"success_http": 1}}
    refused = push(redis_client, keys, "w", 5, batch)
    assert set(refused.values()) == {-1}
    assert redis_stats(redis_client, keys, ["d3.example", "new.example"]) == {}

    hydrate.hydrate_shards(redis_client, keys, engine)
    # The worker retries the same chunk, unchanged: now applied, once.
    assert set(push(redis_client, keys, "w", 5, batch).values()) == {1}
    assert set(push(redis_client, keys, "w", 5, batch).values()) == {0}
    # A chunk acknowledged before the loss (seq 4 was persisted) is not counted twice.
    assert push(redis_client, keys, "w", 4, {"d3.example": {"failed_http": 100}}) == {
        shard_of("d3.example"): 0
    }
    got = redis_stats(redis_client, keys, ["d3.example", "new.example"])
    assert got["d3.example"]["failed_http"] == rows["d3.example"]["failed_http"] + 2
    assert got["new.example"]["success_http"] == 1


HYDRATE_IN_SUBPROCESS = """
import json, sys
import redis
from fedtrack_redis.connections import database_engine
from fedtrack_redis.hydrate import hydrate_shards
from fedtrack_redis.keys import NamespaceKeys
client = redis.Redis.from_url(sys.argv[1], decode_responses=True)
engine = database_engine(sys.argv[2])
sys.stdin.readline()  # start together
print(json.dumps(hydrate_shards(client, NamespaceKeys(sys.argv[3]), engine)), flush=True)
client.close()
engine.dispose()
"""


def test_concurrent_hydrators_restore_exactly_once(
    redis_url: str,
    redis_client: redis.Redis,
    keys: NamespaceKeys,
    engine: sa.Engine,
    database_url: str,
) -> None:
    rows = make_rows(3000)
    write_rows(engine, rows, [(s, "w", 100 + s) for s in range(SHARDS)])
    workers = [
        run_python(HYDRATE_IN_SUBPROCESS, redis_url, database_url, keys.namespace) for _ in range(3)
    ]
    results: list[Any] = []
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    # ... and one in this process, at the same time.
    results.append(hydrate.hydrate_shards(redis_client, keys, engine))
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        results.append(json.loads(out))
    assert sum(results) == len(rows)
    restored = redis_stats(redis_client, keys, list(rows))
    assert totals(restored) == totals({d: {**r, "queued_messages": 0} for d, r in rows.items()})
    assert {d: without(r, "queued_messages") for d, r in restored.items()} == {
        d: without(r, "queued_messages") for d, r in rows.items()
    }
    for shard in range(SHARDS):
        assert redis_client.hget(keys.shards[shard].acks, "w") == str(100 + shard)


def test_database_rows_unchanged_by_hydrate(
    redis_client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine
) -> None:
    rows = make_rows(5)
    write_rows(engine, rows, [])
    hydrate.hydrate_shards(redis_client, keys, engine)
    assert db_stats(engine) == rows


# -- G11: the right database -------------------------------------------------------------


@pytest.fixture
def other_engine(sqlite_url: str) -> Any:
    """A second, unrelated database (its own identity), schema created."""
    other = database_engine(sqlite_url.replace("fedtrack.sqlite3", "other.sqlite3"))
    migrate.upgrade(other)
    yield other
    other.dispose()


def test_another_database_cannot_hydrate_over_a_surviving_marker(
    redis_client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine, other_engine: sa.Engine
) -> None:
    rows = make_rows(30)
    write_rows(engine, rows, [])
    hydrate.hydrate_shards(redis_client, keys, engine)
    lost = [shard_of("d0.example"), shard_of("d1.example")]
    for shard in lost:  # a partial loss: two shards gone, the others survive
        redis_client.delete(keys.shards[shard].hydrated)
    with other_engine.connect() as connection:
        fence = store_stats.current_fence(connection)
    with pytest.raises(DatabaseMismatchError) as info:
        hydrate.hydrate_shards(redis_client, keys, other_engine)
    message = str(info.value)
    assert database_id(engine) in message and database_id(other_engine) in message
    assert "\n" not in message
    assert hydrate.missing_shards(redis_client, keys) == sorted(set(lost))  # nothing added
    with other_engine.connect() as connection:
        assert store_stats.current_fence(connection) == fence  # no token taken either
    assert hydrate.hydrate_shards(redis_client, keys, engine) > 0  # the right one may


def test_a_remembered_identity_refuses_another_database_after_a_total_loss(
    redis_client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine, other_engine: sa.Engine
) -> None:
    guard = IdentityGuard(keys.namespace)
    hydrate.hydrate_shards(redis_client, keys, engine, guard=guard)
    assert guard.remembered == database_id(engine)
    for shard in keys.shards:
        redis_client.delete(shard.hydrated)  # Redis lost everything: nothing names a database
    with pytest.raises(DatabaseMismatchError):
        hydrate.hydrate_shards(redis_client, keys, other_engine, guard=guard)
    assert hydrate.missing_shards(redis_client, keys) == list(range(SHARDS))
    pinned = IdentityGuard(keys.namespace, pinned=database_id(engine))
    with pytest.raises(DatabaseMismatchError):
        hydrate.hydrate_shards(redis_client, keys, other_engine, guard=pinned)
    assert hydrate.hydrate_shards(redis_client, keys, engine, guard=pinned) == 0
    assert hydrate.missing_shards(redis_client, keys) == []


def test_the_policy_keys_name_the_database_too(
    redis_client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine, other_engine: sa.Engine
) -> None:
    redis_client.hset(keys.policy_meta, mapping={"version": 1, "database_id": database_id(engine)})
    with pytest.raises(DatabaseMismatchError):
        hydrate.hydrate_shards(redis_client, keys, other_engine)
    assert hydrate.missing_shards(redis_client, keys) == list(range(SHARDS))


def test_hydration_restores_the_shard_totals_and_top_lists_the_reads_use(
    redis_client: redis.Redis,
    keys: NamespaceKeys,
    engine: sa.Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Totals and top lists go with each shard's last chunk (computed from all its rows),
    so what the reads show equals a look at every row; a chunk refused mid-batch stops
    the shard without adding twice."""
    from fedtrack_redis import reads

    monkeypatch.setattr(hydrate, "CHUNK_DOMAINS", 3)
    monkeypatch.setattr(hydrate, "TOP_SIZE", 5)
    rows = make_rows(300)
    write_rows(engine, rows)
    identity, plans = read_plans(redis_client, keys, engine, [0])
    now = int(redis_client.time()[0])
    # a refused chunk in the middle of a batch: a foreign plan is in progress
    assert hydrate.apply_chunk(runner(redis_client), keys.shards[0], plans[0], 0, now, identity)
    other = hydrate._Plan(plans[0].chunks, plans[0].acks, "0" * 32)
    assert hydrate._apply(runner(redis_client), keys.shards[0], other, now, identity) == (0, False)
    redis_client.delete(
        *(keys.shards[0].domain(line.split("\t")[0]) for line in plans[0].chunks[0])
    )
    redis_client.delete(keys.shards[0].hydrating, keys.shards[0].active)

    assert hydrate.hydrate_shards(redis_client, keys, engine) == len(rows)
    summed = reads.totals(redis_client, keys)
    expected = totals({d: {**r, "queued_messages": 0} for d, r in rows.items()})
    assert {name: summed.get(name, 0) for name in expected} == expected
    assert summed["domains"] == len(rows)

    def failures(row: dict[str, Any]) -> int:
        return int(row["failed_http"] + row["failed_https"] + row["failed_smtp"])

    for shard in keys.shards:
        in_shard = {d: r for d, r in rows.items() if shard_of(d) == shard.shard}
        best = sorted(((failures(r), d) for d, r in in_shard.items() if failures(r)), reverse=True)
        top = redis_client.zrevrange(shard.top_failures, 0, -1, withscores=True)
        assert [(int(score), domain) for domain, score in top] == best[:5]
        slowest = sorted(
            (
                (r["total_latency_ms"] / r["successful_deliveries"], d)
                for d, r in in_shard.items()
                if r["successful_deliveries"]
            ),
            reverse=True,
        )
        top = redis_client.zrevrange(shard.top_latency, 0, -1, withscores=True)
        assert [(score, domain) for domain, score in top] == slowest[:5]
