"""The worker's queue ages (qshape columns): pure logic, no Redis."""

from __future__ import annotations

import random

import pytest

from fedtrack_redis import FederationTracker, InvalidValueError
from fedtrack_redis.ages import (
    AGE_COLUMNS,
    BOUNDARIES,
    COLUMNS,
    AgeQueue,
    AgeTracker,
    column_counts,
    column_of,
    release_ages,
)
from fedtrack_redis.batch import NOT_QUEUED, QUEUED, Recorder, release_inflight, take_batch

NOW = 1_800_000_000.0
MINUTE = 60.0


def test_the_columns_are_qshapes_and_half_open() -> None:
    assert COLUMNS == ("T", "5", "10", "20", "40", "80", "160", "320", "640", "1280", "1280+")
    assert [b / MINUTE for b in BOUNDARIES] == [5, 10, 20, 40, 80, 160, 320, 640, 1280]
    assert column_of(0) == 0
    assert column_of(5 * MINUTE - 0.001) == 0
    assert column_of(5 * MINUTE) == 1  # exactly 5 min is in [5, 10)
    assert column_of(10 * MINUTE) == 2
    assert column_of(1280 * MINUTE - 0.001) == 8
    assert column_of(1280 * MINUTE) == 9  # 1280+
    assert column_of(-30) == 0  # enqueued by a clock ahead of ours: new


def queue_of(times: list[float]) -> AgeQueue:
    queue = AgeQueue()
    for enqueued in times:
        queue.add(enqueued)
    return queue


def test_an_age_queue_counts_each_message_in_its_column_at_the_exact_boundaries() -> None:
    ages = [0, 299.999, 300, 599.999, 600, 1200, 2400, 4800, 9600, 19200, 38400, 76800, 90000]
    queue = queue_of(sorted(NOW - age for age in ages))
    counts, due = queue.evaluate(NOW)
    assert counts == [2, 2, 1, 1, 1, 1, 1, 1, 1, 2]
    assert counts == column_counts([NOW - age for age in ages], NOW)
    # the next move: the 299.999 s old message reaches 5 min 1 ms from now
    assert due == pytest.approx(NOW + 0.001)


def test_messages_move_column_as_time_passes_and_the_oldest_leaves_first() -> None:
    queue = queue_of([NOW - 290, NOW - 10])
    assert queue.evaluate(NOW)[0][:2] == [2, 0]
    assert queue.evaluate(NOW + 10)[0][:2] == [1, 1]  # 300 s old: column 10
    queue.pop_oldest()
    assert queue.evaluate(NOW + 10)[0][:2] == [1, 0]
    assert queue.evaluate(NOW + 290)[0][:2] == [0, 1]


def test_an_older_enqueue_time_is_inserted_in_order() -> None:
    queue = queue_of([NOW - 10, NOW - 5])
    assert queue.evaluate(NOW)[0][0] == 2
    queue.add(NOW - 700)  # a restarted worker re-asserting a real age
    queue.add(NOW - 301)
    assert queue.evaluate(NOW)[0][:3] == [2, 1, 1]
    queue.pop_oldest()  # the 700 s old one
    assert queue.evaluate(NOW)[0][:3] == [2, 1, 0]


def test_incremental_counts_equal_the_reference_under_random_operations() -> None:
    rng = random.Random(16)
    queue = AgeQueue()
    reference: list[float] = []
    now = NOW
    for step in range(5000):
        now += rng.choice([0.0, 1.0, 37.0, 290.0, 3000.0])
        action = rng.random()
        if action < 0.5 or not reference:
            enqueued = now - rng.choice([0.0, 0.0, 0.0, rng.uniform(0, 100_000)])
            queue.add(enqueued)
            reference.append(enqueued)
            reference.sort()
        elif action < 0.9:
            queue.pop_oldest()
            reference.pop(0)
        if step % 7 == 0:
            counts, _due = queue.evaluate(now)
            assert counts == column_counts(reference, now), step
            assert len(queue) == len(reference)


def changes(ages: AgeTracker, recorder: Recorder, now: float) -> dict[str, dict[int, int]]:
    """What the pusher's cycle does: the domains whose batch row carries a count."""
    batch = take_batch(recorder)
    rows = batch.rows if batch else {}
    return ages.changes(now, {name for name, row in rows.items() if row[QUEUED] != NOT_QUEUED})


def test_the_tracker_hands_out_only_changed_older_columns_then_moves_when_due() -> None:
    recorder = Recorder()
    ages = AgeTracker(recorder)
    recorder.increment_queue("a.example", enqueued_at=NOW - 100)
    recorder.increment_queue("a.example", enqueued_at=NOW - 100)
    recorder.increment_queue("b.example", enqueued_at=NOW - 350)
    # column 0 (under 5 min) never travels: it is the count minus the others
    assert changes(ages, recorder, NOW) == {"b.example": {1: 1}}
    assert changes(ages, recorder, NOW + 100) == {}  # nothing moved, nothing touched
    assert changes(ages, recorder, NOW + 200) == {"a.example": {1: 2}}  # due: 5 min old now
    recorder.decrement_queue("b.example")
    assert changes(ages, recorder, NOW + 200) == {"b.example": {1: 0}}
    assert ages.full("a.example") == {1: 2}
    assert ages.full("b.example") == {}
    assert changes(ages, recorder, NOW + 500) == {"a.example": {1: 0, 2: 2}}
    release_inflight(recorder)  # what close() does
    release_ages(recorder)
    assert recorder._ages == {}
    assert changes(ages, recorder, NOW + 500) == {"a.example": {2: 0}}


def test_decrement_queue_removes_the_oldest_message() -> None:
    recorder = Recorder()
    ages = AgeTracker(recorder)
    recorder.increment_queue("a.example", enqueued_at=NOW - 2000)  # column 40
    recorder.increment_queue("a.example", enqueued_at=NOW - 30)  # column 5
    recorder.increment_queue("a.example", enqueued_at=NOW - 700)  # column 20, inserted
    recorder.decrement_queue("A.Example")
    assert changes(ages, recorder, NOW) == {"a.example": {2: 1}}
    recorder.decrement_queue("a.example")
    assert changes(ages, recorder, NOW) == {"a.example": {2: 0}}  # only what changed


def test_a_decrement_at_zero_leaves_no_age_behind() -> None:
    recorder = Recorder()
    ages = AgeTracker(recorder)
    recorder.decrement_queue("a.example")
    recorder.increment_queue("a.example", enqueued_at=NOW - 400)
    assert changes(ages, recorder, NOW) == {"a.example": {1: 1}}
    assert recorder._ages == {"a.example": NOW - 400}  # a domain's only message: its time
    assert recorder._inflight == {"a.example": 1}


@pytest.mark.parametrize("bad", [True, "1700000000", float("nan"), float("inf"), -1, 12.5])
def test_a_bad_enqueue_time_is_refused_and_records_nothing(bad: object) -> None:
    recorder = Recorder()
    with pytest.raises(InvalidValueError, match="enqueued_at"):
        recorder.increment_queue("a.example", enqueued_at=bad)  # type: ignore[arg-type]
    assert recorder._inflight == {}
    assert recorder._ages == {}


def test_a_long_queue_compacts_its_consumed_head() -> None:
    queue = AgeQueue.of(NOW - 1000)
    for i in range(1, 200):
        queue.add(NOW - 1000 + i)
    for _ in range(150):
        queue.pop_oldest()
    assert len(queue) == 50
    assert len(queue.times) < 200
    assert queue.evaluate(NOW)[0] == column_counts([NOW - 1000 + i for i in range(150, 200)], NOW)


def test_increment_queue_keeps_its_signature_on_the_tracker() -> None:
    assert AGE_COLUMNS == 10
    assert "enqueued_at" in FederationTracker.increment_queue.__code__.co_varnames
