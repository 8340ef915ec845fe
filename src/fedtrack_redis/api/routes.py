"""Routes of the admin API under ``/api/federation`` (all need a bearer token; the
changing ones a token of full scope)."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query

from ..anomalies import indexed_anomalies
from ..check import explain_federation_policy
from ..domain import normalize_domain
from ..errors import InvalidPolicyError
from ..qshape import DEFAULT_TOP, MAX_TOP
from ..stats import ServerStat
from ..store.search import name_filter
from . import models
from .deps import ERRORS, Actor, Caller, LocalDomain, Policy, Stats
from .rule_routes import rule_model

router = APIRouter(prefix="/api/federation", responses=ERRORS)

#: The orders of a page: the indexes' (reads.py), or with a name filter the database's
#: (store.search.ORDERS).
SortName = Literal["activity", "failures", "latency", "queued", "domain"]


@router.get("/whoami", tags=["auth"])
def whoami(caller: Caller, actor: Actor) -> models.Caller:
    """The token this request used, its scope, and the actor the audit log records."""
    return models.Caller(token=caller.name, scope=caller.scope, actor=actor)


@router.get("/settings", tags=["policy"])
def get_settings(policy: Policy) -> models.Settings:
    """The federation switch and the cluster policy."""
    return models.Settings(enabled=policy.get_enabled(), policy=policy.get_policy())


@router.put("/settings", tags=["policy"])
def put_settings(body: models.SettingsUpdate, policy: Policy, actor: Actor) -> models.Settings:
    """Change the policy, the switch, or both (both validated before anything changes)."""
    if body.policy is None and body.enabled is None:
        raise HTTPException(400, "send `policy`, `enabled`, or both")
    if body.policy is not None and body.policy.strip().upper() not in ("ACCEPT", "REJECT"):
        raise InvalidPolicyError(body.policy)
    if body.policy is not None:
        policy.set_policy(body.policy, actor=actor)
    if body.enabled is not None:
        policy.set_enabled(body.enabled, actor=actor)
    return get_settings(policy)


@router.get("/check/{domain}", tags=["policy"])
def check(domain: str, policy: Policy, local: LocalDomain) -> models.Decision:
    """The decision `check_federation_policy` makes for DOMAIN, with its reason: the
    deciding rule and every rule that matches, most specific first."""
    decision = explain_federation_policy(domain, policy, local_domain=local)
    now = time.time()
    return models.Decision(
        domain=decision.domain,
        allowed=decision.allowed,
        policy=decision.policy,
        reason=decision.reason,
        rule=decision.rule,
        matched=list(decision.matched),
        rules=[rule_model(rule, now) for rule in decision.matched_rules],
    )


@router.get("/servers", tags=["stats"], responses={422: {"description": "Page too deep"}})
def list_servers(
    stats: Stats,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    sort: SortName = "activity",
    q: Annotated[
        str,
        Query(
            max_length=253,
            description="A prefix of the name (`mail.`), or a domain whose subdomains to"
            " list too (`example.org`); a-z 0-9 . - :.",
        ),
    ] = "",
) -> models.ServerList:
    """Per-domain stats, cluster-wide, sorted and paginated from indexes (never a scan of
    every domain). Sorting by failures, latency or queued reaches the top 1,000; a name
    filter (or sorting by domain) reads the names from the database's copy, which the
    flusher keeps within one flush interval: the database counts, sorts and pages the
    matches (by its copy's values), except a filter matching more than 10,000, paged from
    its order's index; the page's stats are read live."""
    if q.strip() or sort == "domain":
        text = name_filter(q) if q.strip() else ""
        names, total = stats.search(text, limit, offset, order=sort)
        return models.ServerList(servers=[_model(s) for s in stats.named(names)], total=total)
    try:
        page, total = stats.page(sort, limit, offset)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return models.ServerList(servers=[_model(s) for s in page], total=total)


@router.get("/servers/{domain}", tags=["stats"], responses={404: {"description": "Unknown"}})
def get_server(domain: str, stats: Stats) -> models.ServerStatModel:
    """One domain's stats (any spelling of its name)."""
    stat = stats.get(domain)
    if stat is None:
        raise HTTPException(404, f"no stats for {normalize_domain(domain)}")
    return _model(stat)


@router.get("/status", tags=["stats"])
def status(stats: Stats) -> models.Status:
    """Cluster totals and the domains that stand out, from the per-shard totals and top
    lists: the same cost at a million domains as at a hundred."""
    sums = stats.totals()
    return models.Status(
        domains=sums["domains"],
        queued_messages=sums["queued_messages"],
        failures=sums["failed_http"] + sums["failed_https"] + sums["failed_smtp"],
        successful_deliveries=sums["successful_deliveries"],
        anomalies=[
            models.AnomalyModel(domain=a.domain, kind=a.kind, detail=a.detail, value=a.value)
            for a in indexed_anomalies(stats.engine, stats.keys, sums)
        ],
    )


@router.get("/qshape", tags=["stats"])
def qshape(
    stats: Stats, top: Annotated[int, Query(ge=1, le=MAX_TOP)] = DEFAULT_TOP
) -> models.QShape:
    """In-flight messages per domain by age (Postfix's qshape, cluster-wide): the `top`
    domains by T from the per-shard index, and the totals; at most one push interval
    stale, the same cost at a million domains as at a hundred."""
    return models.QShape.model_validate(stats.qshape(top).to_dict())


@router.get("/engine", tags=["stats"])
def engine(stats: Stats) -> models.EngineModel:
    """The Redis engine and its nodes: every primary with its replicas, their state and
    lag, and whether each primary has the replicas pushes wait for (the dashboard's
    header). One INFO per primary."""
    from ..cluster_status import describe

    plumbing = describe(stats.engine, stats.keys)
    plumbing.pop("database", None)
    return models.EngineModel.model_validate(plumbing)


def _model(stat: ServerStat) -> models.ServerStatModel:
    return models.ServerStatModel.model_validate(stat.to_dict())
