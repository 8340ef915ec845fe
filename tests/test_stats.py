"""ServerStat and the log-scale latency histogram (unit)."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from fedtrack_redis.batch import latency_bucket
from fedtrack_redis.stats import (
    JSON_FIELDS,
    MAX_BUCKET,
    RELATIVE_ERROR,
    ServerStat,
    bucket_midpoint,
    bucket_of,
    histogram_of,
    percentile,
)

TOP = 2 ** ((MAX_BUCKET - 1) / 4)  # bucket 100 starts here and holds everything longer


def exact_percentile(values: list[float], p: int) -> float:
    """Nearest-rank percentile: the ceil(p/100·n)-th smallest value."""
    ordered = sorted(values)
    rank = math.ceil(p * len(ordered) / 100)
    return ordered[rank - 1]


def histogram(values: list[float]) -> dict[int, int]:
    buckets: dict[int, int] = {}
    for value in values:
        bucket = bucket_of(value)
        buckets[bucket] = buckets.get(bucket, 0) + 1
    return buckets


def test_bucket_boundaries_follow_the_documented_rule() -> None:
    assert bucket_of(0) == 0
    assert bucket_of(0.999) == 0
    assert bucket_of(1) == 1  # [2^0, 2^(1/4))
    assert bucket_of(1.18) == 1
    assert bucket_of(1.19) == 2  # 2^(1/4) ≈ 1.1892
    assert bucket_of(2) == 5  # [2^1, 2^(5/4))
    assert bucket_of(1000) == int(4 * math.log2(1000)) + 1
    assert bucket_of(TOP * 1.01) == MAX_BUCKET
    assert bucket_of(1e15) == MAX_BUCKET


def test_hot_path_buckets_match_the_reference() -> None:
    for value in [*range(5000), 0.5, 1.5, 4095.9, 4096.0, 123456.7, 10**9]:
        assert latency_bucket(value)[1] == bucket_of(value), value


def test_each_bucket_midpoint_is_within_the_bound_of_its_whole_range() -> None:
    for bucket in range(1, MAX_BUCKET):
        low, high = 2 ** ((bucket - 1) / 4), 2 ** (bucket / 4)
        middle = bucket_midpoint(bucket)
        assert low < middle < high
        assert middle / low - 1 <= RELATIVE_ERROR + 1e-12
        assert 1 - middle / high <= RELATIVE_ERROR + 1e-12
    assert bucket_midpoint(0) == 0.5
    assert math.isclose(RELATIVE_ERROR, 2 ** (1 / 8) - 1)


latencies = st.lists(
    st.floats(min_value=1.0, max_value=TOP * 0.999, allow_nan=False), min_size=1, max_size=300
)


@settings(max_examples=300, deadline=None)
@given(values=latencies, p=st.sampled_from([1, 25, 50, 75, 90, 95, 99, 100]))
def test_percentiles_are_within_the_error_bound_of_the_exact_ones(
    values: list[float], p: int
) -> None:
    exact = exact_percentile(values, p)
    estimate = percentile(histogram(values), p)
    assert abs(estimate - exact) / exact <= RELATIVE_ERROR + 1e-9


def test_percentiles_of_random_lognormal_latencies() -> None:
    rng = random.Random(7)
    for _ in range(50):
        values = [rng.lognormvariate(5, 1.5) + 1 for _ in range(rng.randint(1, 2000))]
        buckets = histogram(values)
        for p in (50, 95, 99):
            exact = exact_percentile(values, p)
            assert abs(percentile(buckets, p) - exact) / exact <= RELATIVE_ERROR + 1e-9


def test_percentile_of_an_empty_histogram_is_zero() -> None:
    assert percentile({}, 50) == 0.0
    assert percentile({3: 0}, 99) == 0.0


def test_server_stat_from_a_hash_has_the_json_fields_and_summaries() -> None:
    fields = {  # the domain hash's names (docs/redis-keys.md)
        "q": "2",
        "fs": "1",
        "ss": "2",
        "d": "3",
        "i": "1",
        "l": "500",
        "a": "1700000000",
        "h29": "1",
        "h32": "1",
        "hx": "junk",
        "B": "5666666|0,0,0,0,1,0,1,0,9",
        "b5666666": "1",
        "successful_deliveries": "99",  # a JSON name is no field of the hash
    }
    stat = ServerStat.from_hash("example.com", fields)
    assert (stat.queued_messages, stat.failed_https, stat.success_https) == (2, 1, 2)
    assert (stat.inbound_deliveries, stat.total_latency_ms) == (1, 500)
    assert stat.successful_deliveries == 3
    assert stat.mean_latency_ms == 500 / 3
    assert stat.p50_ms == bucket_midpoint(29)
    assert stat.p99_ms == bucket_midpoint(32)
    data = stat.to_dict()
    assert tuple(data)[: len(JSON_FIELDS)] == JSON_FIELDS
    assert set(data) == {*JSON_FIELDS, "mean_latency_ms", "p50_ms", "p95_ms", "p99_ms"}
    assert data["failed_smtp"] == 0
    assert data["last_active"] == 1700000000


def test_mean_latency_is_zero_without_successes() -> None:
    stat = ServerStat.from_hash("a.example", {"fh": "4"})
    assert stat.mean_latency_ms == 0.0
    assert stat.p95_ms == 0.0


def test_histogram_of_ignores_other_fields() -> None:
    assert histogram_of({"h0": "3", "h100": "1", "hello": "x", "h": "1", "last_active": "5"}) == {
        0: 3,
        100: 1,
    }
