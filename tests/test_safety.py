"""Safety (G11, least privilege, threads that never die silently), end to end.

* A process on the wrong database (a default SQLite file, a second PostgreSQL database)
  while Redis loses its data: PostgreSQL never decreases, Redis ends at PostgreSQL's totals
  plus what was pending, and the wrong flusher writes nothing anywhere.
* ``fedtrack db rehydrate`` repairs a Redis hydrated from the wrong database.
* A role with only SELECT runs a worker; its rule changes are refused by the database.
* Every background loop survives an unexpected error and counts it; an unknown script
  status is never counted as applied; a restart reusing a worker id after a clock step
  back still counts every event.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import sqlalchemy as sa

from conftest import _libpq, create_database, drop_database, upgrade_schema
from fedtrack_redis import FederationTracker, Flusher, PolicyStore, check_federation_policy
from fedtrack_redis.cli.main import main
from fedtrack_redis.errors import BackendUnavailableError, DatabaseMismatchError
from fedtrack_redis.identity import database_id
from fedtrack_redis.keys import NamespaceKeys
from fedtrack_redis.metrics import THREAD_ERRORS
from fedtrack_redis.policy.state import Change, Snapshot
from fedtrack_redis.stats import FIELD_OF
from fedtrack_redis.store.schema import federation_server_stats
from flusher_helpers import make_engine
from servers import RedisServer, wait_for
from tracker_helpers import counters, mark_hydrated


def total_successes(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        value = connection.execute(
            sa.select(sa.func.coalesce(sa.func.sum(federation_server_stats.c.success_smtp), 0))
        ).scalar_one()
    return int(value)


def stats_rows(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                sa.select(sa.func.count()).select_from(federation_server_stats)
            ).scalar_one()
        )


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def second_postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """Another PostgreSQL database, schema created: a staging database left in a config."""
    url = upgrade_schema(create_database(postgres_admin_url))
    yield url
    drop_database(postgres_admin_url, url)


@pytest.mark.slow
def test_a_process_on_the_wrong_database_never_makes_postgres_go_backwards(
    own_redis: RedisServer,
    migrated_postgres_url: str,
    second_postgres_url: str,
    sqlite_url: str,
    namespace: str,
) -> None:
    keys = NamespaceKeys(namespace)
    wrong_sqlite = upgrade_schema(sqlite_url)
    right = Flusher(own_redis.url, migrated_postgres_url, namespace=namespace, interval=0.2)
    wrong = [
        Flusher(own_redis.url, url, namespace=namespace, interval=0.2, lock_ttl=2.0)
        for url in (wrong_sqlite, second_postgres_url)
    ]
    tracker = FederationTracker(own_redis.url, namespace=namespace, push_interval=0.05)
    client = redis.Redis(port=own_redis.port, decode_responses=True)
    samples: list[int] = []
    sampling = threading.Event()
    with (
        make_engine(migrated_postgres_url) as real,
        make_engine(second_postgres_url) as staging,
    ):

        def sample() -> None:
            while not sampling.wait(0.05):
                samples.append(total_successes(real))

        try:
            assert right.flush_once() == 0  # the right one leads first, hydrates
            for flusher in wrong:
                flusher.start()
            right.start()
            for _ in range(1000):
                tracker.record_success("big.example", 5, "SMTP")
            tracker.push()
            wait_for(lambda: total_successes(real) == 1000, 10, "the first flush")
            wait_for(lambda: all(f.mismatch for f in wrong), 10, "the wrong ones refuse")
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            for _ in range(3):
                own_redis.restart()  # Redis loses everything: no marker names a database
                tracker.record_success("big.example", 5, "SMTP")
                tracker.push(timeout=30)  # refused until the right leader hydrated
                time.sleep(0.5)  # let the wrong flushers have every chance to act
            wait_for(lambda: total_successes(real) == 1003, 10, "PostgreSQL has everything")
            assert counters(client, namespace, "big.example")["success_smtp"] == 1003
            assert all(f.mismatch for f in wrong)
            assert not any(f.is_leader for f in wrong)
        finally:
            sampling.set()
            tracker.close()
            for flusher in [right, *wrong]:
                flusher.stop()
            client.close()
        assert samples == sorted(samples) and samples, "PostgreSQL went backwards"
        assert stats_rows(staging) == 0  # the wrong flushers wrote nothing there
    with make_engine(wrong_sqlite) as sqlite:
        assert stats_rows(sqlite) == 0
    # Each marker names the right database.
    client = redis.Redis(port=own_redis.port, decode_responses=True)
    try:
        with make_engine(migrated_postgres_url) as real:
            identity = database_id(real)
        assert {client.get(shard.hydrated) for shard in keys.shards} == {identity}
    finally:
        client.close()


def test_a_store_on_another_database_cannot_change_the_rules(
    make_policy_store: Callable[..., PolicyStore],
    second_postgres_url: str,
    redis_url: str,
    namespace: str,
) -> None:
    right = make_policy_store()
    right.add_rule("kept.example")
    wrong = PolicyStore(second_postgres_url, redis_url, namespace=namespace).init()
    try:
        with pytest.raises(DatabaseMismatchError) as info:
            wrong.add_rule("evil.example")
        assert "\n" not in str(info.value)
        with make_engine(second_postgres_url) as staging, staging.connect() as c:
            assert c.execute(sa.text("SELECT count(*) FROM federation_rules")).scalar() == 0
        assert sorted(right.list_rules()) == ["kept.example"]
        assert not wrong.has_rule("evil.example")
    finally:
        wrong.close()


def test_rehydrate_rebuilds_redis_from_the_right_database(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    migrated_postgres_url: str,
    second_postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = NamespaceKeys(namespace)
    right = Flusher(redis_url, migrated_postgres_url, namespace=namespace)
    tracker = FederationTracker(redis_url, namespace=namespace, push_interval=3600)
    try:
        right.flush_once()
        tracker.record_success("a.example", 10, "HTTPS")
        tracker.push()
        assert right.flush_once() == 1
        # Redis loses everything, and the staging database's flusher hydrates it first.
        for key in redis_client.scan_iter(match=f"fedtrack:{{{namespace}:*"):
            redis_client.delete(key)
        staging = Flusher(redis_url, second_postgres_url, namespace=namespace)
        staging.flush_once()
        staging.stop()
        with pytest.raises(DatabaseMismatchError):
            right.flush_once()  # refuses: Redis names the staging database now
        tracker.record_failure("a.example", "HTTPS")
        with pytest.raises(BackendUnavailableError):
            tracker.push(timeout=0.5)  # refused and kept: this worker saw the right one
        monkeypatch.setenv("FEDTRACK_REDIS_URL", redis_url)
        monkeypatch.setenv("FEDTRACK_DATABASE_URL", migrated_postgres_url)
        monkeypatch.setenv("FEDTRACK_NAMESPACE", namespace)
        with pytest.raises(SystemExit) as code:
            main(["db", "rehydrate", "--yes"])
        assert code.value.code in (0, None), capsys.readouterr().err
        assert "restored" in capsys.readouterr().out
        tracker.push(timeout=5)  # the kept failure arrives now
        assert counters(redis_client, namespace, "a.example")["success_https"] == 1
        assert counters(redis_client, namespace, "a.example")["failed_https"] == 1
        assert right.flush_once() >= 1  # works again
        with make_engine(migrated_postgres_url) as real:
            identity = database_id(real)
        assert {redis_client.get(shard.hydrated) for shard in keys.shards} == {identity}
    finally:
        tracker.close()
        right.stop()


def test_commands_that_need_the_database_fail_without_it_and_create_no_file(
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEDTRACK_REDIS_URL", redis_url)
    monkeypatch.delenv("FEDTRACK_DATABASE_URL", raising=False)
    for args in (["rules", "list"], ["flusher"], ["db", "upgrade"], ["block", "a.example"]):
        with pytest.raises(SystemExit) as code:
            main(args)
        assert code.value.code == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "FEDTRACK_DATABASE_URL" in err[0], (args, err)
    assert list(tmp_path.iterdir()) == []


# -- least privilege --------------------------------------------------------------------------


@pytest.fixture
def select_only_url(migrated_postgres_url: str, postgres_admin_url: str) -> Iterator[str]:
    """The test database through a role that may only SELECT (what a worker needs)."""
    role = "fedtrack_worker_" + uuid.uuid4().hex[:8]
    url = sa.make_url(migrated_postgres_url)
    with psycopg.connect(_libpq(url), autocommit=True) as connection:
        connection.execute(f"CREATE ROLE {role} LOGIN")
        connection.execute(f'GRANT CONNECT ON DATABASE "{url.database}" TO {role}')
        connection.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        connection.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    yield url.set(username=role).render_as_string(hide_password=False)
    admin = sa.make_url(postgres_admin_url)
    with psycopg.connect(_libpq(admin.set(database=url.database)), autocommit=True) as c:
        c.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        c.execute(f"REVOKE ALL ON SCHEMA public FROM {role}")
        c.execute(f'REVOKE ALL ON DATABASE "{url.database}" FROM {role}')
    with psycopg.connect(_libpq(admin), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
        connection.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_select_only_role_runs_a_worker(
    select_only_url: str,
    migrated_postgres_url: str,
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
) -> None:
    with PolicyStore(migrated_postgres_url, redis_url, namespace=namespace) as admin:
        admin.add_rule("spam.example")  # the operator's role changes rules
    worker = PolicyStore(select_only_url, redis_url, namespace=namespace).init()  # checks only
    mark_hydrated(redis_client, namespace)
    tracker = FederationTracker(redis_url, namespace=namespace, push_interval=3600)
    try:
        assert not check_federation_policy("spam.example", store=worker)
        assert check_federation_policy("fine.example", store=worker)
        tracker.record_success("fine.example", 10, "SMTP")
        tracker.push()
        with pytest.raises(sa.exc.ProgrammingError):  # permission denied: nothing changed
            worker.add_rule("other.example")
        assert sorted(worker.list_rules()) == ["spam.example"]
    finally:
        tracker.close()
        worker.close()


# -- threads that never die silently -----------------------------------------------------------


def errors(thread: str) -> float:
    return THREAD_ERRORS.labels(thread)._value.get()


def test_the_push_thread_survives_an_unexpected_error(
    redis_url: str, redis_client: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedtrack_redis.pending import ShardQueues

    mark_hydrated(redis_client, namespace)
    original = ShardQueues.absorb
    calls: list[int] = []

    def absorb_failing_once(self: ShardQueues, batch: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected")
        original(self, batch)

    monkeypatch.setattr(ShardQueues, "absorb", absorb_failing_once)
    before = errors("pusher")
    tracker = FederationTracker(redis_url, namespace=namespace, push_interval=0.05)
    try:
        tracker.record_failure("x.example", "SMTP")
        wait_for(lambda: errors("pusher") == before + 1, 5, "the error is counted")
        tracker.record_failure("x.example", "SMTP")
        wait_for(
            lambda: counters(redis_client, namespace, "x.example")["failed_smtp"] >= 1,
            5,
            "the thread goes on pushing",
        )
    finally:
        tracker.close()


def test_the_flusher_and_renewal_threads_survive_unexpected_errors(
    redis_url: str, namespace: str, migrated_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedtrack_redis.election import Election

    flusher = Flusher(redis_url, migrated_postgres_url, namespace=namespace, interval=0.1)
    original_tick = Flusher._tick
    original_renew = Election.renew
    failed = {"tick": 0, "renew": 0}

    def tick(self: Flusher, *args: Any) -> Any:
        if failed["tick"] == 0:
            failed["tick"] = 1
            raise KeyError("injected")
        return original_tick(self, *args)

    def renew(self: Election) -> bool:
        on_its_thread = threading.current_thread().name == "fedtrack-flusher-lock"
        if on_its_thread and failed["renew"] == 0:
            failed["renew"] = 1
            raise KeyError("injected")
        return original_renew(self)

    monkeypatch.setattr(Flusher, "_tick", tick)
    monkeypatch.setattr(Election, "renew", renew)
    before = errors("flusher"), errors("election")
    try:
        flusher.start()
        wait_for(lambda: flusher.is_leader, 10, "it leads despite the errors")
        wait_for(
            lambda: (errors("flusher"), errors("election")) == (before[0] + 1, before[1] + 1),
            10,
            "both errors counted",
        )
        assert flusher._thread is not None and flusher._thread.is_alive()
    finally:
        flusher.stop()


def test_the_policy_sync_thread_survives_an_unexpected_error(
    make_policy_store: Callable[..., PolicyStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedtrack_redis.policy.sync import PolicySync

    original = PolicySync.check_version
    failed: list[int] = []

    def check_version(self: PolicySync) -> None:
        if not failed:
            failed.append(1)
            raise ValueError("injected")
        original(self)

    monkeypatch.setattr(PolicySync, "check_version", check_version)
    before = errors("policy_sync")
    writer, reader = make_policy_store(), make_policy_store()
    wait_for(lambda: errors("policy_sync") == before + 1, 5, "the error is counted")
    writer.add_rule("after.example")
    wait_for(lambda: reader.has_rule("after.example"), 5, "it goes on following changes")


def test_an_unknown_script_status_is_never_counted_as_applied(
    redis_url: str, redis_client: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedtrack_redis.pusher import Pusher

    mark_hydrated(redis_client, namespace)
    original = Pusher._read_from
    rewritten: list[int] = []

    def unknown_status_once(self: Pusher, *args: Any) -> Any:
        replies = original(self, *args)
        if replies and not rewritten:
            rewritten.append(1)
            return [(chunk, [7, 0, 0, "", ""]) for chunk, _reply in replies]
        return replies

    monkeypatch.setattr(Pusher, "_read_from", unknown_status_once)
    tracker = FederationTracker(redis_url, namespace=namespace, push_interval=3600)
    try:
        tracker.record_failure("u.example", "HTTP")
        tracker.push()  # the first reply says 7: kept and sent again (a duplicate then)
        assert rewritten and tracker.push_stats.chunks == 0
        assert tracker.push_stats.duplicates == 1
        assert counters(redis_client, namespace, "u.example")["failed_http"] == 1
    finally:
        tracker.close()


def test_a_restart_reusing_the_worker_id_after_a_clock_step_back_loses_nothing(
    redis_url: str, redis_client: redis.Redis, namespace: str
) -> None:
    mark_hydrated(redis_client, namespace)
    keys = NamespaceKeys(namespace)
    shard = keys.shard_for("c.example")
    # An earlier life of worker "web-1" pushed sequence numbers from a clock a day ahead.
    ahead = time.time_ns() // 1000 + 86_400 * 10**6
    redis_client.hset(shard.acks, "web-1", ahead)
    tracker = FederationTracker(redis_url, namespace=namespace, worker_id="web-1")
    try:
        for _ in range(5):
            tracker.record_failure("c.example", "HTTPS")
        tracker.push()
        assert counters(redis_client, namespace, "c.example")["failed_https"] == 5
        assert tracker.push_stats.renumbered == 1
        assert int(redis_client.hget(shard.acks, "web-1") or 0) == ahead + 1
        tracker.record_failure("c.example", "HTTPS")
        tracker.push()
        assert counters(redis_client, namespace, "c.example")["failed_https"] == 6
    finally:
        tracker.close()


def test_a_check_never_sees_new_rules_under_an_old_mode(
    redis_url: str, namespace: str, migrated_postgres_url: str
) -> None:
    """Two consistent states: (REJECT, {a}) and (ACCEPT, {}); in both, a.example is
    allowed. A torn read (REJECT without the rule, ACCEPT with it) would refuse it."""
    from fedtrack_redis.policy.rules import parse_rule

    store = PolicyStore(migrated_postgres_url, redis_url, namespace=namespace)
    store.state.replace(Snapshot(version=0, policy="ACCEPT", enabled=True, rules={}))
    rule = parse_rule("a.example")
    stop = threading.Event()
    refused: list[int] = []

    def flip() -> None:
        version = 0
        while not stop.is_set():
            store.state.apply_many(
                [
                    Change(version + 1, "policy", policy="REJECT"),
                    Change(version + 2, "add", rules=(rule,)),
                ]
            )
            store.state.apply_many(
                [
                    Change(version + 3, "policy", policy="ACCEPT"),
                    Change(version + 4, "remove", texts=("a.example",)),
                ]
            )
            version += 4

    def check() -> None:
        for _ in range(200_000):
            if not check_federation_policy("a.example", store=store):
                refused.append(1)

    writer = threading.Thread(target=flip)
    writer.start()
    try:
        check()
    finally:
        stop.set()
        writer.join()
    assert refused == []
    assert store.view.version % 2 == 0


def test_flush_and_prune_with_seventy_thousand_worker_ids_in_one_shard(
    redis_client: redis.Redis, namespace: str, migrated_postgres_url: str
) -> None:
    """Worker ids churn: the acks of 70,000 workers that pushed to one shard in one flush
    epoch are read in pages and persisted, and the acks of 35,000 workers silent for
    longer than the retention are pruned, with no statement binding one parameter per
    worker."""
    from fedtrack_redis.chunk import ACK_RETENTION_SECONDS
    from fedtrack_redis.store import stats as store_stats
    from flusher_helpers import db_acks

    keys = NamespaceKeys(namespace)
    flusher = Flusher(redis_client, migrated_postgres_url, namespace=namespace)
    try:
        flusher.flush_once()
        shard = keys.shards[5]
        now = int(redis_client.time()[0])
        silent = [
            (5, f"gone-{index}", 3, now - ACK_RETENTION_SECONDS - 10) for index in range(35_000)
        ]
        with make_engine(migrated_postgres_url) as engine, engine.begin() as connection:
            store_stats.upsert_acks(connection, silent)
        with redis_client.pipeline(transaction=False) as pipe:
            for start in range(0, 70_000, 5_000):
                ids = [f"churned-{index}" for index in range(start, start + 5_000)]
                pipe.hset(shard.epoch_acks, mapping=dict.fromkeys(ids, 7))
            pipe.sadd(shard.changed, "x.example")
            pipe.hset(
                shard.domain("x.example"),
                mapping={FIELD_OF["failed_smtp"]: 1, FIELD_OF["last_active"]: now},
            )
            pipe.execute()
        assert flusher.flush_once() == 1
        with make_engine(migrated_postgres_url) as engine:
            acks = db_acks(engine)
        assert len(acks) == 70_000  # every ack of the epoch; the silent ones pruned
        assert all(worker.startswith("churned-") for _shard, worker in acks)
    finally:
        flusher.stop()
