"""Policy commands: policy, enable/disable, check (and --explain), audit."""

from __future__ import annotations

import time

import click

from ..check import explain_federation_policy
from ..policy.state import ACCEPT, REJECT
from .context import current
from .durations import parse_since
from .errors import EXIT_REFUSED, BadInput
from .output import emit_json, say, table, timestamp
from .render import change_summary, decision_json, decision_line, expiry
from .rule_commands import confirm, json_option, yes_option


@click.command("policy")
@click.argument(
    "mode", required=False, type=click.Choice(["accept", "reject"], case_sensitive=False)
)
@json_option
def policy_command(mode: str | None, as_json: bool) -> None:
    """Show the cluster policy, or set it to ACCEPT (rules block) or REJECT (rules allow)."""
    context = current()
    store = context.policy()
    if mode is not None:
        store.set_policy(mode, actor=context.actor)
    state = {"policy": store.get_policy(), "enabled": store.get_enabled(), "rules": store.count()}
    if as_json:
        emit_json(state)
        return
    meaning = (
        "exception rules are a blocklist"
        if state["policy"] == ACCEPT
        else "exception rules are an allowlist"
    )
    prefix = "policy set to" if mode is not None else "policy:"
    say(
        f"{prefix} {state['policy']} ({meaning}); {state['rules']} rules;"
        f" federation {'enabled' if state['enabled'] else 'DISABLED'}"
    )


@click.command("enable")
def enable_command() -> None:
    """Turn federation on for the whole cluster."""
    context = current()
    context.policy().set_enabled(True, actor=context.actor)
    say("federation enabled cluster-wide")


@click.command("disable")
@yes_option
def disable_command(yes: bool) -> None:
    """Turn federation off: every domain but the local one is refused, cluster-wide."""
    confirm("Refuse mail from and to every remote domain, cluster-wide?", yes)
    context = current()
    context.policy().set_enabled(False, actor=context.actor)
    say("federation DISABLED cluster-wide: only the local domain is allowed")


@click.command("check")
@click.argument("domain")
@click.option("--policy", "policy_override", default="", help="Decide under this policy instead.")
@click.option("--explain", is_flag=True, help="List every matching rule, the deciding one first.")
@json_option
def check_command(domain: str, policy_override: str, explain: bool, as_json: bool) -> None:
    """Would mail with DOMAIN be allowed? Exit code 0 when allowed, 3 when refused."""
    context = current()
    if policy_override and policy_override.upper() not in (ACCEPT, REJECT):
        raise BadInput(f"invalid policy {policy_override!r}: expected ACCEPT or REJECT")
    decision = explain_federation_policy(
        domain,
        context.policy(),
        local_domain=context.settings.local_domain,
        policy=policy_override,
    )
    if as_json:
        emit_json(decision_json(decision))
    else:
        say(decision_line(decision))
        if explain:
            now = time.time()
            if not decision.matched_rules:
                say("  no rule matches")
            for rule in decision.matched_rules:
                mark = "deciding" if rule.text == decision.rule else "matches"
                why = f", reason {rule.reason!r}" if rule.reason else ""
                say(
                    f"  {mark}: {rule.text} ({rule.kind}, {rule.effect}{why};"
                    f" expires {expiry(rule, now)})"
                )
    if not decision.allowed:
        click.get_current_context().exit(EXIT_REFUSED)


@click.command("audit")
@click.option("--target", default=None, help="Only entries of this rule (any spelling) or target.")
@click.option("--since", default=None, help="Only entries since: 1d, 2026-12-01, unix seconds.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--before-id", type=click.IntRange(min=1), default=None, help="Page: older entries.")
@json_option
def audit_command(
    target: str | None, since: str | None, limit: int, before_id: int | None, as_json: bool
) -> None:
    """The audit log of the policy, newest first: who changed what, from what to what."""
    entries = (
        current()
        .policy()
        .audit(
            limit,
            before_id=before_id,
            target=target,
            since=None if since is None else parse_since(since),
        )
    )
    if as_json:
        emit_json({"entries": [entry.to_dict() for entry in entries]})
        return
    table(
        f"{len(entries)} audit entries" + (f" of {target}" if target else ""),
        ["id", "at (UTC)", "actor", "action", "target", "change"],
        [(e.id, timestamp(e.at), e.actor, e.action, e.target, change_summary(e)) for e in entries],
    )


COMMANDS = [policy_command, enable_command, disable_command, check_command, audit_command]
