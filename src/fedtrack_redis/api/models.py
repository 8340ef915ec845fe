"""Request and response bodies of the admin API (they make the OpenAPI document)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Settings(BaseModel):
    enabled: bool = Field(description="Cluster-wide federation switch.")
    policy: str = Field(description="ACCEPT (rules block) or REJECT (rules allow).")


class SettingsUpdate(BaseModel):
    enabled: bool | None = Field(default=None, description="Turn federation on or off.")
    policy: str | None = Field(default=None, description="ACCEPT or REJECT, any case.")


class Rule(BaseModel):
    domain: str
    created_at: int = Field(description="Unix seconds when the rule was first added.")


class RuleList(BaseModel):
    rules: list[Rule]
    total: int


class DomainsBody(BaseModel):
    domains: list[str] = Field(min_length=1, max_length=10_000, description="Domains to change.")


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
    rule: str | None


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
