"""api/limiter.py: wrong tokens counted per address in a sliding window, bounded memory,
thread-safe (unit, on a clock the test moves)."""

from __future__ import annotations

import threading

import pytest

from fedtrack_redis.api.limiter import FailureLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_blocks_after_the_limit_until_the_oldest_failure_leaves_the_window(clock: Clock) -> None:
    limiter = FailureLimiter(limit=10, window=60, clock=clock)
    for _ in range(9):
        limiter.failed("192.0.2.1")
        clock.now += 1
    assert limiter.retry_after("192.0.2.1") == 0  # 9 failures: still allowed
    limiter.failed("192.0.2.1")  # the 10th, 9 s after the first
    assert limiter.retry_after("192.0.2.1") == 51
    clock.now += 20.5
    assert limiter.retry_after("192.0.2.1") == 31  # rounded up
    clock.now += 30.4
    assert limiter.retry_after("192.0.2.1") == 1
    clock.now += 0.1  # the first failure is now 60 s old: 9 remain in the window
    assert limiter.retry_after("192.0.2.1") == 0
    limiter.failed("192.0.2.1")  # one more wrong token: blocked until the second leaves
    assert limiter.retry_after("192.0.2.1") == 1


def test_failures_older_than_the_window_do_not_count(clock: Clock) -> None:
    limiter = FailureLimiter(limit=3, window=10, clock=clock)
    for _ in range(20):
        limiter.failed("192.0.2.1")
        clock.now += 6  # never 3 within 10 s
        assert limiter.retry_after("192.0.2.1") == 0


def test_addresses_are_counted_apart(clock: Clock) -> None:
    limiter = FailureLimiter(limit=2, window=60, clock=clock)
    limiter.failed("192.0.2.1")
    limiter.failed("192.0.2.1")
    limiter.failed("2001:db8::1")
    assert limiter.retry_after("192.0.2.1") == 60
    assert limiter.retry_after("2001:db8::1") == 0
    assert limiter.retry_after("198.51.100.9") == 0


def test_memory_is_bounded_and_the_stalest_address_goes_first(clock: Clock) -> None:
    limiter = FailureLimiter(limit=2, window=60, max_addresses=3, clock=clock)
    for address in ("a", "b", "c"):
        limiter.failed(address)
        clock.now += 1
    limiter.failed("a")  # a failed last: b is now the stalest
    limiter.failed("d")
    assert limiter.tracked() == 3
    assert limiter.retry_after("a") > 0  # a's two failures were kept
    limiter.failed("b")  # b was forgotten: this is its first failure again
    assert limiter.retry_after("b") == 0
    for index in range(1000):
        limiter.failed(f"198.51.100.{index}")
    assert limiter.tracked() == 3


def test_expired_addresses_are_forgotten(clock: Clock) -> None:
    limiter = FailureLimiter(limit=5, window=10, clock=clock)
    limiter.failed("192.0.2.1")
    clock.now += 11
    assert limiter.retry_after("192.0.2.1") == 0
    assert limiter.tracked() == 0


def test_concurrent_failures_are_all_counted() -> None:
    limiter = FailureLimiter(limit=800, window=600)
    start = threading.Barrier(8)

    def fail(count: int) -> None:
        start.wait(10)
        for _ in range(count):
            limiter.failed("192.0.2.1")
            limiter.failed(f"203.0.113.{threading.get_ident() % 250}")

    threads = [threading.Thread(target=fail, args=(99,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for _ in range(7):
        limiter.failed("192.0.2.1")
    assert limiter.retry_after("192.0.2.1") == 0  # 799: none was lost, none counted twice
    limiter.failed("192.0.2.1")
    assert limiter.retry_after("192.0.2.1") > 0  # the 800th blocks


def test_bad_parameters() -> None:
    for kwargs in ({"limit": 0}, {"window": 0}, {"max_addresses": 0}):
        with pytest.raises(ValueError, match="positive"):
            FailureLimiter(**kwargs)  # type: ignore[arg-type]
