"""Rule commands: ``block`` and ``allow`` (fixed-effect rules), and the ``rules`` group.

``block TEXT`` adds a ``block`` rule and ``allow TEXT`` an ``allow`` rule (or turns the
rule of that text into one): their effect is the same under ACCEPT and REJECT, so the
command means what it says in either mode, and a later ``fedtrack policy reject`` never
turns the blocked domains into the only allowed ones (as an ``exception`` rule, which
blocks in ACCEPT and allows in REJECT, would). The outcome in the current mode is what
the commands always promised — ``block`` refuses, ``allow`` accepts — and they still say
when a more specific rule keeps deciding otherwise. ``rules add`` adds rules of any
effect, ``exception`` by default (the original's rules).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable

import click

from ..check import explain_federation_policy
from ..errors import InvalidDomainError
from ..policy.rules import EFFECTS, GLOB, NETWORK, SUBDOMAINS, parse_rule
from .context import current
from .durations import expiry_after
from .errors import BadInput
from .output import emit_json, say, table
from .render import RULE_COLUMNS, rule_json, rule_row

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
reason_option = click.option("--reason", default=None, help="Public reason, shown with the rule.")
comment_option = click.option(
    "--comment", "private_comment", default=None, help="Private comment for operators."
)
for_option = click.option(
    "--for", "duration", default=None, help="Lift the rule after this long: 30m, 12h, 7d, 2w."
)


def confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise BadInput(f"{question} Refusing without --yes when not on a terminal")
    if not click.confirm(question, default=False):
        raise click.Abort


def canonical_texts(texts: Iterable[str]) -> list[str]:
    """Every rule text validated first (exit 2 on the first bad one), in canonical form."""
    found: list[str] = []
    for text in texts:
        try:
            canonical = parse_rule(text).text
        except InvalidDomainError as exc:
            raise BadInput(str(exc)) from None
        if canonical not in found:
            found.append(canonical)
    return found


def _add(
    texts: tuple[str, ...],
    effect: str | None,
    reason: str | None,
    private_comment: str | None,
    duration: str | None,
) -> list[tuple[str, str]]:
    """Add or update the rules; (text, what happened) for each."""
    canonical = canonical_texts(texts)
    context = current()
    store = context.policy()
    fields: dict[str, object] = {}
    if effect is not None:
        fields["effect"] = effect
    if reason is not None:
        fields["reason"] = reason
    if private_comment is not None:
        fields["private_comment"] = private_comment
    if duration is not None:
        fields["expires_at"] = expiry_after(duration)
    done = []
    for text in canonical:
        before = store.get_rule(text)
        store.add_rule(text, actor=context.actor, **fields)  # type: ignore[arg-type]
        after = store.get_rule(text)
        if before is None:
            what = "added"
        elif before == after:
            what = "unchanged"
        else:
            what = "updated"
        done.append((text, what))
    return done


def _block_or_allow(
    texts: tuple[str, ...],
    effect: str,
    reason: str | None,
    private_comment: str | None,
    duration: str | None,
) -> None:
    context = current()
    store = context.policy()
    verb = "blocked" if effect == "block" else "allowed"
    for text, what in _add(texts, effect, reason, private_comment, duration):
        rule = store.get_rule(text)
        assert rule is not None
        lasts = "" if rule.expires_at is None else f", until {_utc(rule.expires_at)}"
        say(
            f"{text}: {verb} ({rule.kind} {effect} rule {what}{lasts}; policy {store.get_policy()})"
        )
        name = _sample_name(text, rule.kind)
        if name is not None:
            decision = explain_federation_policy(
                name, store, local_domain=context.settings.local_domain
            )
            if decision.allowed != (effect == "allow"):
                say(
                    f"  note: {name} is still {'allowed' if decision.allowed else 'refused'}"
                    f" ({decision.reason} {decision.rule or ''})".rstrip()
                    + ")"
                )


def _sample_name(text: str, kind: str) -> str | None:
    """A name the rule covers, to check what decides for it (None for globs, networks)."""
    if kind in (GLOB, NETWORK):
        return None
    return text[1:] if kind == SUBDOMAINS else text


def _utc(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


@click.command("block")
@click.argument("rules", nargs=-1, required=True)
@reason_option
@comment_option
@for_option
def block_command(
    rules: tuple[str, ...], reason: str | None, private_comment: str | None, duration: str | None
) -> None:
    """Refuse RULES in either mode: adds a `block` rule for each (or makes the rule of that
    text one). RULES are rule texts: spam.example, .spam.example (and every name under
    it), *.spam.example, 192.0.2.0/24."""
    _block_or_allow(rules, "block", reason, private_comment, duration)


@click.command("allow")
@click.argument("rules", nargs=-1, required=True)
@reason_option
@comment_option
@for_option
def allow_command(
    rules: tuple[str, ...], reason: str | None, private_comment: str | None, duration: str | None
) -> None:
    """Accept RULES in either mode: adds an `allow` rule for each (or makes the rule of
    that text one)."""
    _block_or_allow(rules, "allow", reason, private_comment, duration)


@click.group("rules")
def rules_group() -> None:
    """List and edit the rules directly."""


@rules_group.command("list")
@click.option("--filter", "needle", default="", help="Only rules whose text or reason holds this.")
@click.option("--kind", type=click.Choice(["exact", SUBDOMAINS, GLOB, NETWORK]), default=None)
@click.option("--effect", type=click.Choice(EFFECTS), default=None)
@json_option
def rules_list(needle: str, kind: str | None, effect: str | None, as_json: bool) -> None:
    """Every rule with its kind, effect, reason, expiry and the time it was added."""
    store = current().policy()
    lowered = needle.strip().lower()
    rules = [
        rule
        for rule in store.rules()
        if (kind is None or rule.kind == kind)
        and (effect is None or rule.effect == effect)
        and (not lowered or lowered in rule.text or lowered in rule.reason.lower())
    ]
    if as_json:
        emit_json(
            {
                "policy": store.get_policy(),
                "total": len(rules),
                "rules": [rule_json(rule) for rule in rules],
            }
        )
        return
    now = time.time()
    table(
        f"{len(rules)} rules (policy {store.get_policy()})",
        RULE_COLUMNS,
        [rule_row(rule, now) for rule in rules],
    )


@rules_group.command("add")
@click.argument("rules", nargs=-1, required=True)
@click.option(
    "--effect",
    type=click.Choice(EFFECTS),
    default=None,
    help="exception (default for a new rule: blocks in ACCEPT, allows in REJECT), block, allow.",
)
@reason_option
@comment_option
@for_option
def rules_add(
    rules: tuple[str, ...],
    effect: str | None,
    reason: str | None,
    private_comment: str | None,
    duration: str | None,
) -> None:
    """Add RULES, or change the fields given of existing ones."""
    done = _add(rules, effect, reason, private_comment, duration)
    counts = {what: sum(1 for _t, w in done if w == what) for what in ("added", "updated")}
    say(
        f"{counts['added']} rule(s) added, {counts['updated']} updated;"
        f" {current().policy().count()} in total"
    )


@rules_group.command("remove")
@click.argument("rules", nargs=-1, required=True)
def rules_remove(rules: tuple[str, ...]) -> None:
    """Remove the rules with these texts (unknown ones are ignored)."""
    context = current()
    store = context.policy()
    total = store.count()
    for text in canonical_texts(rules):
        total = store.remove_rule(text, actor=context.actor)
    say(f"{total} rule(s) remain")


@rules_group.command("flush")
@yes_option
def rules_flush(yes: bool) -> None:
    """Remove every rule."""
    context = current()
    store = context.policy()
    confirm(f"Remove all {store.count()} rules?", yes)
    store.flush_rules(actor=context.actor)
    say("all rules removed")


COMMANDS = [block_command, allow_command, rules_group]
