"""Probes (G12): once a backoff expires, exactly one `True` cluster-wide per probe."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from fedtrack_redis import FederationTracker
from fedtrack_redis.health import HealthPolicy
from servers import wait_for
from tracker_helpers import make_tracker

__all__ = ["make_tracker"]

Make = Callable[..., FederationTracker]
POLICY = HealthPolicy(
    failures=2, backoff_min=1.0, backoff_max=30.0, unavailable_after=7, period=3600.0
)


def test_many_workers_in_a_tight_loop_get_exactly_one_probe(make_tracker: Make) -> None:
    writer = make_tracker(health=POLICY)
    workers = [make_tracker() for _ in range(6)]
    for _ in range(2):
        writer.record_failure("probe.example", "HTTPS")
    writer.push()
    health = writer.health("probe.example")
    assert health is not None and health.next_attempt_at is not None
    for worker in workers:
        wait_for(lambda w=worker: not w.should_attempt("probe.example"), 2, "held everywhere")
    # The first probe is due within 1.4 s; the claim that grants it schedules the next one
    # no sooner than 1.6 s after it. A grant is known only between the start of the call
    # that claimed it (`asked`) and its return (`at`), so a later grant that returned less
    # than 1.6 s after the first one's call started is a second probe within one schedule.
    # Everyone asks until 1.5 s after that start (or 5 s after the probe was due).
    due = health.next_attempt_at
    stop_at = [due + 5.0]
    granted: list[tuple[str, float, float]] = []
    lock = threading.Lock()

    def ask(worker: FederationTracker) -> None:
        while (asked := time.time()) < stop_at[0]:
            if worker.should_attempt("probe.example"):
                at = time.time()
                with lock:
                    granted.append((worker.worker_id, asked, at))
                    stop_at[0] = min(stop_at[0], asked + 1.5)

    threads = [threading.Thread(target=ask, args=(w,)) for w in [writer, *workers]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert granted, "no probe was granted"
    granted.sort(key=lambda grant: grant[2])
    _first, first_asked, first_at = granted[0]
    assert [g for g in granted[1:] if g[2] < first_asked + 1.6] == [], granted
    assert first_at >= due - 0.05
    after = writer.health("probe.example")
    assert after is not None and after.next_attempt_at is not None
    # the claim (at or after `due`, before the grant) advanced the schedule as a failure
    # would: the doubled interval, jittered (a later probe, if any, only advanced it more)
    assert after.next_attempt_at >= due + 0.8 * 2.0 - 0.01
    if len(granted) == 1:
        assert after.next_attempt_at <= first_at + 1.4 * 2.0 + 0.01


def test_a_probe_that_succeeds_heals_and_one_that_fails_backs_off_further(
    make_tracker: Make,
) -> None:
    tracker = make_tracker(health=POLICY)
    for _ in range(2):
        tracker.record_failure("p2.example", "SMTP")
    tracker.push()
    assert not tracker.should_attempt("p2.example")
    wait_for(lambda: tracker.should_attempt("p2.example"), 3, "the probe is granted")
    tracker.record_failure("p2.example", "SMTP")
    tracker.push()
    health = tracker.health("p2.example")
    assert health is not None and health.state == "backoff" and health.consecutive_failures == 3
    assert not tracker.should_attempt("p2.example")
    wait_for(lambda: tracker.should_attempt("p2.example"), 5, "the next probe is granted")
    tracker.record_success("p2.example", 9, "SMTP")
    tracker.push()
    assert all(tracker.should_attempt("p2.example") for _ in range(10))


def test_no_probe_without_demand(make_tracker: Make) -> None:
    writer = make_tracker(health=POLICY)
    idle = make_tracker()
    for _ in range(2):
        writer.record_failure("nodemand.example", "SMTP")
    writer.push()
    health = writer.health("nodemand.example")
    assert health is not None and health.next_attempt_at is not None
    wait_for(lambda: time.time() > health.next_attempt_at + 0.3, 3, "the backoff expires")
    again = idle.health("nodemand.example")
    assert again is not None and again.next_attempt_at == health.next_attempt_at  # unclaimed
