"""Wrong-token limiter of the admin API (docs/safety.md), in process memory.

After `limit` wrong tokens within `window` seconds from one peer address, every request
from that address that carries a token is refused (429) until the oldest of those
failures leaves the window, even with the right token. Requests without a token are not
counted. The key is the TCP peer address: behind a reverse proxy every client shares the
proxy's address, so the proxy should limit on its own (or the API listen on loopback).

Memory is bounded: at most `limit` timestamps per address and `max_addresses` addresses;
when full, the address whose last failure is oldest is forgotten first.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

LIMIT = 10
WINDOW = 60.0
MAX_ADDRESSES = 10_000


class FailureLimiter:
    """Counts wrong tokens per peer address in a sliding window (thread-safe)."""

    def __init__(
        self,
        *,
        limit: int = LIMIT,
        window: float = WINDOW,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window <= 0 or max_addresses < 1:
            raise ValueError("limit, window and max_addresses must be positive")
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str) -> int:
        """Seconds (rounded up, at least 1) until `address` may try again; 0 when not blocked."""
        with self._lock:
            now = self._clock()
            times = self._recent(address, now)
            if times is None or len(times) < self.limit:
                return 0
            return max(1, math.ceil(times[0] + self.window - now))

    def failed(self, address: str) -> None:
        """Count one wrong token from `address`."""
        with self._lock:
            now = self._clock()
            times = self._recent(address, now)
            if times is None:
                while len(self._failures) >= self.max_addresses:
                    self._failures.popitem(last=False)
                times = self._failures[address] = deque(maxlen=self.limit)
            times.append(now)
            self._failures.move_to_end(address)

    def tracked(self) -> int:
        """How many addresses are remembered (for tests and metrics)."""
        with self._lock:
            return len(self._failures)

    def _recent(self, address: str, now: float) -> deque[float] | None:
        times = self._failures.get(address)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        return times
