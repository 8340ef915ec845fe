"""What one `add_rule` call changes: its arguments checked, then merged into the stored rule.

Re-adding a rule changes only the fields the call passed: ``add_rule("x.example")`` on
an existing ``block`` rule leaves it a ``block`` rule with its reason and expiry. The
keyword defaults are therefore markers that read as the documented defaults
(``"exception"``, ``""``, ``None``) but are known not to have been passed; a caller that
passes the same value explicitly does change the field.

Everything is checked before any I/O (`RuleEdit.of` raises), so a bad call changes
nothing; the merge runs inside the change's transaction against the stored rule.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRuleError
from .rules import EXCEPTION, Rule, parse_effect, parse_rule

MAX_REASON = 4096
MAX_CREATED_BY = 255
MAX_SOURCE = 64


class _Default(str):
    """A keyword default: equal to its text, but distinguishable from a passed value."""

    __slots__ = ()


class _NotGiven:
    """The default of an optional keyword (shown as None in signatures)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "None"

    def __bool__(self) -> bool:
        return False


NOT_GIVEN: Any = _NotGiven()
DEFAULT_EFFECT: Any = _Default(EXCEPTION)
DEFAULT_TEXT: Any = _Default("")
DEFAULT_SOURCE: Any = _Default("manual")


def given(value: object) -> bool:
    """Whether a keyword argument was passed (not left at its marker default)."""
    return value is not NOT_GIVEN and type(value) is not _Default


def check_expiry(text: str, expires_at: object, now: float) -> int | None:
    """`expires_at` as unix seconds (None: never), refused unless in the future."""
    if expires_at is None:
        return None
    if isinstance(expires_at, bool) or not isinstance(expires_at, int):
        raise InvalidRuleError(text, "expires_at must be unix seconds (an integer) or None")
    if expires_at <= now:
        raise InvalidRuleError(text, f"expires_at {expires_at} is not in the future")
    return expires_at


def _string(text: str, name: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidRuleError(text, f"{name} must be a string")
    if len(value) > limit:
        raise InvalidRuleError(text, f"{name} longer than {limit} characters")
    return value


@dataclass(frozen=True)
class RuleEdit:
    """A checked `add_rule` call: the canonical text, its kind, the fields passed."""

    text: str
    kind: str
    fields: dict[str, Any]

    @classmethod
    def of(
        cls,
        text: str,
        now: float,
        *,
        effect: object = DEFAULT_EFFECT,
        reason: object = DEFAULT_TEXT,
        private_comment: object = DEFAULT_TEXT,
        created_by: object = NOT_GIVEN,
        expires_at: object = NOT_GIVEN,
        source: object = DEFAULT_SOURCE,
    ) -> RuleEdit:
        """Check every argument (InvalidRuleError, an InvalidDomainError, on the first bad)."""
        parsed = parse_rule(text)
        canonical = parsed.text
        fields: dict[str, Any] = {}
        if given(effect):
            fields["effect"] = parse_effect(effect)  # type: ignore[arg-type]
        if given(reason):
            fields["reason"] = _string(canonical, "reason", reason, MAX_REASON)
        if given(private_comment):
            fields["private_comment"] = _string(
                canonical, "private_comment", private_comment, MAX_REASON
            )
        if given(created_by):
            fields["created_by"] = (
                None
                if created_by is None
                else _string(canonical, "created_by", created_by, MAX_CREATED_BY)
            )
        if given(expires_at):
            fields["expires_at"] = check_expiry(canonical, expires_at, now)
        if given(source):
            fields["source"] = _string(canonical, "source", source, MAX_SOURCE) or "manual"
        return cls(canonical, parsed.kind, fields)

    def apply(self, existing: Rule | None, *, actor: str, now: int) -> Rule:
        """The rule after this call: a new one (created now, by `created_by` or else the
        actor), `existing` itself when nothing differs, else `existing` with the passed
        fields and ``updated_at = now``."""
        if existing is None:
            fields = {"created_by": actor} | self.fields
            return Rule(self.text, self.kind, created_at=now, **fields)
        changed = dataclasses.replace(existing, **self.fields)
        if changed == existing:
            return existing
        return dataclasses.replace(changed, updated_at=now)
