"""What each change does inside its transaction: its SQL, its audit entry, the message.

Each function returns the `Work` that `PolicyWriter.run` runs after bumping the version
(so the version row is always locked first): it reads the stored state, decides what
changes, writes the rows and the one audit entry, and returns the `Change` to send —
or None when nothing changes, which rolls the transaction back (no version, no entry,
no message). The arguments were checked before: nothing here raises for bad input.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

import sqlalchemy as sa

from . import audit, db
from .audit import listing, rule_json
from .edits import RuleEdit
from .formats import InvalidEntry
from .imports import ImportReport, plan
from .rules import Rule
from .state import ACCEPT, Change
from .sync import MAX_CHANGE_RULES
from .writer import Work

#: Above this many texts an import reads every stored rule at once instead of by text.
LOAD_ALL_ABOVE = 2000


def add(edit: RuleEdit, actor: str) -> Work[None]:
    """Add the rule of `edit`, or change the fields it passes.

    Neither this nor `remove` counts the rules in the database (a scan of the table, which
    grew with every rule): the store answers with its own count once the change applied.
    """

    def work(connection: sa.Connection, version: int) -> tuple[Change | None, None]:
        now = int(time.time())
        old = db.get_rule(connection, edit.text)
        new = edit.apply(old, actor=actor, now=now)
        if new is old:
            return None, None
        db.save_rule(connection, new, new=old is None)
        audit.record(
            connection,
            actor=actor,
            action=audit.ADD if old is None else audit.UPDATE,
            target=new.text,
            before=None if old is None else rule_json(old),
            after=rule_json(new),
            at=now,
        )
        return Change(version, "add", rules=(new,)), None

    return work


def remove(text: str, actor: str) -> Work[None]:
    """Remove the rule with this canonical text."""

    def work(connection: sa.Connection, version: int) -> tuple[Change | None, None]:
        old = db.get_rule(connection, text)
        if old is None:
            return None, None
        db.remove_rule(connection, text)
        audit.record(
            connection, actor=actor, action=audit.REMOVE, target=text, before=rule_json(old)
        )
        return Change(version, "remove", texts=(text,)), None

    return work


def flush(actor: str) -> Work[None]:
    """Remove every rule: one entry (target ``*``) listing the texts."""

    def work(connection: sa.Connection, version: int) -> tuple[Change | None, None]:
        texts = db.flush_rules(connection)
        if not texts:
            return None, None
        audit.record(connection, actor=actor, action=audit.FLUSH, target="*", before=listing(texts))
        return Change(version, "flush"), None

    return work


def merge(
    rules: Sequence[Rule],
    fields: Collection[str] | None,
    *,
    fmt: str,
    target: str,
    invalid: Sequence[InvalidEntry],
    dry_run: bool,
    actor: str,
) -> Work[ImportReport]:
    """Import `rules` (one per text): one entry for the whole import; the message carries
    the changed rules, or is a resync above `MAX_CHANGE_RULES` of them."""

    def work(connection: sa.Connection, version: int) -> tuple[Change | None, ImportReport]:
        now = int(time.time())
        texts = [rule.text for rule in rules]
        if len(texts) > LOAD_ALL_ABOVE:
            stored = db.load_rules(connection)
        else:
            stored = db.get_rules(connection, texts)
        report = plan(rules, stored, fields, fmt=fmt, target=target, actor=actor, now=now)
        report.invalid.extend(invalid)
        report.total = db.count_rules(connection) + len(report.added)
        report.dry_run = dry_run
        if dry_run or not report.changed:
            return None, report
        db.insert_rules(connection, report.added)
        db.update_rules(connection, [after for _before, after in report.updated])
        updated = [before.text for before, _after in report.updated]
        audit.record(
            connection,
            actor=actor,
            action=audit.IMPORT,
            target=target,
            before=listing(updated) if updated else None,
            after=report.summary(),
            at=now,
        )
        changed = tuple(report.changed)
        if len(changed) > MAX_CHANGE_RULES:
            return Change(version, "resync"), report
        return Change(version, "add", rules=changed), report

    return work


def set_policy(policy: str, actor: str) -> Work[None]:
    def work(connection: sa.Connection, version: int) -> tuple[Change | None, None]:
        old = db.get_setting(connection, "policy") or ACCEPT
        if old == policy:
            return None, None
        db.set_setting(connection, "policy", policy)
        audit.record(
            connection, actor=actor, action=audit.POLICY, target="policy", before=old, after=policy
        )
        return Change(version, "policy", policy=policy), None

    return work


def set_enabled(enabled: bool, actor: str) -> Work[None]:
    def work(connection: sa.Connection, version: int) -> tuple[Change | None, None]:
        old = (db.get_setting(connection, "enabled") or "true") == "true"
        if old == enabled:
            return None, None
        db.set_setting(connection, "enabled", "true" if enabled else "false")
        audit.record(
            connection,
            actor=actor,
            action=audit.ENABLED,
            target="enabled",
            before=old,
            after=enabled,
        )
        return Change(version, "enabled", enabled=enabled), None

    return work
