"""Imports: merging a rule list into the stored rules, all or nothing.

An import merges: a text not stored yet is added (created now unless the file says when,
created by the file's ``created_by`` or else the importing actor); a stored rule is
updated with the fields the file's format carries (`CARRIED`: a Mastodon list says the
effect and the public comment, never a private comment or an expiry) and is skipped when
nothing differs. The project's JSON carries every field, so importing its export
restores each rule exactly (``created_at``, ``updated_at`` and ``source`` included).

Invalid entries make the import change nothing (`InvalidImportError`, naming each as
``line N``) unless the caller skips them; an entry whose ``expires_at`` is not in the
future is invalid too. The whole import is one transaction, one audit entry, and one
message (or, above `MAX_CHANGE_RULES` changed rules, one resync): see
`PolicyStore.import_rules`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import InvalidImportError
from .audit import listing
from .formats import InvalidEntry, parse_import
from .rules import Rule

if TYPE_CHECKING:
    from .store import PolicyStore

#: The fields of a stored rule that an import of each format may change (None: all).
CARRIED: dict[str, tuple[str, ...] | None] = {
    "text": ("effect",),
    "mastodon-csv": ("effect", "reason"),
    "mastodon-allow-csv": ("effect",),
    "gotosocial-json": ("effect", "reason"),
    "gotosocial-csv": ("effect", "reason"),
    "fedtrack-csv": ("effect", "reason", "expires_at"),
    "fedtrack-json": None,
}


@dataclass
class ImportReport:
    """What an import did (or, with `dry_run`, would do)."""

    format: str
    target: str
    added: list[Rule] = field(default_factory=list)
    updated: list[tuple[Rule, Rule]] = field(default_factory=list)  # (before, after)
    skipped: list[str] = field(default_factory=list)  # identical to the stored rule
    invalid: list[InvalidEntry] = field(default_factory=list)
    dry_run: bool = False
    total: int = 0  # rules stored after the import (or that would be)

    @property
    def changed(self) -> list[Rule]:
        return self.added + [after for _before, after in self.updated]

    def summary(self) -> dict[str, Any]:
        """The audit entry's ``after``: counts, and the changed texts (listed up to 1,000)."""
        return {
            "format": self.format,
            "added": len(self.added),
            "updated": len(self.updated),
            "skipped": len(self.skipped),
            "invalid": len(self.invalid),
        } | listing([rule.text for rule in self.changed])

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "target": self.target,
            "dry_run": self.dry_run,
            "added": [rule.text for rule in self.added],
            "updated": [after.text for _before, after in self.updated],
            "skipped": len(self.skipped),
            "invalid": [{"line": e.line, "reason": e.reason} for e in self.invalid],
            "total": self.total,
        }


def merge(
    incoming: Rule, stored: Rule | None, fields: Collection[str] | None, *, actor: str, now: int
) -> Rule:
    """The rule after importing `incoming` over `stored` (`stored` itself when equal)."""
    if stored is None:
        if incoming.created_at and incoming.created_by is not None:
            return incoming
        return Rule(  # the constructor, not dataclasses.replace: imports are 100,000 long
            incoming.text,
            incoming.kind,
            incoming.effect,
            incoming.reason,
            incoming.private_comment,
            actor if incoming.created_by is None else incoming.created_by,
            incoming.source,
            incoming.created_at or now,
            incoming.updated_at,
            incoming.expires_at,
        )
    if fields is None:  # a restore: every field as the file says (times and creator if known)
        restored = dataclasses.replace(
            incoming,
            created_at=incoming.created_at or stored.created_at,
            created_by=stored.created_by if incoming.created_by is None else incoming.created_by,
            updated_at=stored.updated_at if incoming.updated_at is None else incoming.updated_at,
        )
        if restored == stored:
            return stored
        if incoming.updated_at is None:
            restored = dataclasses.replace(restored, updated_at=now)
        return restored
    merged = dataclasses.replace(stored, **{name: getattr(incoming, name) for name in fields})
    return stored if merged == stored else dataclasses.replace(merged, updated_at=now)


def plan(
    rules: Sequence[Rule],
    stored: dict[str, Rule],
    fields: Collection[str] | None,
    *,
    fmt: str,
    target: str,
    actor: str,
    now: int,
) -> ImportReport:
    """The import of `rules` (one per text) over `stored`, without changing anything."""
    report = ImportReport(fmt, target)
    for rule in rules:
        old = stored.get(rule.text)
        new = merge(rule, old, fields, actor=actor, now=now)
        if old is None:
            report.added.append(new)
        elif new is old:
            report.skipped.append(rule.text)
        else:
            report.updated.append((old, new))
    return report


def expired_entries(rules: Sequence[Rule], lines: Sequence[int], now: float) -> list[InvalidEntry]:
    return [
        InvalidEntry(line, f"{rule.text}: expires_at {rule.expires_at} is not in the future")
        for rule, line in zip(rules, lines, strict=True)
        if rule.expires_at is not None and rule.expires_at <= now
    ]


def run_import(
    store: PolicyStore,
    content: str,
    *,
    target: str,
    format: str | None = None,
    filename: str | None = None,
    effect: str | None = None,
    skip_invalid: bool = False,
    dry_run: bool = False,
    actor: str | None = None,
) -> ImportReport:
    """Parse `content` and import it into `store` (what the CLI and the API both do).

    Raises `InvalidImportError` (nothing changed) when an entry is invalid, unless
    `skip_invalid`; ValueError for an unknown `format`, `InvalidRuleError` for a bad
    `effect`.
    """
    parsed = parse_import(content, format=format, filename=filename, effect=effect)
    now = time.time()
    expired = expired_entries(parsed.rules, parsed.lines, now)
    invalid = sorted([*parsed.invalid, *expired], key=lambda entry: entry.line)
    if invalid and not skip_invalid:
        raise InvalidImportError(target, invalid)
    bad = {entry.line for entry in expired}
    rules = [r for r, line in zip(parsed.rules, parsed.lines, strict=True) if line not in bad]
    return store.import_rules(
        rules,
        fields=CARRIED[parsed.format],
        format=parsed.format,
        target=target,
        invalid=invalid,
        dry_run=dry_run,
        actor=actor,
    )
