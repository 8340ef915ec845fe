"""Delivery health (docs/health.md): cluster-wide, outbound-only backoff and unavailability.

`policy` holds the thresholds and the record format, `store` the Redis side (reads, reset,
probe claims, the namespace's stored policy), `view` the per-process map `should_attempt`
answers from, `sync` the thread that keeps that map current, `events` and `webhooks` what
the flusher leader does with the state changes.
"""

from __future__ import annotations

from .policy import BACKOFF, HEALTHY, STATES, UNAVAILABLE, DomainHealth, HealthPolicy

__all__ = ["BACKOFF", "HEALTHY", "STATES", "UNAVAILABLE", "DomainHealth", "HealthPolicy"]
