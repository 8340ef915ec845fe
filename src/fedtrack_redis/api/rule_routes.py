"""Rule routes of the admin API: list, add or change, remove, import, export, and the
audit log. Every change carries the caller's actor (``api:<token name>@<address>``)
into the audit log; a read token may only GET."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..policy import formats
from ..policy.edits import RuleEdit
from ..policy.imports import run_import
from ..policy.rules import EFFECTS, KINDS, parse_rule
from ..policy.rules import Rule as RuleData
from . import models
from .deps import ERRORS, Actor, Policy

router = APIRouter(prefix="/api/federation", responses=ERRORS)

#: The largest import body accepted (a 100,000-rule export of every field fits).
MAX_IMPORT_BYTES = 64 * 1024 * 1024
ImportFormat = Literal[
    "mastodon-csv",
    "mastodon-allow-csv",
    "gotosocial-json",
    "gotosocial-csv",
    "text",
    "fedtrack-csv",
    "fedtrack-json",
]
ExportFormat = Literal["fedtrack-json", "fedtrack-csv", "mastodon-csv", "text"]
EXPORTS = {
    "fedtrack-json": (formats.write_fedtrack_json, "application/json"),
    "fedtrack-csv": (formats.write_fedtrack_csv, "text/csv; charset=utf-8"),
    "mastodon-csv": (formats.write_mastodon_csv, "text/csv; charset=utf-8"),
    "text": (formats.write_text, "text/plain; charset=utf-8"),
}


def rule_model(rule: RuleData, now: float) -> models.Rule:
    return models.Rule(
        domain=rule.text,
        text=rule.text,
        kind=rule.kind,
        effect=rule.effect,
        reason=rule.reason,
        private_comment=rule.private_comment,
        created_by=rule.created_by,
        source=rule.source,
        created_at=rule.created_at,
        updated_at=rule.updated_at,
        expires_at=rule.expires_at,
        expired=rule.expired(now),
    )


@router.get("/rules", tags=["rules"])
def list_rules(
    policy: Policy,
    q: Annotated[str, Query(max_length=255, description="Substring of text or reason.")] = "",
    kind: Annotated[str | None, Query(description="exact, subdomains, glob, network.")] = None,
    effect: Annotated[str | None, Query(description="exception, block, allow.")] = None,
    limit: Annotated[
        int | None, Query(ge=1, le=1_000_000, description="At most this many.")
    ] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> models.RuleList:
    """Every rule with every field (filtered by `q`, `kind`, `effect`; by text; `total`
    counts the filtered rules before `limit` and `offset`)."""
    if kind is not None and kind not in KINDS:
        raise HTTPException(400, f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    if effect is not None and effect not in EFFECTS:
        raise HTTPException(400, f"unknown effect {effect!r}: expected one of {', '.join(EFFECTS)}")
    needle = q.strip().lower()
    now = time.time()
    found = [
        rule
        for rule in policy.rules()
        if (kind is None or rule.kind == kind)
        and (effect is None or rule.effect == effect)
        and (not needle or needle in rule.text or needle in rule.reason.lower())
    ]
    end = None if limit is None else offset + limit
    return models.RuleList(
        rules=[rule_model(rule, now) for rule in found[offset:end]], total=len(found)
    )


def _fields(item: models.RuleInput, now: float) -> dict[str, Any]:
    """The fields a rule input passes (those it left out are kept by `add_rule`)."""
    sent = item.model_fields_set
    fields: dict[str, Any] = {}
    for name in ("effect", "reason", "private_comment"):
        value = getattr(item, name)
        if name in sent and value is not None:
            fields[name] = value
    if item.expires_in is not None:
        fields["expires_at"] = int(now) + item.expires_in
    elif "expires_at" in sent:
        fields["expires_at"] = item.expires_at
    return fields


@router.post("/rules", tags=["rules"])
def add_rules(body: models.RulesBody, policy: Policy, actor: Actor) -> models.RuleChange:
    """Add rules, or change the fields given of existing ones (``domains``: texts with
    default fields; ``rules``: each with its fields). Everything is checked first: one
    bad entry is a 400 and nothing changes."""
    now = time.time()
    items = [models.RuleInput(text=text) for text in body.domains or []] + list(body.rules or [])
    if not items:
        raise HTTPException(400, "send `domains` or `rules`")
    edits = []
    for item in items:
        fields = _fields(item, now)
        edits.append((RuleEdit.of(item.text, now, **fields).text, fields))  # raises: 400
    changed: list[str] = []
    total = policy.count()
    for text, fields in edits:
        before = policy.get_rule(text)
        total = policy.add_rule(text, actor=actor, **fields)
        if policy.get_rule(text) != before and text not in changed:
            changed.append(text)
    texts = dict.fromkeys(text for text, _fields in edits)
    unchanged = [text for text in texts if text not in changed]
    return models.RuleChange(changed=changed, unchanged=unchanged, total=total)


@router.delete("/rules", tags=["rules"])
def remove_rules(body: models.DomainsBody, policy: Policy, actor: Actor) -> models.RuleChange:
    """Remove the rules with these texts (unknown ones are reported unchanged)."""
    texts = list(dict.fromkeys(parse_rule(text).text for text in body.domains))  # raises: 400
    changed = [text for text in texts if policy.has_rule(text)]
    total = policy.count()
    for text in changed:
        total = policy.remove_rule(text, actor=actor)
    return models.RuleChange(
        changed=changed, unchanged=[t for t in texts if t not in changed], total=total
    )


@router.post(
    "/rules/import",
    tags=["rules"],
    responses={413: {"description": "Body too large"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/json": {"schema": {}},
                "text/plain": {"schema": {"type": "string"}},
            },
        }
    },
)
async def import_rules(
    request: Request,
    policy: Policy,
    actor: Actor,
    format: ImportFormat | None = None,
    effect: Literal["exception", "block", "allow"] | None = None,
    skip_invalid: bool = False,
    dry_run: bool = False,
    filename: Annotated[str, Query(min_length=1, max_length=255)] = "upload",
) -> models.ImportReport:
    """Merge a rule list (the body, in any format `fedtrack import` reads; detected unless
    `format` is given). All or nothing: an invalid entry is a 400 naming its ``line N``
    and nothing changes, unless `skip_invalid`. `dry_run` reports and changes nothing.
    One transaction, one audit entry (target `filename`), one message or resync."""
    body = await request.body()
    if len(body) > MAX_IMPORT_BYTES:
        raise HTTPException(413, f"import larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MiB")
    try:
        content = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HTTPException(400, "the import is not UTF-8 text") from None
    report = await run_in_threadpool(
        lambda: run_import(
            policy,
            content,
            target=filename,
            format=format,
            filename=filename,
            effect=effect,
            skip_invalid=skip_invalid,
            dry_run=dry_run,
            actor=actor,
        )
    )
    return models.ImportReport.model_validate(report.to_dict())


@router.get("/rules/export", tags=["rules"], response_class=Response)
def export_rules(policy: Policy, format: ExportFormat = "fedtrack-json") -> Response:
    """Every rule in a format `import` reads (fedtrack-json keeps every field)."""
    write, media_type = EXPORTS[format]
    return Response(write(policy.rules()), media_type=media_type)


@router.get("/audit", tags=["rules"])
def audit(
    policy: Policy,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    target: Annotated[str | None, Query(min_length=1, max_length=1000)] = None,
    since: Annotated[int | None, Query(ge=0, le=2**40)] = None,
) -> models.AuditPage:
    """The audit log, newest first; page with ``before_id`` (strictly older)."""
    entries = policy.audit(limit, before_id=before_id, target=target, since=since)
    return models.AuditPage(
        entries=[models.AuditEntry.model_validate(entry.to_dict()) for entry in entries],
        next_before_id=entries[-1].id if len(entries) == limit else None,
    )
