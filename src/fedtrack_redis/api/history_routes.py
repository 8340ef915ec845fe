"""History routes of the admin API: the cluster's and one domain's series (docs/history.md)
and the operators' watch list. Every read costs O(buckets), never O(domains)."""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from ..domain import normalize_domain
from ..health.events import domain_changes
from ..history import FIVE, MINUTE, HistoryBucket
from .deps import ERRORS, Policy, Stats

log = logging.getLogger("fedtrack_redis.api")

router = APIRouter(prefix="/api/federation", responses=ERRORS)

Window = Literal["1h", "24h", "7d"]


class Bucket(BaseModel):
    """One bucket: its start (unix seconds, a multiple of the width) and the nine event
    counters summed over it."""

    start: int
    failed_http: int
    failed_https: int
    failed_smtp: int
    success_http: int
    success_https: int
    success_smtp: int
    successful_deliveries: int
    inbound_deliveries: int
    total_latency_ms: int


class HealthMark(BaseModel):
    """A health state change of the domain (unix seconds, Redis time)."""

    at: int
    from_: str = Field(alias="from")
    to: str


class History(BaseModel):
    """A series over one window, oldest bucket first, ending with the current, unfinished
    one; zero-filled."""

    window: Window
    width: int = Field(description="Bucket width in seconds (60 or 300).")
    domain: str | None = Field(None, description="The domain, or null for the cluster.")
    buckets: list[Bucket]
    health: list[HealthMark] | None = Field(
        None,
        description="A domain's series only: its health state changes within the window,"
        " oldest first (the database's copy, which the flusher leader keeps current).",
    )


class Watch(BaseModel):
    """Whether a domain is watched (its history kept whatever its activity)."""

    domain: str
    watched: bool
    changed: bool


class WatchList(BaseModel):
    domains: list[str]


def _history(
    window: Window,
    domain: str | None,
    buckets: list[HistoryBucket],
    health: list[dict[str, Any]] | None = None,
) -> Response:
    """The `History` document, serialized directly: validating 2,016 bucket models would
    cost more than reading them from Redis."""
    width = FIVE if domain is not None or window == "7d" else MINUTE
    body = {
        "window": window,
        "width": width,
        "domain": domain,
        "buckets": [bucket.to_dict() for bucket in buckets],
    }
    if health is not None:
        body["health"] = health
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


@router.get("/history", tags=["history"], response_model=History)
def cluster_history(stats: Stats, window: Window = "1h") -> Response:
    """The cluster's nine event counters per bucket: 1-minute buckets for 1h and 24h,
    5-minute buckets for 7d."""
    return _history(window, None, stats.history(None, window))


@router.get("/servers/{domain}/history", tags=["history"], response_model=History)
def domain_history(domain: str, stats: Stats, policy: Policy, window: Window = "1h") -> Response:
    """One domain's nine event counters per 5-minute bucket; all zero when the domain is
    outside the caps (not among a bucket's 1,000 most active, not held, not watched);
    with the domain's health state changes in the window (empty while the database
    does not answer: the series come from Redis alone)."""
    name = normalize_domain(domain)
    buckets = stats.history(name, window)
    try:
        health = domain_changes(policy.audit_database(), name, buckets[0].start)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("health marks of %s: database unavailable (%s)", name, type(exc).__name__)
        health = []
    return _history(window, name, buckets, health)


@router.get("/watched", tags=["history"])
def watched(stats: Stats) -> WatchList:
    """The domains operators watch."""
    return WatchList(domains=stats.watched())


@router.put("/servers/{domain}/watch", tags=["history"])
def watch(domain: str, stats: Stats) -> Watch:
    """Watch DOMAIN: its history is kept whatever its activity."""
    name = normalize_domain(domain)
    return Watch(domain=name, watched=True, changed=stats.watch(name))


@router.delete("/servers/{domain}/watch", tags=["history"])
def unwatch(domain: str, stats: Stats) -> Watch:
    """Stop watching DOMAIN (its kept buckets age out)."""
    name = normalize_domain(domain)
    return Watch(domain=name, watched=False, changed=stats.unwatch(name))
