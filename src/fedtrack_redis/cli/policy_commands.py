"""Policy commands: policy, enable/disable, block/allow, rules, check, import/export."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable

import click

from ..check import explain_federation_policy
from ..domain import normalize_domain
from ..errors import InvalidDomainError
from ..policy.state import ACCEPT, REJECT
from .context import current
from .errors import EXIT_REFUSED, BadInput
from .output import emit_json, say, table, timestamp

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")


def _normalize_all(domains: Iterable[str]) -> list[str]:
    """Validate every name before changing anything (exit 2 on the first bad one)."""
    names: list[str] = []
    for domain in domains:
        try:
            names.append(normalize_domain(domain))
        except InvalidDomainError as exc:
            raise BadInput(str(exc)) from None
    return names


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise BadInput(f"{question} Refusing without --yes when not on a terminal")
    if not click.confirm(question, default=False):
        raise click.Abort


@click.command("policy")
@click.argument(
    "mode", required=False, type=click.Choice(["accept", "reject"], case_sensitive=False)
)
@json_option
def policy_command(mode: str | None, as_json: bool) -> None:
    """Show the cluster policy, or set it to ACCEPT (rules block) or REJECT (rules allow)."""
    store = current().policy()
    if mode is not None:
        store.set_policy(mode)
    state = {"policy": store.get_policy(), "enabled": store.get_enabled(), "rules": store.count()}
    if as_json:
        emit_json(state)
        return
    meaning = "rules are a blocklist" if state["policy"] == ACCEPT else "rules are an allowlist"
    prefix = "policy set to" if mode is not None else "policy:"
    say(
        f"{prefix} {state['policy']} ({meaning}); {state['rules']} rules;"
        f" federation {'enabled' if state['enabled'] else 'DISABLED'}"
    )


@click.command("enable")
def enable_command() -> None:
    """Turn federation on for the whole cluster."""
    current().policy().set_enabled(True)
    say("federation enabled cluster-wide")


@click.command("disable")
@yes_option
def disable_command(yes: bool) -> None:
    """Turn federation off: every domain but the local one is refused, cluster-wide."""
    _confirm("Refuse mail from and to every remote domain, cluster-wide?", yes)
    current().policy().set_enabled(False)
    say("federation DISABLED cluster-wide: only the local domain is allowed")


def _block_or_allow(domains: tuple[str, ...], block: bool) -> None:
    names = _normalize_all(domains)
    store = current().policy()
    mode = store.get_policy()
    add = (mode == ACCEPT) == block  # ACCEPT: a rule blocks; REJECT: a rule allows
    verb = "blocked" if block else "allowed"
    for name in names:
        had = store.has_rule(name)
        if add:
            store.add_rule(name)
            detail = "rule already present" if had else "rule added"
        else:
            store.remove_rule(name)
            detail = "rule removed" if had else "no rule to remove"
        say(f"{name}: {verb} ({detail}; policy {mode})")


@click.command("block")
@click.argument("domains", nargs=-1, required=True)
def block_command(domains: tuple[str, ...]) -> None:
    """Refuse DOMAINS: adds a rule in ACCEPT mode, removes one in REJECT mode."""
    _block_or_allow(domains, block=True)


@click.command("allow")
@click.argument("domains", nargs=-1, required=True)
def allow_command(domains: tuple[str, ...]) -> None:
    """Accept DOMAINS: removes a rule in ACCEPT mode, adds one in REJECT mode."""
    _block_or_allow(domains, block=False)


@click.group("rules")
def rules_group() -> None:
    """List and edit the domain exception rules directly."""


@rules_group.command("list")
@json_option
def rules_list(as_json: bool) -> None:
    """Every rule with the time it was added."""
    store = current().policy()
    rules = sorted(store.list_rules().items())
    if as_json:
        emit_json(
            {
                "policy": store.get_policy(),
                "total": len(rules),
                "rules": [{"domain": d, "created_at": c} for d, c in rules],
            }
        )
        return
    table(
        f"{len(rules)} rules (policy {store.get_policy()})",
        ["domain", "added (UTC)"],
        [(domain, timestamp(created)) for domain, created in rules],
    )


@rules_group.command("add")
@click.argument("domains", nargs=-1, required=True)
def rules_add(domains: tuple[str, ...]) -> None:
    """Add rules for DOMAINS (existing rules are kept)."""
    store = current().policy()
    total = 0
    for name in _normalize_all(domains):
        total = store.add_rule(name)
    say(f"{len(domains)} rule(s) added; {total} in total")


@rules_group.command("remove")
@click.argument("domains", nargs=-1, required=True)
def rules_remove(domains: tuple[str, ...]) -> None:
    """Remove the rules for DOMAINS (unknown ones are ignored)."""
    store = current().policy()
    total = store.count()
    for name in _normalize_all(domains):
        total = store.remove_rule(name)
    say(f"{total} rule(s) remain")


@rules_group.command("flush")
@yes_option
def rules_flush(yes: bool) -> None:
    """Remove every rule."""
    store = current().policy()
    _confirm(f"Remove all {store.count()} rules?", yes)
    store.flush_rules()
    say("all rules removed")


@click.command("check")
@click.argument("domain")
@click.option("--policy", "policy_override", default="", help="Decide under this policy instead.")
@json_option
def check_command(domain: str, policy_override: str, as_json: bool) -> None:
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
        emit_json(
            {
                "domain": decision.domain,
                "allowed": decision.allowed,
                "policy": decision.policy,
                "reason": decision.reason,
                "rule": decision.rule,
            }
        )
    else:
        verdict = "ALLOWED" if decision.allowed else "REFUSED"
        say(f"{decision.domain}: {verdict} ({decision.reason}; policy {decision.policy})")
    if not decision.allowed:
        click.get_current_context().exit(EXIT_REFUSED)


def _read_import(text: str, fmt: str) -> list[str]:
    if fmt == "json":
        data = json.loads(text)
        items = data.get("rules", []) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise BadInput('JSON import: expected a list of domains or {"rules": [...]}')
        return [str(item["domain"] if isinstance(item, dict) else item) for item in items]
    rows = [row for row in csv.reader(io.StringIO(text)) if row and row[0].strip()]
    if not rows:
        return []
    header = [cell.strip().lstrip("#").lower() for cell in rows[0]]
    if "domain" in header:
        column = header.index("domain")
        rows = rows[1:]
    else:
        column = 0
    return [row[column] for row in rows if len(row) > column and not row[0].startswith("#")]


@click.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json"]),
    default=None,
    help="Input format (default: from the file name, else CSV).",
)
def import_command(file: io.TextIOWrapper, fmt: str | None) -> None:
    """Merge rules from FILE (CSV with a `#domain` or `domain` column, as Mastodon exports,
    or JSON); existing rules are kept. Every line is validated before anything changes."""
    name = getattr(file, "name", "") or ""
    chosen = fmt or ("json" if name.endswith(".json") else "csv")
    try:
        raw = _read_import(file.read(), chosen)
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"cannot read {chosen.upper()} input: {exc}") from None
    names: list[str] = []
    for index, domain in enumerate(raw, start=1):
        try:
            names.append(normalize_domain(domain))
        except InvalidDomainError as exc:
            raise BadInput(f"entry {index}: {exc}") from None
    store = current().policy()
    added = store.add_rules(names)
    say(
        f"imported {added} rule(s), skipped {len(names) - added} already present or repeated;"
        f" {store.count()} in total"
    )


@click.command("export")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True
)
@click.option(
    "--output",
    "-o",
    type=click.File("w", encoding="utf-8"),
    default="-",
    help="Write to FILE instead of standard output.",
)
def export_command(fmt: str, output: io.TextIOWrapper) -> None:
    """Write every rule as CSV (`#domain,#created_at`) or JSON."""
    store = current().policy()
    rules = sorted(store.list_rules().items())
    if fmt == "json":
        json.dump(
            {
                "policy": store.get_policy(),
                "total": len(rules),
                "rules": [{"domain": d, "created_at": c} for d, c in rules],
            },
            output,
            indent=2,
        )
        output.write("\n")
        return
    writer = csv.writer(output, lineterminator="\n")
    writer.writerow(["#domain", "#created_at"])
    writer.writerows(rules)


COMMANDS = [
    policy_command,
    enable_command,
    disable_command,
    block_command,
    allow_command,
    rules_group,
    check_command,
    import_command,
    export_command,
]
