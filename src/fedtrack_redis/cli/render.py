"""How rules, decisions and audit entries read on a terminal and in ``--json``."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..check import Decision
from ..policy.audit import AuditEntry
from ..policy.rules import Rule
from .output import timestamp


def rule_json(rule: Rule) -> dict[str, Any]:
    """Every field of a rule; ``domain`` repeats the text (the original's key)."""
    return {"domain": rule.text, **dataclasses.asdict(rule)}


def expiry(rule: Rule, now: float) -> str:
    if rule.expires_at is None:
        return "never"
    when = timestamp(rule.expires_at)
    return f"{when} (expired)" if rule.expired(now) else when


def rule_row(rule: Rule, now: float) -> tuple[str, ...]:
    return (
        rule.text,
        rule.kind,
        rule.effect,
        rule.reason or "-",
        expiry(rule, now),
        timestamp(rule.created_at),
    )


RULE_COLUMNS = ("rule", "kind", "effect", "reason", "expires (UTC)", "added (UTC)")


def decision_json(decision: Decision) -> dict[str, Any]:
    return {
        "domain": decision.domain,
        "allowed": decision.allowed,
        "policy": decision.policy,
        "reason": decision.reason,
        "rule": decision.rule,
        "matched": list(decision.matched),
    }


def decision_line(decision: Decision) -> str:
    verdict = "ALLOWED" if decision.allowed else "REFUSED"
    by = f" {decision.rule}" if decision.rule else ""
    return f"{decision.domain}: {verdict} ({decision.reason}{by}; policy {decision.policy})"


def change_summary(entry: AuditEntry) -> str:
    """One line saying what an audit entry changed."""
    before, after = entry.before, entry.after
    if entry.action in ("policy", "enabled"):
        return f"{before} → {after}"
    if entry.action == "add" and isinstance(after, dict):
        return _fields(after)
    if entry.action == "update" and isinstance(before, dict) and isinstance(after, dict):
        changed = [
            f"{name}: {before.get(name)!r} → {after.get(name)!r}"
            for name in after
            if name != "updated_at" and before.get(name) != after.get(name)
        ]
        return "; ".join(changed) or "-"
    if entry.action in ("remove", "expire") and isinstance(before, dict):
        return f"was {_fields(before)}"
    if entry.action == "flush" and isinstance(before, dict):
        return f"{before.get('count', 0)} rules removed"
    if entry.action == "import" and isinstance(after, dict):
        return (
            f"{after.get('format')}: {after.get('added', 0)} added, {after.get('updated', 0)}"
            f" updated, {after.get('skipped', 0)} skipped, {after.get('invalid', 0)} invalid"
        )
    return "-"


def _fields(rule: dict[str, Any]) -> str:
    parts = [f"{rule.get('kind')} {rule.get('effect')}"]
    if rule.get("reason"):
        parts.append(f"reason {rule['reason']!r}")
    if rule.get("expires_at"):
        parts.append(f"expires {timestamp(rule['expires_at'])}")
    return ", ".join(parts)
