"""How rules and policy changes are written in Redis and on the channel.

A rule in the rules hash is its canonical text (the field) and a compact JSON record of
every other field (the value): ``{"k": kind, "c": created_at}`` plus, only when they are
not the default, ``e`` effect, ``r`` reason, ``p`` private_comment, ``b`` created_by,
``s`` source, ``u`` updated_at, ``x`` expires_at. So a process that reloads from Redis
has the whole rule, and the common rule (an exact exception rule) costs a few bytes.
A value that is a bare integer is a rule written before rules had metadata: an exact
exception rule created at that time.

A change message is one JSON object: ``v`` version, ``op``, ``r`` the rules added or
updated (each a record with its text as ``t``), ``x`` the texts removed (remove,
expire), ``p`` policy, ``e`` enabled, ``ts`` the publisher's clock (for the propagation
metric only). A message of an earlier version (``d`` the domain, ``t`` its created_at)
reads as the exact rule it added or removed.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .rules import EXACT, EXCEPTION, Rule
from .state import Change


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def rule_record(rule: Rule) -> dict[str, Any]:
    """Every field of `rule` but its text, defaults left out."""
    record: dict[str, Any] = {"k": rule.kind, "c": rule.created_at}
    if rule.effect != EXCEPTION:
        record["e"] = rule.effect
    if rule.reason:
        record["r"] = rule.reason
    if rule.private_comment:
        record["p"] = rule.private_comment
    if rule.created_by is not None:
        record["b"] = rule.created_by
    if rule.source != "manual":
        record["s"] = rule.source
    if rule.updated_at is not None:
        record["u"] = rule.updated_at
    if rule.expires_at is not None:
        record["x"] = rule.expires_at
    return record


def rule_from_record(text: str, record: dict[str, Any]) -> Rule:
    """The rule `rule_record` described (ValueError for a malformed record)."""
    try:
        return Rule(
            text,
            str(record["k"]),
            str(record.get("e", EXCEPTION)),
            str(record.get("r", "")),
            str(record.get("p", "")),
            _optional_str(record.get("b")),
            str(record.get("s", "manual")),
            int(record.get("c", 0)),
            _optional_int(record.get("u")),
            _optional_int(record.get("x")),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed rule record for {text!r}") from exc


def encode_rule(rule: Rule) -> str:
    """The rules hash's value for `rule`."""
    if (
        rule.effect == EXCEPTION
        and not rule.reason
        and not rule.private_comment
        and rule.created_by is None
        and rule.source == "manual"
        and rule.updated_at is None
        and rule.expires_at is None
    ):  # the common rule, without a JSON encoder (a 100,000-rule rebuild encodes them all)
        return f'{{"k":"{rule.kind}","c":{int(rule.created_at)}}}'
    return _dumps(rule_record(rule))


def decode_rule(text: str, value: str) -> Rule:
    """The rule stored under `text` with `value` (a record, or a legacy created_at)."""
    if value.isdigit():
        return Rule(text, EXACT, created_at=int(value))
    record = json.loads(value)
    if not isinstance(record, dict):
        raise ValueError(f"malformed rule record for {text!r}")
    return rule_from_record(text, record)


def encode_change(change: Change) -> str:
    message: dict[str, Any] = {
        "v": change.version,
        "op": change.op,
        "p": change.policy,
        "e": change.enabled,
        "ts": round(time.time(), 6),
    }
    if change.rules:
        message["r"] = [{"t": rule.text} | rule_record(rule) for rule in change.rules]
    if change.texts:
        message["x"] = list(change.texts)
    return _dumps(message)


def decode_change(text: str) -> Change | None:
    """The change in a channel message, or None for anything malformed."""
    try:
        data = json.loads(text)
        op = str(data["op"])
        rules = tuple(rule_from_record(str(r["t"]), r) for r in data.get("r", ()))
        texts = tuple(str(t) for t in data.get("x", ()))
        legacy = str(data.get("d", ""))  # an earlier version's writer: one exact rule
        if legacy and op == "add" and not rules:
            rules = (Rule(legacy, EXACT, created_at=int(data.get("t", 0))),)
        elif legacy and op == "remove" and not texts:
            texts = (legacy,)
        if op == "add" and not rules:
            return None
        return Change(
            version=int(data["v"]),
            op=op,
            rules=rules,
            texts=texts,
            policy=str(data.get("p", "")),
            enabled=bool(data.get("e", True)),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def published_at(text: str) -> float | None:
    try:
        value = json.loads(text).get("ts")
        return float(value) if value is not None else None
    except (ValueError, TypeError, AttributeError):
        return None


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def _optional_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("not an integer")
    return value
