"""`HealthView` and `HealthPolicy` as pure logic: revision order, gaps, snapshots, probes."""

from __future__ import annotations

import threading

import pytest

from fedtrack_redis.errors import ConfigurationError
from fedtrack_redis.health.policy import HealthPolicy, decode_record
from fedtrack_redis.health.view import HealthView
from fedtrack_redis.keys import shard_of

D = "v.example"
S = shard_of(D)


def synced() -> HealthView:
    view = HealthView()
    for shard in range(16):
        view.replace(shard, 10, {}, force=False)
    return view


def test_changes_apply_in_revision_order_and_older_ones_are_ignored() -> None:
    view = synced()
    assert view.apply_feed(S, f"11\n{D}|backoff|5000")
    assert view.held == {D: 5000} and not view.should_attempt(D)
    assert view.apply_feed(S, f"11\n{D}|healthy|0")  # a repeat: ignored
    assert view.held == {D: 5000}
    assert not view.apply_feed(S, f"10\n{D}|healthy|0")  # older: ignored
    assert view.apply_feed(S, f"12\n{D}|healthy|0")
    assert view.held == {} and view.should_attempt(D)


def test_a_gap_applies_and_marks_the_shard_for_a_resync() -> None:
    view = synced()
    assert not view.apply_feed(S, f"15\n{D}|unavailable|9")
    assert view.held == {D: 9} and S in view.stale
    assert not view.replace(S, 12, {}, force=False)  # an older snapshot never overwrites
    assert view.replace(S, 15, {D: 9, "w.example": 3}, force=False) and S not in view.stale
    assert view.replace(S, 1, {}, force=True) and view.held == {}  # Redis lost its data


def test_should_attempt_follows_any_spelling_and_never_raises() -> None:
    view = synced()
    view.apply_feed(S, f"11\n{D}|backoff|1")
    assert not view.should_attempt("V.Example.")
    for value in ("", "bad name", None, 1, ["x"]):
        assert view.should_attempt(value) is True  # type: ignore[arg-type]


def test_a_claimed_probe_is_one_true_across_threads() -> None:
    view = synced()
    view.apply_feed(S, f"11\n{D}|backoff|1")
    assert not view.should_attempt(D) and view.due(2) == [D]  # asked about, due
    view.grant(D)
    answers: list[bool] = []
    threads = [
        threading.Thread(target=lambda: answers.extend(view.should_attempt(D) for _ in range(500)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers.count(True) == 1


def test_policy_validation_and_round_trip() -> None:
    policy = HealthPolicy(failures=2, backoff_min=1.5)
    assert HealthPolicy.from_json(policy.to_json()) == policy
    for bad in (
        {"failures": 0},
        {"failures": True},
        {"backoff_min": float("nan")},
        {"backoff_min": 10.0, "backoff_max": 5.0},
        {"period": -1},
    ):
        with pytest.raises(ConfigurationError):
            HealthPolicy(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        HealthPolicy.from_json("{}")
    assert decode_record(D, None).state == "healthy"
    assert decode_record(D, "garbage").state == "healthy"
    record = decode_record(D, "b,4,1000,9000,1,0,1")
    assert (record.state, record.consecutive_failures, record.failing_since) == ("backoff", 4, 1.0)
    assert record.next_attempt_at == 9.0


def test_the_demo_has_a_domain_that_goes_down_and_comes_back() -> None:
    from fedtrack_redis.demo import traffic

    assert traffic.FLAPPING in {d.name for d in traffic.population(50)}
    cycle = traffic.CYCLE_SECONDS
    assert traffic.is_down(traffic.FLAPPING, now=cycle * 10 + 1)
    assert not traffic.is_down(traffic.FLAPPING, now=cycle * 10 + traffic.DOWN_SECONDS + 1)
    assert not traffic.is_down("other.example", now=cycle * 10 + 1)
