"""Request and response bodies of the admin API (they make the OpenAPI document)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Settings(BaseModel):
    enabled: bool = Field(description="Cluster-wide federation switch.")
    policy: str = Field(description="ACCEPT (rules block) or REJECT (rules allow).")


class SettingsUpdate(BaseModel):
    enabled: bool | None = Field(default=None, description="Turn federation on or off.")
    policy: str | None = Field(default=None, description="ACCEPT or REJECT, any case.")


Effect = Literal["exception", "block", "allow"]


class Rule(BaseModel):
    domain: str = Field(description="The rule's text (the original's key; same as `text`).")
    text: str = Field(description="Canonical rule text: its form names its kind.")
    kind: str = Field(description="exact, subdomains, glob or network.")
    effect: str = Field(description="exception (blocks in ACCEPT, allows in REJECT), block, allow.")
    reason: str = Field(description="Public reason.")
    private_comment: str
    created_by: str | None
    source: str = Field(description="manual, import, … (where the rule came from).")
    created_at: int = Field(description="Unix seconds when the rule was first added.")
    updated_at: int | None = Field(description="Unix seconds of its last change, if any.")
    expires_at: int | None = Field(description="Unix seconds when it stops matching, if ever.")
    expired: bool = Field(description="Expired: it no longer matches; removed within 10 s.")


class RuleList(BaseModel):
    rules: list[Rule]
    total: int


class DomainsBody(BaseModel):
    domains: list[str] = Field(
        min_length=1, max_length=10_000, description="Rule texts (domains, .domains, globs, …)."
    )


class RuleInput(BaseModel):
    """One rule to add, or whose given fields to change (fields left out are kept)."""

    text: str = Field(max_length=1000, description="Rule text, e.g. .spam.example.")
    effect: Effect | None = None
    reason: str | None = Field(default=None, max_length=4096)
    private_comment: str | None = Field(default=None, max_length=4096)
    expires_at: int | None = Field(
        default=None, description="Unix seconds; null makes the rule permanent (when sent)."
    )
    expires_in: int | None = Field(
        default=None, ge=1, le=10 * 365 * 86400, description="Seconds from now (server clock)."
    )


class RulesBody(BaseModel):
    domains: list[str] | None = Field(
        default=None, max_length=10_000, description="Rule texts to add with default fields."
    )
    rules: list[RuleInput] | None = Field(default=None, max_length=10_000)


class RuleChange(BaseModel):
    changed: list[str] = Field(description="Normalized domains whose rule was added or removed.")
    unchanged: list[str] = Field(description="Normalized domains that were already so.")
    total: int = Field(description="Rules after the change.")


class ServerStatModel(BaseModel):
    domain: str
    queued_messages: int
    failed_http: int
    failed_https: int
    failed_smtp: int
    success_http: int
    success_https: int
    success_smtp: int
    successful_deliveries: int
    inbound_deliveries: int
    total_latency_ms: int
    last_active: int
    mean_latency_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


class ServerList(BaseModel):
    servers: list[ServerStatModel]
    total: int = Field(description="Domains matching the filter, before limit/offset.")


class Decision(BaseModel):
    domain: str
    allowed: bool
    policy: str
    reason: str
    rule: str | None = Field(description="The deciding rule's text (null: no rule decides).")
    matched: list[str] = Field(description="Every matching rule's text, most specific first.")
    rules: list[Rule] = Field(description="The matching rules with every field, same order.")


class InvalidLine(BaseModel):
    line: int
    reason: str


class ImportReport(BaseModel):
    format: str
    target: str
    dry_run: bool
    added: list[str]
    updated: list[str]
    skipped: int = Field(description="Entries identical to the stored rule.")
    invalid: list[InvalidLine]
    total: int = Field(description="Rules after the import (or that there would be).")


class AuditEntry(BaseModel):
    id: int
    at: int = Field(description="Unix seconds.")
    actor: str
    action: str
    target: str
    before: Any = Field(description="JSON; null where nothing was.")
    after: Any = Field(description="JSON; null where nothing is.")


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_before_id: int | None = Field(description="Pass as before_id for the next page.")


class AnomalyModel(BaseModel):
    domain: str
    kind: str
    detail: str
    value: float


class Status(BaseModel):
    domains: int
    queued_messages: int
    failures: int
    successful_deliveries: int
    anomalies: list[AnomalyModel]


class ReplicaModel(BaseModel):
    address: str
    state: str | None = None
    lag_bytes: int = Field(description="Bytes of the primary's stream the replica lacks.")


class NodeModel(BaseModel):
    address: str
    up: bool
    role: str | None = None
    replicas: int = 0
    replicas_in_sync: bool = Field(default=False, description="Every replica online, no lag.")
    replica_details: list[ReplicaModel] = []
    error: str | None = None


class EngineModel(BaseModel):
    redis: str = Field(description="`ok`, or `unavailable (<error>)`.")
    engine: str = Field(description="single, sentinel or cluster.")
    url: str | None = Field(default=None, description="The Redis URL, password masked.")
    master: str | None = Field(default=None, description="The master the sentinels name.")
    wait_replicas: int = Field(default=0, description="Replicas each push waits for.")
    replicas_in_sync: bool | None = None
    enough_replicas: bool | None = Field(
        default=None, description="Every primary has at least wait_replicas replicas."
    )
    nodes: list[NodeModel] = Field(default=[], description="Every primary, with its replicas.")


class Health(BaseModel):
    redis: str
    database: str
    engine: str | None = Field(default=None, description="single, sentinel or cluster.")
    replicas_in_sync: bool | None = Field(
        default=None, description="Every primary's replicas hold what it holds."
    )
    database_id: str | None = Field(default=None, description="This database's identity.")
    mismatch: str | None = Field(
        default=None, description="Why this database is not the namespace's, if it is not."
    )


class Problem(BaseModel):
    detail: str


class Caller(BaseModel):
    token: str = Field(description="Name of the bearer token used.")
    scope: str = Field(description="`admin` (may change things) or `read` (GET only).")
    actor: str = Field(description="Audit identity: api:<token name>@<client address>.")


class QShapeRow(BaseModel):
    domain: str
    counts: list[int] = Field(description="T, then the in-flight messages of each age column.")


class QShape(BaseModel):
    columns: list[str] = Field(
        description='"T", then the age columns in minutes: "5" is under'
        ' 5, "10" is [5, 10), … "1280+" is 1,280 or more.'
    )
    rows: list[QShapeRow] = Field(description="Largest T first, ties by name; T > 0 only.")
    total: list[int] = Field(description="T and each column over every domain.")
