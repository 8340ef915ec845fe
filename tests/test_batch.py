"""batch.Recorder: the hot path — validation, rows, histograms, in-flight counts (unit)."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

from fedtrack_redis import InvalidDomainError, InvalidTransportError
from fedtrack_redis.batch import (
    FAILED_HTTPS,
    INBOUND,
    LATENCY,
    NOT_QUEUED,
    QUEUED,
    SUCCESS_HTTPS,
    SUCCESS_SMTP,
    Recorder,
    inflight_snapshot,
    release_inflight,
    take_batch,
)
from fedtrack_redis.stats import bucket_of

# -- Recorder -------------------------------------------------------------------------------


def merged(recorder: Recorder) -> dict[str, tuple[list[Any], dict[int, int]]]:
    """Swap the batch and merge spellings: normalized domain → (row[:9], buckets)."""
    batch = take_batch(recorder)
    result: dict[str, tuple[list[Any], dict[int, int]]] = {}
    if batch is None:
        return result
    for name, row, buckets in batch.domains():
        if name in result:
            held, held_buckets = result[name]
            for index in range(LATENCY + 1):
                held[index] += row[index]
            if row[QUEUED] != NOT_QUEUED:
                held[QUEUED] = row[QUEUED]
            for bucket, count in buckets.items():
                held_buckets[bucket] = held_buckets.get(bucket, 0) + count
        else:
            result[name] = (row[:9], dict(buckets))
    return result


def test_queue_clamps_at_zero_at_every_step() -> None:
    recorder = Recorder()
    recorder.decrement_queue("a.example")
    recorder.decrement_queue("a.example")
    recorder.increment_queue("a.example")
    assert inflight_snapshot(recorder) == {"a.example": 1}
    assert merged(recorder)["a.example"][0][QUEUED] == 1
    recorder.decrement_queue("A.Example.")
    assert inflight_snapshot(recorder) == {}
    assert merged(recorder)["a.example"][0][QUEUED] == 0


def test_rows_of_several_spellings_merge_into_one_domain() -> None:
    recorder = Recorder()
    recorder.record_success("Example.COM", 150, "HTTPS")
    recorder.record_success("example.com.", 250, "https")
    recorder.record_success("example.com", 100)
    recorder.record_failure("EXAMPLE.com", "Https")
    recorder.touch("[1.2.3.4]")
    rows = merged(recorder)
    assert set(rows) == {"example.com", "1.2.3.4"}
    row, buckets = rows["example.com"]
    assert row[SUCCESS_HTTPS] == 2
    assert row[INBOUND] == 1
    assert row[FAILED_HTTPS] == 1
    assert row[LATENCY] == 500
    assert row[QUEUED] == NOT_QUEUED
    assert buckets == {bucket_of(150): 1, bucket_of(250): 1}  # inbound not in the histogram
    assert rows["1.2.3.4"][0][:9] == [0, 0, 0, 0, 0, 0, 0, 0, NOT_QUEUED]


def test_histogram_beyond_three_buckets_goes_to_the_batch_dict() -> None:
    recorder = Recorder()
    for latency in (10, 10, 500, 500, 500, 0.2, 10**9, 10**9, 0.5):
        recorder.record_success("a.example", latency, "SMTP")
    assert dict(recorder._histogram) == {bucket_of(10**9): 2}  # only the fourth bucket
    row, buckets = merged(recorder)["a.example"]
    assert row[SUCCESS_SMTP] == 9
    assert buckets == {bucket_of(10): 2, bucket_of(500): 3, 0: 2, 100: 2}


@pytest.mark.parametrize("transport", ["", "FTP", "http ", "\u017fmtp", None, 3, "HTTPX"])
def test_failure_with_an_unknown_transport_records_nothing(transport: Any) -> None:
    recorder = Recorder()
    with pytest.raises(InvalidTransportError):
        recorder.record_failure("a.example", transport)
    assert take_batch(recorder) is None


@pytest.mark.parametrize("transport", ["FTP", "smtps", None])
def test_success_with_an_unknown_transport_records_nothing(transport: Any) -> None:
    recorder = Recorder()
    with pytest.raises(InvalidTransportError):
        recorder.record_success("a.example", 5, transport)
    assert take_batch(recorder) is None


@pytest.mark.parametrize(
    "latency", [-1, -0.001, math.nan, math.inf, -math.inf, "12", None, 10**13, [1]]
)
def test_bad_latencies_raise_value_error_and_record_nothing(latency: Any) -> None:
    recorder = Recorder()
    with pytest.raises(ValueError):
        recorder.record_success("a.example", latency, "HTTP")
    assert take_batch(recorder) is None


@pytest.mark.parametrize("domain", ["", "   ", "a..b", "-a.example", "a b.example", "x" * 300])
def test_invalid_domains_raise_and_record_nothing(domain: str) -> None:
    recorder = Recorder()
    for call in (
        lambda: recorder.record_success(domain, 1, "HTTP"),
        lambda: recorder.record_failure(domain, "SMTP"),
        lambda: recorder.touch(domain),
        lambda: recorder.increment_queue(domain),
        lambda: recorder.decrement_queue(domain),
    ):
        with pytest.raises(InvalidDomainError):
            call()
    assert take_batch(recorder) is None
    assert inflight_snapshot(recorder) == {}


def test_non_string_domains_raise_invalid_domain() -> None:
    recorder = Recorder()
    for domain in ([1], {"a": 1}, None, 42):
        with pytest.raises(InvalidDomainError):
            recorder.record_success(domain, 1, "HTTP")  # type: ignore[arg-type]
        with pytest.raises(InvalidDomainError):
            recorder.increment_queue(domain)  # type: ignore[arg-type]
    assert take_batch(recorder) is None


def test_the_lock_is_released_after_an_error() -> None:
    recorder = Recorder()
    with pytest.raises(InvalidDomainError):
        recorder.record_failure("bad domain", "HTTP")
    recorder.record_failure("good.example", "HTTP")  # would dead-lock otherwise
    assert "good.example" in merged(recorder)


def test_float_latencies_are_summed_exactly_within_a_batch() -> None:
    recorder = Recorder()
    recorder.record_success("a.example", 0.25, "HTTP")
    recorder.record_success("a.example", 0.5, "HTTP")
    recorder.record_success("a.example", True, "HTTP")  # type: ignore[arg-type]
    assert merged(recorder)["a.example"][0][LATENCY] == 1.75


def test_many_threads_record_exact_totals() -> None:
    recorder = Recorder()
    threads = 8
    per_thread = 5_000
    swapped: list[dict[str, tuple[list[Any], dict[int, int]]]] = []
    stop = threading.Event()

    def swapper() -> None:  # swap concurrently, like the pusher does
        while not stop.is_set():
            swapped.append(merged(recorder))

    def work(index: int) -> None:
        for i in range(per_thread):
            domain = f"d{i % 50}.example"
            recorder.record_success(domain, 100, "HTTPS")
            recorder.record_failure(domain, "SMTP")
            recorder.increment_queue(domain)

    swapping = threading.Thread(target=swapper)
    swapping.start()
    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    stop.set()
    swapping.join()
    swapped.append(merged(recorder))
    successes = sum(row[SUCCESS_HTTPS] for part in swapped for row, _b in part.values())
    latency = sum(row[LATENCY] for part in swapped for row, _b in part.values())
    histogram = sum(sum(b.values()) for part in swapped for _row, b in part.values())
    assert successes == threads * per_thread
    assert latency == 100 * threads * per_thread
    assert histogram == threads * per_thread
    assert sum(inflight_snapshot(recorder).values()) == threads * per_thread


def test_release_inflight_sets_every_count_to_zero() -> None:
    recorder = Recorder()
    recorder.increment_queue("a.example")
    recorder.increment_queue("b.example")
    merged(recorder)
    assert release_inflight(recorder) == 2
    rows = merged(recorder)
    assert {name: row[QUEUED] for name, (row, _b) in rows.items()} == {
        "a.example": 0,
        "b.example": 0,
    }
    assert inflight_snapshot(recorder) == {}


def test_the_hot_path_row_literals_are_the_named_slots() -> None:
    """record_success indexes rows by literals (a constant costs a lookup per use): pin them
    to the named slots, so a layout change fails here instead of miscounting."""
    import ast
    import inspect
    import textwrap

    from fedtrack_redis import batch

    named = {
        6: batch.INBOUND,
        7: batch.LATENCY,
        9: batch.ROW_ID,
        10: batch.FIRST_BUCKET,
        11: batch.FIRST_COUNT,
        12: batch.SECOND_BUCKET,
        13: batch.SECOND_COUNT,
        14: batch.HEALTH,
        15: batch.THIRD_BUCKET,
        16: batch.THIRD_COUNT,
    }
    assert all(literal == slot for literal, slot in named.items())
    tree = ast.parse(textwrap.dedent(inspect.getsource(batch.Recorder.record_success)))
    used = {
        node.slice.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id == "row"
        and isinstance(node.slice, ast.Constant)
    }
    assert used and used <= set(named)
    fresh = batch._new_row(batch.NOT_QUEUED, {})
    assert len(fresh) == batch.THIRD_COUNT + 1
    assert fresh[batch.QUEUED] == batch.NOT_QUEUED
    assert all(fresh[bucket] == -1 for bucket, _count in batch.INLINE_BUCKETS)


def test_the_health_slot_keeps_the_order_of_outbound_outcomes() -> None:
    from fedtrack_redis import batch

    recorder = batch.Recorder()
    recorder.record_failure("a.example", "SMTP")
    recorder.record_success("a.example", 5, "SMTP")
    recorder.record_failure("a.example", "HTTP")
    recorder.record_failure("a.example", "HTTP", permanent=True)  # neither counts nor resets
    recorder.record_success("a.example", 5)  # inbound: nothing for health
    recorder.record_failure("b.example", "HTTPS")
    recorder.record_failure("b.example", "HTTPS")
    taken = batch.take_batch(recorder)
    assert taken is not None
    slots = {name: row[batch.HEALTH] for name, row in taken.rows.items()}
    assert {n: batch.outcome_text(v) for n, v in slots.items()} == {
        "a.example": "s1",
        "b.example": "2",
    }
    assert batch.merge_outcomes(slots["b.example"], slots["a.example"]) == slots["a.example"]
    assert batch.outcome_text(batch.merge_outcomes(slots["a.example"], slots["b.example"])) == "s3"
    assert batch.outcome_text(0) == ""
