"""election.Election: the flusher lock and the fencing token, through its own interface
(real Redis, real databases)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa

from fedtrack_redis.election import Election
from fedtrack_redis.engine import RedisEngine
from fedtrack_redis.keys import NamespaceKeys
from fedtrack_redis.store import stats as store_stats
from flusher_helpers import engine, keys

__all__ = ["engine", "keys"]


@pytest.fixture
def make_election(
    redis_client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine
) -> Iterator[object]:
    made: list[Election] = []

    def make(ttl: float = 2.0) -> Election:
        election = Election(RedisEngine.wrap(redis_client), keys, engine, ttl=ttl)
        made.append(election)
        return election

    yield make
    for election in made:
        election.stop()
        election.release()


def test_one_holder_and_increasing_fencing_tokens(
    make_election: object, redis_client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine
) -> None:
    first, second = make_election(), make_election()  # type: ignore[operator]
    assert first.try_acquire() == 0.0 and first.is_leader
    waiting = second.try_acquire()
    assert 0 < waiting <= 2.0 and not second.is_leader
    token = first.fence
    assert token is not None and redis_client.get(keys.flusher_lock)
    first.release()
    assert not first.is_leader and not redis_client.exists(keys.flusher_lock)
    assert second.try_acquire() == 0.0
    assert second.fence is not None and second.fence > token
    with engine.connect() as connection:
        assert store_stats.current_fence(connection) == second.fence


def test_a_lock_lost_with_redis_data_is_noticed_at_renewal(
    make_election: object, redis_client: redis.Redis, keys: NamespaceKeys
) -> None:
    election = make_election()  # type: ignore[operator]
    election.try_acquire()
    redis_client.delete(keys.flusher_lock)
    assert election.renew() is False
    assert not election.is_leader and election.fence is None


def test_refresh_fence_takes_a_newer_token_and_keeps_the_lock(
    make_election: object, engine: sa.Engine
) -> None:
    election = make_election()  # type: ignore[operator]
    election.try_acquire()
    before = election.fence
    term = election.term
    with engine.begin() as connection:  # what a hydration does
        store_stats.bump_fence(connection)
    assert election.refresh_fence()
    assert election.fence is not None and before is not None and election.fence > before + 1
    assert election.term == term  # not a new election


def test_drop_steps_down_and_frees_the_lock_for_the_next(
    make_election: object, redis_client: redis.Redis, keys: NamespaceKeys
) -> None:
    first, second = make_election(), make_election()  # type: ignore[operator]
    first.try_acquire()
    first.drop("fenced out")
    assert not first.is_leader and not redis_client.exists(keys.flusher_lock)
    assert second.try_acquire() == 0.0


def test_the_renewal_thread_keeps_the_lock_beyond_its_ttl(
    make_election: object, redis_client: redis.Redis, keys: NamespaceKeys
) -> None:
    from servers import wait_for

    election = make_election(ttl=0.6)  # type: ignore[operator]
    election.try_acquire()
    election.start()
    token = redis_client.get(keys.flusher_lock)
    wait_for(lambda: redis_client.pttl(keys.flusher_lock) > 400, 2, "renewed")
    # three TTLs later: still ours
    deadline_ttls = 3
    for _ in range(deadline_ttls):
        wait_for(lambda: election.is_leader, 1, "still leading")
    assert redis_client.get(keys.flusher_lock) == token
