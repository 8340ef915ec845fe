"""Which domains stand out: failure ratios, slow deliveries, queued backlog.

Used by ``fedtrack status``, the API and the dashboard. A domain is judged against the
cluster as a whole (`Baseline`: the cluster's failure ratio and p95 latency, from the
per-shard totals), so judging it needs no other domain: `find_anomalies` takes the
candidates of the top lists push.lua keeps (`indexed_anomalies`), and gives the same
answer as a look at every domain would (`tests/test_reads.py` compares the two).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .engine import RedisEngine
from .keys import NamespaceKeys, ShardKeys
from .reads import read_hashes, top, totals
from .stats import ServerStat, percentile

#: Attempts below which a failure ratio is not judged (too little evidence).
MIN_ATTEMPTS = 10
#: A failure ratio at or above this is always an anomaly.
FAILURE_RATIO_ALERT = 0.5
#: A ratio at or above this and `FAILURE_FACTOR` times the cluster's stands out too.
FAILURE_RATIO_FLOOR = 0.2
FAILURE_FACTOR = 3.0
#: A p95 latency this many times the cluster's p95 (and at least 1 s) stands out.
LATENCY_FACTOR = 3.0
LATENCY_FLOOR_MS = 1000.0
#: In-flight messages to one domain at or above this are a backlog.
BACKLOG_ALERT = 100
#: Candidates taken from each shard's top list of each kind.
CANDIDATES = 20
#: The least top-list score a candidate needs to be an anomaly of that list's kind, so
#: that `indexed_anomalies` reads no hash that cannot be one: a failure ratio is judged
#: from `MIN_ATTEMPTS` attempts at the lowest ratio judged, so it takes that many failures
#: (2); a backlog is `BACKLOG_ALERT` messages. A mean latency (the latency list's score)
#: bounds no p95, so every latency candidate is read.
LEAST_SCORE = {
    "failures": math.ceil(MIN_ATTEMPTS * min(FAILURE_RATIO_ALERT, FAILURE_RATIO_FLOOR) - 1e-9),
    "latency": 0.0,
    "queued": float(BACKLOG_ALERT),
}


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


@dataclass(frozen=True)
class Baseline:
    """The cluster as a whole: its failure ratio and its outbound p95 latency."""

    failure_ratio: float = 0.0
    p95_ms: float = 0.0

    @classmethod
    def from_totals(cls, sums: Mapping[str, int]) -> Baseline:
        failed = sum(sums.get(f"failed_{t}", 0) for t in ("http", "https", "smtp"))
        succeeded = sum(sums.get(f"success_{t}", 0) for t in ("http", "https", "smtp"))
        attempts = failed + succeeded
        buckets = {int(k[1:]): v for k, v in sums.items() if k[:1] == "h" and k[1:].isdigit()}
        return cls(failed / attempts if attempts else 0.0, percentile(buckets, 95))


def find_anomalies(stats: Iterable[ServerStat], baseline: Baseline) -> list[Anomaly]:
    """The domains among `stats` whose failure ratio, p95 latency or queue stands out
    against `baseline`, worst first per kind (each domain once per kind)."""
    found: dict[tuple[str, str], Anomaly] = {}
    for stat in stats:
        attempts = failures(stat) + outbound_successes(stat)
        ratio = failure_ratio(stat)
        if attempts >= MIN_ATTEMPTS and (
            ratio >= FAILURE_RATIO_ALERT
            or (ratio >= FAILURE_RATIO_FLOOR and ratio >= FAILURE_FACTOR * baseline.failure_ratio)
        ):
            found[(stat.domain, "failures")] = Anomaly(
                stat.domain,
                "failures",
                f"{ratio:.0%} of {attempts} attempts failed (cluster {baseline.failure_ratio:.0%})",
                ratio,
            )
        limit = max(LATENCY_FLOOR_MS, LATENCY_FACTOR * baseline.p95_ms)
        if outbound_successes(stat) >= MIN_ATTEMPTS and stat.p95_ms >= limit:
            found[(stat.domain, "latency")] = Anomaly(
                stat.domain,
                "latency",
                f"p95 {stat.p95_ms:.0f} ms (cluster {baseline.p95_ms:.0f} ms)",
                stat.p95_ms,
            )
        if stat.queued_messages >= BACKLOG_ALERT:
            found[(stat.domain, "backlog")] = Anomaly(
                stat.domain,
                "backlog",
                f"{stat.queued_messages} messages queued",
                float(stat.queued_messages),
            )
    order = {"failures": 0, "latency": 1, "backlog": 2}
    return sorted(found.values(), key=lambda a: (order[a.kind], -a.value, a.domain))


def indexed_anomalies(
    engine: RedisEngine, keys: NamespaceKeys, sums: Mapping[str, int] | None = None
) -> list[Anomaly]:
    """`find_anomalies` over the candidates of the top lists (those scored at least
    `LEAST_SCORE`): a bounded read, the same at a million domains as at a hundred."""
    baseline = Baseline.from_totals(sums if sums is not None else totals(engine, keys))
    candidates: dict[str, tuple[str, ShardKeys]] = {}
    everyone = CANDIDATES * len(keys.shards)
    for order, least in LEAST_SCORE.items():
        for domain, score, shard in top(engine, keys, order, everyone, CANDIDATES):
            if score >= least:
                candidates.setdefault(domain, (domain, shard))
    stats = read_hashes(engine, list(candidates.values()))
    return find_anomalies(stats, baseline)
