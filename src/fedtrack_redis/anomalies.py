"""Which domains stand out: failure ratios, slow deliveries, queued backlog.

Used by ``fedtrack status``, the API and the dashboard. Pure functions over `ServerStat`s.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from .stats import ServerStat

#: Attempts below which a failure ratio is not judged (too little evidence).
MIN_ATTEMPTS = 10
#: A failure ratio at or above this is always an anomaly.
FAILURE_RATIO_ALERT = 0.5
#: A p95 latency this many times the cluster median p95 (and at least 1 s) stands out.
LATENCY_FACTOR = 3.0
LATENCY_FLOOR_MS = 1000.0
#: In-flight messages to one domain at or above this are a backlog.
BACKLOG_ALERT = 100


def failures(stat: ServerStat) -> int:
    return stat.failed_http + stat.failed_https + stat.failed_smtp


def outbound_successes(stat: ServerStat) -> int:
    return stat.success_http + stat.success_https + stat.success_smtp


def failure_ratio(stat: ServerStat) -> float:
    attempts = failures(stat) + outbound_successes(stat)
    return failures(stat) / attempts if attempts else 0.0


@dataclass(frozen=True)
class Anomaly:
    domain: str
    kind: str  # failures | latency | backlog
    detail: str
    value: float


def find_anomalies(stats: Sequence[ServerStat]) -> list[Anomaly]:
    """Domains whose failure ratio, p95 latency or queue stands out, worst first per kind."""
    found: list[Anomaly] = []
    judged = [s for s in stats if failures(s) + outbound_successes(s) >= MIN_ATTEMPTS]
    ratios = [failure_ratio(s) for s in judged]
    typical_ratio = statistics.median(ratios) if ratios else 0.0
    for stat in judged:
        ratio = failure_ratio(stat)
        if ratio >= FAILURE_RATIO_ALERT or (ratio >= 0.2 and ratio >= 3 * typical_ratio):
            found.append(
                Anomaly(
                    stat.domain,
                    "failures",
                    f"{ratio:.0%} of {failures(stat) + outbound_successes(stat)}"
                    f" attempts failed (cluster median {typical_ratio:.0%})",
                    ratio,
                )
            )
    p95s = [s.p95_ms for s in stats if outbound_successes(s) >= MIN_ATTEMPTS]
    typical_p95 = statistics.median(p95s) if p95s else 0.0
    for stat in stats:
        if outbound_successes(stat) < MIN_ATTEMPTS:
            continue
        limit = max(LATENCY_FLOOR_MS, LATENCY_FACTOR * typical_p95)
        if stat.p95_ms >= limit:
            found.append(
                Anomaly(
                    stat.domain,
                    "latency",
                    f"p95 {stat.p95_ms:.0f} ms (cluster median {typical_p95:.0f} ms)",
                    stat.p95_ms,
                )
            )
    for stat in stats:
        if stat.queued_messages >= BACKLOG_ALERT:
            found.append(
                Anomaly(
                    stat.domain,
                    "backlog",
                    f"{stat.queued_messages} messages queued",
                    float(stat.queued_messages),
                )
            )
    order = {"failures": 0, "latency": 1, "backlog": 2}
    found.sort(key=lambda a: (order[a.kind], -a.value, a.domain))
    return found
