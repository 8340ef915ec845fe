"""Import and export of rule lists (the formats of `policy.formats`)."""

from __future__ import annotations

import io

import click

from ..policy.formats import (
    FORMATS,
    mastodon_expressible,
    write_fedtrack_csv,
    write_fedtrack_json,
    write_mastodon_csv,
    write_text,
)
from ..policy.imports import ImportReport, run_import
from ..policy.rules import EFFECTS
from .context import current
from .output import emit_json, say

#: `--format csv` / `json` of earlier versions: detect the kind of CSV or JSON.
IMPORT_ALIASES = {"csv": None, "json": None}
EXPORT_FORMATS = {
    "fedtrack-csv": write_fedtrack_csv,
    "fedtrack-json": write_fedtrack_json,
    "mastodon-csv": write_mastodon_csv,
    "text": write_text,
}
EXPORT_ALIASES = {"csv": "fedtrack-csv", "json": "fedtrack-json"}


@click.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8-sig"))
@click.option(
    "--format",
    "fmt",
    type=click.Choice([*FORMATS, *IMPORT_ALIASES]),
    default=None,
    help="Input format (default: detected from the content, then the file name).",
)
@click.option(
    "--effect",
    type=click.Choice(EFFECTS),
    default=None,
    help="Effect of the imported rules (e.g. allow for a GoToSocial allow export).",
)
@click.option("--skip-invalid", is_flag=True, help="Import the valid entries, report the rest.")
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def import_command(
    file: io.TextIOWrapper,
    fmt: str | None,
    effect: str | None,
    skip_invalid: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Merge the rules of FILE (`-` for standard input): Mastodon's domain-block or
    domain-allow CSV, GoToSocial's JSON or CSV, plain text (one rule per line), or this
    project's CSV or JSON. New rules are added, changed ones updated, identical ones
    skipped. One invalid line changes nothing (exit 2) unless --skip-invalid."""
    name = getattr(file, "name", "") or "-"
    target = "stdin" if name in ("-", "<stdin>") else name
    context = current()
    content = file.read()
    report = run_import(
        context.policy(),
        content,
        target=target,
        format=IMPORT_ALIASES.get(fmt, fmt) if fmt else None,
        filename=target,
        effect=effect,
        skip_invalid=skip_invalid,
        dry_run=dry_run,
        actor=context.actor,
    )
    if as_json:
        emit_json(report.to_dict())
        return
    if dry_run:
        _print_plan(report)
    for entry in report.invalid:
        say(f"skipped {entry}")
    verb = "would import" if dry_run else "imported"
    say(
        f"{verb} {target} ({report.format}): {len(report.added)} added,"
        f" {len(report.updated)} updated, {len(report.skipped)} skipped (identical),"
        f" {len(report.invalid)} invalid; {report.total} rules in total"
        + ("; dry run, nothing changed" if dry_run else "")
    )


def _print_plan(report: ImportReport) -> None:
    for rule in report.added:
        why = f" reason {rule.reason!r}" if rule.reason else ""
        say(f"+ {rule.text} ({rule.kind} {rule.effect}{why})")
    for before, after in report.updated:
        changes = [
            f"{name} {getattr(before, name)!r} → {getattr(after, name)!r}"
            for name in ("effect", "reason", "private_comment", "expires_at", "source")
            if getattr(before, name) != getattr(after, name)
        ]
        say(f"~ {after.text}: {', '.join(changes) or 'metadata'}")


@click.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice([*EXPORT_FORMATS, *EXPORT_ALIASES]),
    default="fedtrack-csv",
    show_default=True,
    help="fedtrack-json keeps every field (import it back to restore the rules exactly).",
)
@click.option(
    "--output",
    "-o",
    type=click.File("w", encoding="utf-8"),
    default="-",
    help="Write to FILE instead of standard output.",
)
def export_command(fmt: str, output: io.TextIOWrapper) -> None:
    """Write every rule in one of the formats `import` reads."""
    chosen = EXPORT_ALIASES.get(fmt, fmt)
    rules = current().policy().rules()
    output.write(EXPORT_FORMATS[chosen](rules))
    if chosen == "mastodon-csv":
        left_out = sum(1 for rule in rules if not mastodon_expressible(rule))
        if left_out:
            click.echo(
                f"fedtrack: note: {left_out} rule(s) that are not .domain rules were left out"
                " (Mastodon's list has no exact, glob or network rules)",
                err=True,
            )


COMMANDS = [import_command, export_command]
