"""fedtrack-redis: one federation policy and one set of per-domain delivery diagnostics
for a cluster of mail frontend workers, shared through Redis and persisted in PostgreSQL.
"""

from __future__ import annotations

from .check import Decision, check_federation_policy, explain_federation_policy
from .domain import normalize_domain
from .errors import (
    BackendUnavailableError,
    ConfigurationError,
    DatabaseMismatchError,
    FedtrackError,
    FencedOutError,
    InvalidDomainError,
    InvalidImportError,
    InvalidPolicyError,
    InvalidRuleError,
    InvalidTransportError,
    InvalidValueError,
    InvalidWindowError,
    NotInitializedError,
    PropagationPendingError,
    SchemaMismatchError,
    UnreplicatedError,
)
from .flusher import Flusher
from .globals import global_policy, global_tracker
from .health.policy import DomainHealth, HealthPolicy
from .health.webhooks import Webhook
from .history import HistoryBucket
from .policy.rules import Rule, parse_rule
from .policy.state import ACCEPT, REJECT
from .policy.store import PolicyStore
from .reads import StatsReader
from .stats import ServerStat
from .tracker import FederationTracker

__all__ = [
    "ACCEPT",
    "REJECT",
    "BackendUnavailableError",
    "ConfigurationError",
    "DatabaseMismatchError",
    "Decision",
    "DomainHealth",
    "FederationTracker",
    "FedtrackError",
    "FencedOutError",
    "Flusher",
    "HealthPolicy",
    "HistoryBucket",
    "InvalidDomainError",
    "InvalidImportError",
    "InvalidPolicyError",
    "InvalidRuleError",
    "InvalidTransportError",
    "InvalidValueError",
    "InvalidWindowError",
    "NotInitializedError",
    "PolicyStore",
    "PropagationPendingError",
    "Rule",
    "SchemaMismatchError",
    "ServerStat",
    "StatsReader",
    "UnreplicatedError",
    "Webhook",
    "check_federation_policy",
    "explain_federation_policy",
    "global_policy",
    "global_tracker",
    "normalize_domain",
    "parse_rule",
]

__version__ = "0.1.0"
