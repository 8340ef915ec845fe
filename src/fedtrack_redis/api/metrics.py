"""Cluster-wide figures for ``/metrics``, read from Redis at scrape time.

Totals come from the per-shard totals hashes, so a scrape costs the same at a million
domains as at a hundred; per-domain series are limited to the `TOP_DOMAINS` most recently
active domains to bound the number of series.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..errors import FedtrackError
from ..health.admin import HealthAdmin
from ..policy.store import PolicyStore
from ..reads import StatsReader
from ..stats import ServerStat

TOP_DOMAINS = 20
#: Seconds a scrape's reading of Redis is reused (several scrapers, one read).
CACHE_SECONDS = 2.0

EVENT_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("failed_http", "failure", "HTTP"),
    ("failed_https", "failure", "HTTPS"),
    ("failed_smtp", "failure", "SMTP"),
    ("success_http", "success", "HTTP"),
    ("success_https", "success", "HTTPS"),
    ("success_smtp", "success", "SMTP"),
    ("inbound_deliveries", "inbound", ""),
)


class ClusterCollector(Collector):
    """Reads the namespace's stats and policy when Prometheus scrapes."""

    def __init__(self, policy: PolicyStore, stats: StatsReader) -> None:
        self._policy = policy
        self._stats = stats
        self._cached: tuple[float, dict[str, int], list[ServerStat]] | None = None

    def _read(self) -> tuple[dict[str, int], list[ServerStat]]:
        """The cluster's totals and the most recently active domains: a bounded read."""
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < CACHE_SECONDS:
            return self._cached[1], self._cached[2]
        sums = self._stats.totals()
        top, _total = self._stats.page("activity", TOP_DOMAINS)
        self._cached = (now, sums, top)
        return sums, top

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        rules = GaugeMetricFamily("fedtrack_rules", "Federation rules in force.")
        rules.add_metric([], self._policy.count())
        yield rules
        reject = GaugeMetricFamily(
            "fedtrack_policy_reject", "1 when the policy is REJECT (rules are an allowlist)."
        )
        reject.add_metric([], 1 if self._policy.get_policy() == "REJECT" else 0)
        yield reject
        enabled = GaugeMetricFamily("fedtrack_federation_enabled", "The federation switch.")
        enabled.add_metric([], 1 if self._policy.get_enabled() else 0)
        yield enabled
        try:
            sums, top = self._read()
        except FedtrackError:
            up = GaugeMetricFamily("fedtrack_redis_up", "1 when Redis answered this scrape.")
            up.add_metric([], 0)
            yield up
            return
        up = GaugeMetricFamily("fedtrack_redis_up", "1 when Redis answered this scrape.")
        up.add_metric([], 1)
        yield up
        events = CounterMetricFamily(
            "fedtrack_events",
            "Delivery events recorded cluster-wide.",
            labels=["field", "transport"],
        )
        for field, kind, transport in EVENT_FIELDS:
            events.add_metric([kind, transport], sums.get(field, 0))
        yield events
        latency = CounterMetricFamily(
            "fedtrack_latency_ms", "Sum of delivery latencies (ms), cluster-wide."
        )
        latency.add_metric([], sums.get("total_latency_ms", 0))
        yield latency
        domains = GaugeMetricFamily(
            "fedtrack_domains",
            "Domains tracked in the namespace, per health state.",
            labels=["state"],
        )
        try:
            per_state = HealthAdmin(self._stats.engine, self._stats.keys).counts(sums["domains"])
        except redis.RedisError:
            per_state = {"healthy": sums["domains"]}
        for state, count in per_state.items():
            domains.add_metric([state], count)
        yield domains
        queued = GaugeMetricFamily("fedtrack_queued_messages", "Messages in flight, cluster-wide.")
        queued.add_metric([], sums.get("queued_messages", 0))
        yield queued
        per_domain = CounterMetricFamily(
            "fedtrack_domain_events",
            f"Delivery events of the {TOP_DOMAINS} most recently active domains.",
            labels=["domain", "field", "transport"],
        )
        for stat in top:
            for field, kind, transport in EVENT_FIELDS:
                per_domain.add_metric([stat.domain, kind, transport], getattr(stat, field))
        yield per_domain
        p95 = GaugeMetricFamily(
            "fedtrack_domain_p95_latency_ms",
            f"p95 outbound latency of the {TOP_DOMAINS} most recently active domains.",
            labels=["domain"],
        )
        for stat in top:
            p95.add_metric([stat.domain], stat.p95_ms)
        yield p95
