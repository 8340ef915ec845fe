"""The audit log of the policy: who changed what, when, from what to what.

Every change writes its entry in the database transaction of the change, so the log
and the policy never disagree: a change that rolled back left no entry, a committed
one always has one. A call that changes nothing writes nothing. A flush or an import is
one entry however many rules it touched: its `before` / `after` list up to
`MAX_LISTED` texts and count the rest, so a 100,000-rule import stays one row.

Actors: ``cli:<user>@<host>``, ``api:<token name>@<client address>``, ``system:expiry``
(the flusher leader removing expired rules), ``library:<host>`` (the default of library
calls).
"""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..store.schema import federation_audit
from .rules import Rule

ADD = "add"
UPDATE = "update"
REMOVE = "remove"
FLUSH = "flush"
IMPORT = "import"
POLICY = "policy"
ENABLED = "enabled"
EXPIRE = "expire"
HEALTH_RESET = "health_reset"
ACTIONS = (ADD, UPDATE, REMOVE, FLUSH, IMPORT, POLICY, ENABLED, EXPIRE, HEALTH_RESET)

EXPIRY_ACTOR = "system:expiry"
#: Texts a flush or import entry lists; the rest are counted.
MAX_LISTED = 1000
MAX_ACTOR = 255

_audit = federation_audit.c


@dataclass(frozen=True)
class AuditEntry:
    """One change: `at` in unix seconds, `before` / `after` as JSON values (None where
    nothing was)."""

    id: int
    at: int
    actor: str
    action: str
    target: str
    before: Any
    after: Any

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def library_actor() -> str:
    """The default actor of library calls: ``library:<host>``."""
    return f"library:{socket.gethostname()}"


def check_actor(actor: str | None) -> str:
    """`actor`, or the library's default; a bad one is a ValueError (before any change)."""
    if actor is None:
        return library_actor()
    if not isinstance(actor, str) or not actor.strip():
        raise ValueError("actor must be a non-empty string")
    return actor.strip()[:MAX_ACTOR]


def rule_json(rule: Rule) -> dict[str, Any]:
    """Every field of a rule, as an entry's `before` or `after`."""
    return dataclasses.asdict(rule)


def listing(texts: Sequence[str]) -> dict[str, Any]:
    """``{"count", "texts", "more"}``: the first `MAX_LISTED` texts and how many were left."""
    listed = list(texts[:MAX_LISTED])
    return {"count": len(texts), "texts": listed, "more": len(texts) - len(listed)}


def record(
    connection: sa.Connection,
    *,
    actor: str,
    action: str,
    target: str,
    before: Any = None,
    after: Any = None,
    at: int | None = None,
) -> None:
    """Write one entry (inside the caller's transaction)."""
    assert action in ACTIONS, action
    connection.execute(
        sa.insert(federation_audit).values(
            at=int(time.time()) if at is None else at,
            actor=actor,
            action=action,
            target=target,
            before=before,
            after=after,
        )
    )


def record_many(connection: sa.Connection, entries: Sequence[dict[str, Any]]) -> None:
    """Write several entries at once (each a dict of `record`'s keyword arguments)."""
    if entries:
        now = int(time.time())
        connection.execute(
            sa.insert(federation_audit),
            [{"at": now, "before": None, "after": None} | entry for entry in entries],
        )


def read(
    connection: sa.Connection,
    limit: int = 100,
    *,
    before_id: int | None = None,
    targets: Collection[str] | None = None,
    since: int | None = None,
) -> list[AuditEntry]:
    """Entries newest first: at most `limit`, strictly older than `before_id`, of these
    `targets` (a rule text in its spellings), at or after `since` (unix seconds)."""
    query = sa.select(
        _audit.id,
        _audit.at,
        _audit.actor,
        _audit.action,
        _audit.target,
        _audit.before,
        _audit.after,
    )
    if before_id is not None:
        query = query.where(_audit.id < before_id)
    if targets is not None:
        query = query.where(_audit.target.in_(list(targets)))
    if since is not None:
        query = query.where(_audit.at >= since)
    query = query.order_by(_audit.id.desc()).limit(limit)
    return [
        AuditEntry(int(i), int(at), str(actor), str(action), str(tgt), before, after)
        for i, at, actor, action, tgt, before, after in connection.execute(query)
    ]
