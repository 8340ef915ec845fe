"""Delivery health routes under ``/api/federation`` (docs/health.md): the failing domains,
and an operator's reset (audited, like every change made through the API)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from ..health.admin import HealthAdmin
from .deps import ERRORS, Actor, Policy, Stats

router = APIRouter(prefix="/api/federation", responses=ERRORS)

StateName = Literal["healthy", "backoff", "unavailable"]


class DomainHealthModel(BaseModel):
    domain: str
    state: StateName
    consecutive_failures: int = Field(description="Temporary outbound failures in a row.")
    failing_since: float | None = Field(description="Unix seconds of the first of them.")
    next_attempt_at: float | None = Field(description="Unix seconds; None while healthy.")
    failure_periods: int = Field(description="Distinct periods (days) the failures span.")


class HealthList(BaseModel):
    counts: dict[str, int] = Field(description="Domains per state, cluster-wide.")
    domains: list[DomainHealthModel]


class HealthReset(BaseModel):
    domain: str
    previous: StateName | None = Field(description="The state before; None: no record.")
    state: StateName = "healthy"


def _admin(stats: Stats) -> HealthAdmin:
    return HealthAdmin(stats.engine, stats.keys)


@router.get("/health", tags=["health"])
def list_health(
    stats: Stats,
    state: Annotated[StateName | None, Query(description="Only this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> HealthList:
    """Failing domains (held back ones first, by next attempt) and the count per state."""
    admin = _admin(stats)
    found = admin.domains(state, limit)
    tracked = stats.totals().get("domains", 0)
    return HealthList(
        counts=admin.counts(tracked),
        domains=[DomainHealthModel(**h.to_json()) for h in found],  # type: ignore[arg-type]
    )


@router.post("/servers/{domain}/reset", tags=["health"])
def reset_health(domain: str, stats: Stats, policy: Policy, actor: Actor) -> HealthReset:
    """Make `domain` healthy cluster-wide; written to the audit log."""
    previous = _admin(stats).reset(domain, actor=actor, database=policy.audit_database())
    from ..domain import normalize_domain

    return HealthReset(domain=normalize_domain(domain), previous=previous)  # type: ignore[arg-type]
