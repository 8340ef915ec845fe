"""What operators do with delivery health (the CLI and the API call these): list the
failing domains, count them per state, reset one, with an audit entry where a database
is at hand."""

from __future__ import annotations

import sqlalchemy as sa

from ..domain import normalize_domain
from ..engine import RedisEngine
from ..keys import NamespaceKeys
from ..policy import audit
from .policy import STATES, DomainHealth
from .store import HealthRedis


class HealthAdmin:
    """Health of one namespace, for operators (reads Redis; resets are audited)."""

    def __init__(self, engine: RedisEngine, keys: NamespaceKeys) -> None:
        self.side = HealthRedis(engine, keys)

    def domains(self, state: str | None = None, limit: int = 10_000) -> list[DomainHealth]:
        """Failing domains, soonest next attempt first; `state` filters (ValueError when
        it is not a state)."""
        if state is not None and state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, got {state!r}")
        return self.side.domains(state, limit)

    def counts(self, tracked: int) -> dict[str, int]:
        """Domains per state, the healthy ones being the rest of the `tracked` domains."""
        counts = self.side.counts()
        return {"healthy": max(0, tracked - sum(counts.values())), **counts}

    def reset(self, domain: str, *, actor: str, database: sa.Engine | None = None) -> str | None:
        """Reset `domain` (any spelling; `InvalidDomainError` when it is none) to healthy
        cluster-wide; the previous state, None when it had no health record. With a
        `database`, the reset is written to its audit log (action ``health_reset``)."""
        name = normalize_domain(domain)
        previous, _feed = self.side.reset(name)
        if database is not None and previous is not None:
            with database.begin() as connection:
                audit.record(
                    connection,
                    actor=actor,
                    action=audit.HEALTH_RESET,
                    target=name,
                    before={"state": previous},
                    after={"state": "healthy"},
                )
        return previous
