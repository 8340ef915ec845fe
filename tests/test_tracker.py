"""FederationTracker against the real Redis: the original tracker's behaviours, cluster-wide
reads, bad input, NOSCRIPT, life cycle (close, SIGTERM, global_tracker)."""

from __future__ import annotations

import multiprocessing
import re
import signal
import threading
from collections.abc import Callable

import pytest
import redis
import sqlalchemy as sa

import fedtrack_redis
from fedtrack_redis import (
    BackendUnavailableError,
    ConfigurationError,
    FederationTracker,
    FedtrackError,
    InvalidDomainError,
    InvalidTransportError,
    ServerStat,
)
from fedtrack_redis.globals import global_tracker, reset_globals
from fedtrack_redis.keys import NamespaceKeys
from servers import free_port, wait_for
from tracker_helpers import (
    all_domain_hashes,
    counters,
    domain_hash,
    finish_child,
    lease_holders,
    make_tracker,
    mark_hydrated,
    read_line,
    start_child,
)

__all__ = ["make_tracker"]  # fixture

MakeTracker = Callable[..., FederationTracker]


def test_increment_and_decrement_queue(make_tracker: MakeTracker) -> None:
    tracker = make_tracker()
    tracker.increment_queue("example.com")
    tracker.increment_queue("example.com")
    tracker.decrement_queue("example.com")
    tracker.push()
    stat = tracker.get("example.com")
    assert stat is not None
    assert stat.queued_messages == 1


def test_queue_never_goes_negative(make_tracker: MakeTracker) -> None:
    tracker = make_tracker()
    for _ in range(3):
        tracker.decrement_queue("example.com")
    tracker.push()
    stat = tracker.get("example.com")
    assert stat is not None and stat.queued_messages == 0
    tracker.increment_queue("example.com")  # clamps at every step: 0 - 3 + 1 = 1
    tracker.push()
    stat = tracker.get("example.com")
    assert stat is not None and stat.queued_messages == 1


def test_failures_per_transport_in_any_case(make_tracker: MakeTracker) -> None:
    tracker = make_tracker()
    for transport in ("HTTP", "http", "HTTPS", "https", "Https", "SMTP", "smtp"):
        tracker.record_failure("example.com", transport)
    tracker.push()
    stat = tracker.get("example.com")
    assert stat is not None
    assert (stat.failed_http, stat.failed_https, stat.failed_smtp) == (2, 3, 2)
    assert stat.successful_deliveries == 0


def test_unknown_transport_raises_and_counts_nothing(
    make_tracker: MakeTracker, redis_client: redis.Redis, namespace: str
) -> None:
    tracker = make_tracker()
    for transport in ("FTP", "", "xmpp"):
        with pytest.raises(InvalidTransportError):
            tracker.record_failure("example.com", transport)
    with pytest.raises(InvalidTransportError):
        tracker.record_success("example.com", 10, "FTP")
    tracker.push()
    assert tracker.get("example.com") is None  # not even last_active
    assert domain_hash(redis_client, namespace, "example.com") == {}


def test_successes_sum_their_latency(make_tracker: MakeTracker) -> None:
    tracker = make_tracker()
    tracker.record_success("example.com", 150, "HTTPS")
    tracker.record_success("example.com", 250, "SMTP")
    tracker.record_success("example.com", 100, "HTTP")
    tracker.push()
    stat = tracker.get("example.com")
    assert stat is not None
    assert stat.successful_deliveries == 3
    assert stat.total_latency_ms == 500
    assert (stat.success_http, stat.success_https, stat.success_smtp) == (1, 1, 1)
    assert stat.inbound_deliveries == 0
    assert stat.mean_latency_ms == pytest.approx(500 / 3)
    assert 100 / 1.1 <= stat.p50_ms <= 150 * 1.1
    assert 250 / 1.1 <= stat.p99_ms <= 250 * 1.1


def test_empty_transport_counts_inbound(make_tracker: MakeTracker) -> None:
    tracker = make_tracker()
    tracker.record_success("example.com", 40)
    tracker.record_success("example.com", 60, "")
    tracker.push()
    stat = tracker.get("example.com")
    assert stat is not None
    assert stat.successful_deliveries == 2
    assert stat.inbound_deliveries == 2
    assert stat.total_latency_ms == 100
    assert stat.success_http + stat.success_https + stat.success_smtp == 0
    assert stat.p50_ms == 0.0  # inbound successes are not in the histogram


def test_several_domains(make_tracker: MakeTracker) -> None:
    tracker = make_tracker()
    domains = [f"d{i}.example.org" for i in range(40)]
    for index, domain in enumerate(domains):
        for _ in range(index + 1):
            tracker.record_failure(domain, "SMTP")
    tracker.push()
    stats = {stat.domain: stat for stat in tracker.get_all()}
    assert set(stats) == set(domains)
    for index, domain in enumerate(domains):
        assert stats[domain].failed_smtp == index + 1


def test_domains_are_normalized(make_tracker: MakeTracker) -> None:
    tracker = make_tracker()
    tracker.record_failure("Example.COM", "HTTP")
    tracker.record_failure("example.com.", "HTTP")
    tracker.record_success("  EXAMPLE.com ", 10, "HTTP")
    tracker.record_success("münchen.de", 10, "HTTP")
    tracker.record_success("xn--mnchen-3ya.de", 10, "HTTP")
    tracker.touch("[1.2.3.4]")
    tracker.push()
    assert {stat.domain for stat in tracker.get_all()} == {
        "example.com",
        "xn--mnchen-3ya.de",
        "1.2.3.4",
    }
    stat = tracker.get("EXAMPLE.COM.")
    assert stat is not None
    assert (stat.failed_http, stat.success_http) == (2, 1)
    munich = tracker.get("MÜNCHEN.de")
    assert munich is not None and munich.success_http == 2


def test_get_all_returns_a_snapshot_the_caller_may_change(make_tracker: MakeTracker) -> None:
    tracker = make_tracker()
    tracker.record_failure("example.com", "HTTP")
    tracker.push()
    first = tracker.get_all()
    first[0].failed_http = 1000
    first.clear()
    again = tracker.get_all()
    assert [(stat.domain, stat.failed_http) for stat in again] == [("example.com", 1)]
    assert isinstance(again[0], ServerStat)


def test_get_of_an_unknown_domain_is_none_and_of_an_invalid_one_raises(
    make_tracker: MakeTracker,
) -> None:
    tracker = make_tracker()
    assert tracker.get("nowhere.example") is None
    with pytest.raises(InvalidDomainError):
        tracker.get("not a domain")


def test_get_all_lists_the_most_recently_active_first(
    make_tracker: MakeTracker, redis_client: redis.Redis, namespace: str
) -> None:
    tracker = make_tracker()
    names = ["a.example", "b.example", "c.example", "d.example"]
    for name in names:
        tracker.touch(name)
    tracker.push()
    keys = NamespaceKeys(namespace)
    for age, name in enumerate(["c.example", "a.example", "d.example", "b.example"]):
        redis_client.zadd(keys.shard_for(name).active, {name: 2_000_000_000 - age})
    assert [stat.domain for stat in tracker.get_all()] == [
        "c.example",
        "a.example",
        "d.example",
        "b.example",
    ]


def test_last_active_moves_with_the_server_clock(
    make_tracker: MakeTracker, redis_client: redis.Redis
) -> None:
    tracker = make_tracker()
    tracker.touch("example.com")
    tracker.push()
    stat = tracker.get("example.com")
    assert stat is not None
    first = stat.last_active
    assert abs(first - int(redis_client.time()[0])) <= 1
    wait_for(lambda: int(redis_client.time()[0]) > first, 3, "the server clock to tick")
    tracker.record_failure("example.com", "SMTP")
    tracker.push()
    later = tracker.get("example.com")
    assert later is not None and later.last_active > first


def test_many_threads_recording_at_once_give_exact_totals(make_tracker: MakeTracker) -> None:
    tracker = make_tracker(push_interval=0.01)
    threads, rounds = 8, 2_000
    domains = [f"d{i}.example.net" for i in range(25)]

    def work(index: int) -> None:
        for i in range(rounds):
            domain = domains[(i + index) % len(domains)]
            tracker.record_success(domain, i % 700, "HTTPS")
            tracker.record_failure(domain, "SMTP")
            tracker.increment_queue(domain)
            if i % 2:
                tracker.decrement_queue(domain)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    tracker.push()
    stats = tracker.get_all()
    assert sum(stat.success_https for stat in stats) == threads * rounds
    assert sum(stat.failed_smtp for stat in stats) == threads * rounds
    assert sum(stat.total_latency_ms for stat in stats) == threads * sum(
        i % 700 for i in range(rounds)
    )
    assert sum(stat.queued_messages for stat in stats) == threads * rounds // 2


def test_bad_input_raises_named_errors_and_changes_nothing(
    make_tracker: MakeTracker, redis_client: redis.Redis, namespace: str
) -> None:
    tracker = make_tracker()
    tracker.record_success("example.com", 10, "HTTP")
    tracker.increment_queue("example.com")
    tracker.push()
    before = all_domain_hashes(redis_client, namespace)
    for bad in ("", "a b", "x" * 300, "exa_mple.com", "[1.2.3]", "a}b{c", "bad\ndomain"):
        with pytest.raises(InvalidDomainError):
            tracker.record_failure(bad, "HTTP")
        with pytest.raises(InvalidDomainError):
            tracker.increment_queue(bad)
        with pytest.raises(InvalidDomainError):
            tracker.touch(bad)
    for latency in (-5, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            tracker.record_success("example.com", latency, "HTTP")
    with pytest.raises(InvalidTransportError):
        tracker.record_failure("example.com", "HTTP/2")
    tracker.push()
    assert all_domain_hashes(redis_client, namespace) == before


def test_pushes_survive_a_script_flush(
    make_tracker: MakeTracker, redis_client: redis.Redis
) -> None:
    tracker = make_tracker()
    tracker.record_failure("example.com", "HTTP")
    tracker.push()
    redis_client.script_flush()
    tracker.record_failure("example.com", "HTTP")
    tracker.record_failure("other.example", "HTTP")
    tracker.push()
    stat = tracker.get("example.com")
    assert stat is not None and stat.failed_http == 2
    assert tracker.push_stats.script_loads >= 2


def test_the_hot_path_never_raises_when_redis_is_down(
    make_tracker: MakeTracker, namespace: str
) -> None:
    tracker = make_tracker(redis=f"redis://127.0.0.1:{free_port()}/0", hydrated=False)
    tracker.record_success("example.com", 10, "HTTP")
    tracker.increment_queue("example.com")
    tracker.touch("example.com")
    with pytest.raises(BackendUnavailableError):
        tracker.push(timeout=0.3)
    with pytest.raises(BackendUnavailableError):
        tracker.get_all()
    with pytest.raises(BackendUnavailableError):
        tracker.close(timeout=0.2)
    tracker.close()  # idempotent


def test_push_to_an_unhydrated_shard_waits_then_succeeds(
    make_tracker: MakeTracker, redis_client: redis.Redis, namespace: str
) -> None:
    tracker = make_tracker(hydrated=False)
    tracker.record_failure("example.com", "HTTP")
    with pytest.raises(BackendUnavailableError):
        tracker.push(timeout=0.3)  # nobody hydrates: refused, kept
    assert domain_hash(redis_client, namespace, "example.com") == {}
    mark_hydrated(redis_client, namespace)
    tracker.push()
    assert counters(redis_client, namespace, "example.com")["failed_http"] == 1


def test_a_tracker_never_hydrates_a_new_namespace_itself(
    make_tracker: MakeTracker, redis_client: redis.Redis, namespace: str, sqlite_url: str
) -> None:
    tracker = make_tracker(hydrated=False)
    tracker.record_success("example.com", 12, "SMTP")
    with pytest.raises(BackendUnavailableError):
        tracker.push(timeout=0.3)
    assert tracker.push_stats.refused >= 1
    keys = NamespaceKeys(namespace)
    assert not any(redis_client.exists(shard.hydrated) for shard in keys.shards)
    flusher = tracker.start_flusher(sqlite_url, interval=0.2)  # the leader hydrates
    wait_for(lambda: flusher.is_leader, 10, "the flusher to lead")
    tracker.push()
    stat = tracker.get("example.com")
    assert stat is not None and stat.success_smtp == 1


def test_hydrate_method_marks_every_shard_with_the_database_identity(
    make_tracker: MakeTracker, redis_client: redis.Redis, namespace: str, sqlite_url: str
) -> None:
    from fedtrack_redis.connections import database_engine
    from fedtrack_redis.identity import database_id

    tracker = make_tracker(hydrated=False)
    assert tracker.hydrate(sqlite_url) == 0  # empty database: nothing restored
    engine = database_engine(sqlite_url)
    try:
        identity = database_id(engine)
    finally:
        engine.dispose()
    keys = NamespaceKeys(namespace)
    assert [redis_client.get(shard.hydrated) for shard in keys.shards] == [identity] * 16
    tracker.record_failure("example.com", "HTTP")
    tracker.push()
    assert tracker._pusher.identity == identity  # learnt from the acknowledged push


def test_worker_ids_are_unique_and_validated(make_tracker: MakeTracker) -> None:
    first, second = make_tracker(), make_tracker()
    assert first.worker_id != second.worker_id
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", first.worker_id)
    assert make_tracker(worker_id="web-1.a_b").worker_id == "web-1.a_b"
    for bad in ("", "a b", "x}y", "x" * 200):
        with pytest.raises(ConfigurationError):
            make_tracker(worker_id=bad)
    for name, value in (("push_interval", 0), ("lease_ttl", -1), ("push_interval", "1")):
        with pytest.raises(ConfigurationError):
            make_tracker(**{name: value})
    with pytest.raises(ConfigurationError):
        make_tracker(namespace="bad namespace")


def test_close_pushes_what_is_left_releases_the_lease_and_is_idempotent(
    make_tracker: MakeTracker, redis_client: redis.Redis, namespace: str
) -> None:
    tracker = make_tracker(push_interval=3600)
    tracker.increment_queue("example.com")
    tracker.push()
    assert lease_holders(redis_client, namespace) == {tracker.worker_id}
    assert counters(redis_client, namespace, "example.com")["queued_messages"] == 1
    tracker.record_failure("example.com", "SMTP")
    tracker.close()
    tracker.close()
    assert tracker.closed
    assert counters(redis_client, namespace, "example.com")["failed_smtp"] == 1
    assert counters(redis_client, namespace, "example.com")["queued_messages"] == 0
    assert lease_holders(redis_client, namespace) == set()
    with pytest.raises(FedtrackError):
        tracker.push()


def test_the_push_thread_pushes_by_itself(
    make_tracker: MakeTracker, redis_client: redis.Redis, namespace: str
) -> None:
    tracker = make_tracker(push_interval=0.05)
    tracker.record_failure("example.com", "HTTPS")
    wait_for(
        lambda: counters(redis_client, namespace, "example.com")["failed_https"] == 1,
        5,
        "the push thread to push",
    )


def test_package_exports_the_tracker() -> None:
    for name in ("FederationTracker", "ServerStat", "global_tracker"):
        assert name in fedtrack_redis.__all__
        assert getattr(fedtrack_redis, name) is not None


def test_global_tracker_is_configured_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, namespace: str, redis_client: redis.Redis
) -> None:
    mark_hydrated(redis_client, namespace)
    monkeypatch.setenv("FEDTRACK_REDIS_URL", redis_url)
    monkeypatch.setenv("FEDTRACK_NAMESPACE", namespace)
    monkeypatch.delenv("FEDTRACK_DATABASE_URL", raising=False)  # a worker needs none
    monkeypatch.setenv("FEDTRACK_PUSH_INTERVAL", "0.05")
    reset_globals()
    try:
        tracker = global_tracker()
        assert global_tracker() is tracker
        assert tracker.namespace == namespace
        assert tracker.push_interval == 0.05
        tracker.record_failure("example.com", "HTTP")
        wait_for(lambda: tracker.get("example.com") is not None, 10, "a push")
    finally:
        reset_globals()
    assert tracker.closed


SIGTERM_CHILD = """
    import signal, sys
    from fedtrack_redis import FederationTracker
    redis_url, namespace, own_handler = sys.argv[1:4]
    if own_handler == "1":
        signal.signal(signal.SIGTERM, lambda *a: (print("app handler", flush=True), sys.exit(3)))
    tracker = FederationTracker(redis_url, namespace=namespace, push_interval=3600)
    for i in range(1000):
        tracker.record_success("example.com", i, "HTTPS")
    print("ready", flush=True)
    while True:
        signal.pause()
"""


@pytest.mark.parametrize("own_handler", [False, True])
def test_sigterm_closes_the_tracker_unless_the_app_handles_it(
    own_handler: bool, redis_url: str, namespace: str, redis_client: redis.Redis
) -> None:
    mark_hydrated(redis_client, namespace)
    child = start_child(
        SIGTERM_CHILD.replace(
            "sys.argv[1:4]", repr([redis_url, namespace, "1" if own_handler else "0"])
        )
    )
    try:
        assert read_line(child) == "ready"
        child.send_signal(signal.SIGTERM)
        child.wait(30)
    finally:
        out, _err = finish_child(child)
    if own_handler:
        assert child.returncode == 3 and "app handler" in out
        # the application's own handler ran; it did not call close(), and at exit the
        # tracker closes anyway (atexit) with everything pushed
    else:
        assert child.returncode == -signal.SIGTERM  # then the default action: terminated
    assert counters(redis_client, namespace, "example.com")["success_https"] == 1000


def test_a_forked_child_tracks_under_a_worker_id_of_its_own(
    make_tracker: MakeTracker, redis_client: redis.Redis, namespace: str
) -> None:
    tracker = make_tracker(push_interval=3600, worker_id="web-1")
    tracker.record_failure("parent.example", "HTTP")

    def child() -> None:
        tracker.record_failure("child.example", "HTTP")
        tracker.close()  # multiprocessing children leave with os._exit: close explicitly

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(30)
    assert process.exitcode == 0
    assert counters(redis_client, namespace, "child.example")["failed_http"] == 1
    assert domain_hash(redis_client, namespace, "parent.example") == {}  # still the parent's
    tracker.push()
    assert counters(redis_client, namespace, "parent.example")["failed_http"] == 1
    keys = NamespaceKeys(namespace)
    workers = set(redis_client.hkeys(keys.shard_for("child.example").acks))
    workers |= set(redis_client.hkeys(keys.shard_for("parent.example").acks))
    assert "web-1" in workers
    assert len(workers) == 2 and any(worker.startswith("web-1-f") for worker in workers)


def test_the_sigterm_handler_is_there_only_while_a_tracker_lives(
    make_tracker: MakeTracker,
) -> None:
    from fedtrack_redis import tracker as tracker_module

    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, tracker_module._on_sigterm):
        pytest.skip("the test runner has a SIGTERM handler of its own")
    tracker = make_tracker()
    assert signal.getsignal(signal.SIGTERM) is tracker_module._on_sigterm
    tracker.close()
    # back to the default, so a process blocked in C code (a multiprocessing worker on a
    # semaphore) can still be terminated
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_start_flusher_persists_and_close_stops_it(
    make_tracker: MakeTracker, sqlite_url: str
) -> None:
    tracker = make_tracker()
    flusher = tracker.start_flusher(sqlite_url, interval=0.2)
    tracker.record_success("example.com", 42, "SMTP")
    tracker.push()
    wait_for(lambda: flusher.is_leader, 10, "the flusher to lead")
    tracker.close()  # pushes, then stops the flusher, which flushes a last time
    assert not flusher.is_leader
    engine = sa.create_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                sa.text(
                    "SELECT success_smtp, total_latency_ms FROM federation_server_stats"
                    " WHERE domain = 'example.com'"
                )
            ).one()
    finally:
        engine.dispose()
    assert tuple(row) == (1, 42)


def test_a_tracker_offers_its_users_no_batch_handling() -> None:
    """Taking or releasing the batch is the pusher's: a user calling it would lose events."""
    for name in ("swap", "take_batch", "inflight_snapshot", "release_inflight"):
        assert not hasattr(FederationTracker, name), name
