"""Process-local Prometheus metrics of the library (default registry, names ``fedtrack_*``).

Workers can expose them with ``prometheus_client.start_http_server``; the admin API
serves them beside the cluster-wide figures it reads from Redis.
"""

from __future__ import annotations

import weakref
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram

PUSH_SECONDS = Histogram(
    "fedtrack_push_seconds",
    "Duration of one push round (one pipelined push.lua call per shard) as the worker saw it.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
PUSH_RETRIES = Counter(
    "fedtrack_push_retries_total", "Push chunks sent again after a failure or a refusal."
)
FLUSH_SECONDS = Histogram(
    "fedtrack_flush_seconds",
    "Duration of one flush (read changed domains, write them to the database).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
FLUSH_ROWS = Counter("fedtrack_flush_rows_total", "Rows written to the database by this flusher.")
THREAD_ERRORS = Counter(
    "fedtrack_thread_errors",
    "Unexpected errors met by a background loop (it logs, backs off and goes on).",
    ["thread"],
)
PUSH_REFUSED = Counter(
    "fedtrack_push_refused",
    "Push chunks refused by Redis, by reason (unhydrated, database_mismatch, malformed,"
    " unknown_status, unreplicated).",
    ["reason"],
)
PUSH_PENDING = Gauge(
    "fedtrack_push_pending_domains",
    "Domains recorded by this process and not yet acknowledged by Redis (with"
    " wait_replicas, not yet confirmed by enough replicas); bounded by the domains touched.",
)
DATABASE_MISMATCH = Gauge(
    "fedtrack_database_mismatch",
    "1 while a flusher of this process refuses to work: its database is not the namespace's.",
)
PUSH_LATE = Counter(
    "fedtrack_push_thread_late_seconds",
    "Seconds the push thread woke up late, summed over its wake-ups later than 0.5 s (or one"
    " push interval): the process starves it of CPU or of the interpreter lock"
    " (docs/tracker.md, 'Threads').",
)
LEADER = Gauge("fedtrack_leader", "1 while a flusher of this process holds the leader lock.")
PROPAGATION_SECONDS = Histogram(
    "fedtrack_policy_propagation_seconds",
    "From a policy change being published to this process applying it (wall clocks).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0),
)


class _Leadership(Protocol):
    @property
    def is_leader(self) -> bool: ...


_elections: weakref.WeakSet[_Leadership] = weakref.WeakSet()
LEADER.set_function(lambda: float(any(e.is_leader for e in list(_elections))))


def track_leadership(election: _Leadership) -> None:
    """Count `election` in ``fedtrack_leader`` for as long as it lives."""
    _elections.add(election)


class _Refusing(Protocol):
    @property
    def mismatch(self) -> str | None: ...


_flushers: weakref.WeakSet[_Refusing] = weakref.WeakSet()
DATABASE_MISMATCH.set_function(lambda: float(any(f.mismatch for f in list(_flushers))))


def track_mismatch(flusher: _Refusing) -> None:
    """Count `flusher` in ``fedtrack_database_mismatch`` for as long as it lives."""
    _flushers.add(flusher)
