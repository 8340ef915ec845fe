"""Import and export of rule lists, as pure functions over text (no database, no I/O).

Formats read (`FORMATS`):

* ``mastodon-csv`` — Mastodon's domain-block export
  (``#domain,#severity,#reject_media,#reject_reports,#public_comment,#obfuscate``).
  Mastodon's blocks cover subdomains, so ``suspend`` and ``silence`` become ``.domain``
  block rules and ``noop`` a ``.domain`` allow; ``#public_comment`` is the reason, the
  other columns are ignored. GoToSocial's CSV export has the same shape and is detected
  as this format; pass ``effect="allow"`` for a GoToSocial allow export.
* ``mastodon-allow-csv`` — Mastodon's domain-allow export (the header ``#domain`` alone):
  exact ``allow`` rules, as Mastodon's allows match exactly.
* ``gotosocial-json`` — ``[{"domain", "public_comment", "obfuscate", ...}]``: ``.domain``
  block rules (or `effect`), ``public_comment`` the reason. Entries carrying Mastodon's
  ``severity`` and ``comment`` (its public block list) are read the Mastodon way.
* ``gotosocial-csv`` — chosen explicitly: every row a ``.domain`` rule of `effect`
  (default ``block``), whatever its severity.
* ``text`` — one rule text per line; ``#`` starts a comment.
* ``fedtrack-csv`` — ``#domain,#effect,#reason,#expires_at,#created_at`` (any rule text
  in ``#domain``, times in unix seconds, empty for none).
* ``fedtrack-json`` — every field of every rule; `write_fedtrack_json` then
  `parse_import` gives the same rules back, times and source included.

Every bad entry is reported, none raises: each `InvalidEntry` names ``line N`` (the line
a CSV record or text line starts on; for JSON, N is the 1-based entry) and a one-line
reason. A text appearing twice is kept once when both say the same, and reported when
they differ. A domain obfuscated with ``*`` (as published block lists do) is refused.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial

from .rules import ALLOW, BLOCK, EXCEPTION, SUBDOMAINS, Rule, make_rule, parse_effect, parse_rule

FORMATS = (
    "mastodon-csv",
    "mastodon-allow-csv",
    "gotosocial-json",
    "gotosocial-csv",
    "text",
    "fedtrack-csv",
    "fedtrack-json",
)
JSON_TAG = "fedtrack-rules"
MASTODON_HEADER = (
    "domain",
    "severity",
    "reject_media",
    "reject_reports",
    "public_comment",
    "obfuscate",
)
FEDTRACK_HEADER = ("domain", "effect", "reason", "expires_at", "created_at")
_SEVERITY = {"suspend": BLOCK, "silence": BLOCK, "noop": ALLOW, "": BLOCK}


@dataclass(frozen=True)
class InvalidEntry:
    """An entry that was not imported: where it is, and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class ImportResult:
    """What a file holds: its format, its valid rules in file order (`lines[i]` is where
    `rules[i]` is written), its invalid entries."""

    format: str
    rules: list[Rule]
    invalid: list[InvalidEntry]
    lines: list[int] = field(default_factory=list)


class _Collector:
    """Gathers one file's rules and invalid entries, one entry at a time."""

    def __init__(self, fmt: str) -> None:
        self.format = fmt
        self.rules: list[Rule] = []
        self.lines: list[int] = []
        self.invalid: list[InvalidEntry] = []
        self._seen: dict[str, tuple[int, Rule]] = {}

    def add(self, line: int, build: Callable[[], Rule]) -> None:
        """Record `build()`'s rule, or the reason it raised, for the entry at `line`."""
        try:
            rule = build()
        except ValueError as exc:  # InvalidRuleError and InvalidDomainError are ValueErrors
            self.invalid.append(InvalidEntry(line, " ".join(str(exc).split())))
            return
        earlier = self._seen.get(rule.text)
        if earlier is None:
            self._seen[rule.text] = (line, rule)
            self.rules.append(rule)
            self.lines.append(line)
        elif earlier[1] != rule:
            self.invalid.append(
                InvalidEntry(line, f"{rule.text} differs from the same rule on line {earlier[0]}")
            )

    def fail(self, line: int, reason: str) -> None:
        self.invalid.append(InvalidEntry(line, reason))

    def result(self) -> ImportResult:
        return ImportResult(self.format, self.rules, self.invalid, self.lines)


def detect_format(content: str, filename: str | None = None) -> str:
    """The format of `content` by its first characters or CSV header, else by the file
    name's extension; ``text`` when nothing else fits."""
    body = content.lstrip("\ufeff \t\r\n")
    name = (filename or "").lower()
    if body[:1] in ("[", "{") or (name.endswith(".json") and body):
        return _detect_json(body)
    first = body.split("\n", 1)[0].strip()
    if not name.endswith((".txt", ".list")) and first.startswith("#"):
        columns = _columns(next(csv.reader([first])))
        if columns == ["domain"]:
            return "mastodon-allow-csv"
        if columns[:1] == ["domain"] and "effect" in columns:
            return "fedtrack-csv"
        if columns[:1] == ["domain"] and "severity" in columns:
            return "mastodon-csv"
    return "text"


def parse_import(
    content: str,
    *,
    format: str | None = None,
    filename: str | None = None,
    effect: str | None = None,
    source: str = "import",
) -> ImportResult:
    """Parse a rule list (its `format` detected by `detect_format` unless given).

    `effect` replaces the effect of GoToSocial's formats, plain text and Mastodon's block
    CSV (which is how a GoToSocial allow export, shaped like it, is read). Rules get
    `source` unless the file records its own (``fedtrack-json``). Bad entries are
    reported in the result; only a bad argument raises: ValueError for an unknown
    `format`, `InvalidRuleError` for an unknown `effect`.
    """
    fmt = format or detect_format(content, filename)
    if fmt not in FORMATS:
        raise ValueError(f"unknown rule list format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if effect is not None:
        effect = parse_effect(effect)
    result = _Collector(fmt)
    content = content.lstrip("\ufeff")
    if fmt == "text":
        _read_text(content, result, effect or EXCEPTION, source)
    elif fmt.endswith("json"):
        _read_json(content, result, effect, source)
    else:
        _read_csv(content, result, effect, source)
    return result.result()


def _read_text(content: str, result: _Collector, effect: str, source: str) -> None:
    for number, raw in enumerate(content.splitlines(), 1):
        text = raw.split("#", 1)[0].strip()
        if text:
            result.add(number, partial(make_rule, text, effect=effect, source=source))


def _records(content: str) -> Iterator[tuple[int, list[str]]]:
    """CSV records with the line each starts on (quoted fields may span lines)."""
    reader = csv.reader(io.StringIO(content))
    start = 1
    for row in reader:
        yield start, row
        start = reader.line_num + 1


def _columns(row: list[str]) -> list[str]:
    return [cell.strip().lstrip("#").strip().lower() for cell in row]


def _read_csv(content: str, result: _Collector, effect: str | None, source: str) -> None:
    records = _records(content)
    header: dict[str, int] | None = None
    for number, row in records:
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            if row[0].strip().startswith("#") or row[0].strip().lower() == "domain":
                header = {name: index for index, name in enumerate(_columns(row))}
                if "domain" in header:
                    continue
            result.fail(number, "no #domain header")
            return
        if row[0].strip().startswith("#"):
            continue  # a comment line
        cells = {name: row[index].strip() for name, index in header.items() if index < len(row)}
        result.add(number, partial(_csv_rule, result.format, cells, effect, source))


def _csv_rule(fmt: str, cells: dict[str, str], effect: str | None, source: str) -> Rule:
    domain = cells.get("domain", "")
    if fmt == "fedtrack-csv":
        return make_rule(
            domain,
            effect=cells.get("effect") or EXCEPTION,
            reason=cells.get("reason", ""),
            source=source,
            created_at=_int(cells.get("created_at"), "created_at") or 0,
            expires_at=_int(cells.get("expires_at"), "expires_at"),
        )
    if fmt == "mastodon-allow-csv":
        return make_rule(_plain(domain), effect=ALLOW, source=source)
    if fmt == "gotosocial-csv":
        chosen = effect or BLOCK
    else:
        chosen = effect or _severity(cells.get("severity", ""))
    reason = cells.get("public_comment", "")
    return make_rule("." + _plain(domain), effect=chosen, reason=reason, source=source)


def _read_json(content: str, result: _Collector, effect: str | None, source: str) -> None:
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        result.fail(exc.lineno, f"not JSON: {exc.msg}")
        return
    if isinstance(data, dict) and isinstance(data.get("rules"), list):
        data = data["rules"]
    if not isinstance(data, list):
        result.fail(1, "expected a list of rules")
        return
    read = _fedtrack_entry if result.format == "fedtrack-json" else _gotosocial_entry
    for number, entry in enumerate(data, 1):
        result.add(number, partial(read, entry, effect, source))


def _gotosocial_entry(entry: object, effect: str | None, source: str) -> Rule:
    if not isinstance(entry, dict):
        raise ValueError("not an object")
    domain = _str(entry.get("domain"), "domain")
    if effect:
        chosen = effect
    elif "severity" in entry:
        chosen = _severity(_str(entry.get("severity"), "severity"))
    else:
        chosen = BLOCK
    reason = _str(entry.get("public_comment", entry.get("comment", "")) or "", "public_comment")
    private = _str(entry.get("private_comment") or "", "private_comment")
    return make_rule(
        "." + _plain(domain), effect=chosen, reason=reason, private_comment=private, source=source
    )


def _fedtrack_entry(entry: object, effect: str | None, source: str) -> Rule:
    if isinstance(entry, str):  # a bare rule text, as earlier versions' lists allowed
        return make_rule(entry, effect=effect or EXCEPTION, source=source)
    if not isinstance(entry, dict):
        raise ValueError("not an object")
    text = _str(entry.get("text", entry.get("domain")), "text")
    rule = make_rule(
        text,
        effect=_str(entry.get("effect") or EXCEPTION, "effect"),
        reason=_str(entry.get("reason") or "", "reason"),
        private_comment=_str(entry.get("private_comment") or "", "private_comment"),
        created_by=_optional_str(entry.get("created_by"), "created_by"),
        source=_str(entry.get("source") or source, "source"),
        created_at=_json_int(entry.get("created_at"), "created_at") or 0,
        updated_at=_json_int(entry.get("updated_at"), "updated_at"),
        expires_at=_json_int(entry.get("expires_at"), "expires_at"),
    )
    kind = entry.get("kind")
    if kind is not None and kind != rule.kind:
        raise ValueError(f"kind {kind!r} does not match {rule.text!r}, a {rule.kind} rule")
    return rule


def _detect_json(body: str) -> str:
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return "fedtrack-json" if body.startswith("{") else "gotosocial-json"
    if isinstance(data, dict):
        return "fedtrack-json"
    if isinstance(data, list) and data and isinstance(data[0], dict) and "text" not in data[0]:
        return "gotosocial-json"
    return "fedtrack-json"


def _severity(value: str) -> str:
    severity = value.strip().lower()
    if severity not in _SEVERITY:
        raise ValueError(f"unknown severity {value!r} (expected suspend, silence or noop)")
    return _SEVERITY[severity]


def _plain(domain: str) -> str:
    """A domain column's value: a name, never a wildcard (published lists obfuscate)."""
    if "*" in domain or "?" in domain:
        raise ValueError(f"{domain!r} is obfuscated or a wildcard: which domain is meant?")
    if not domain:
        raise ValueError("empty domain")
    parse_rule(domain)  # the plain domain itself must be valid (errors name it as given)
    return domain[1:] if domain.startswith(".") else domain


def _str(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value


def _optional_str(value: object, name: str) -> str | None:
    return None if value is None else _str(value, name)


def _int(value: str | None, name: str) -> int | None:
    if not value:
        return None
    if not value.isascii() or not value.lstrip("-").isdigit():
        raise ValueError(f"{name} {value!r} is not unix seconds")
    return int(value)


def _json_int(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer (unix seconds) or null")
    return value


# -- writing -------------------------------------------------------------------------------


def write_fedtrack_json(rules: Iterable[Rule]) -> str:
    """Every field of every rule; `parse_import` reads it back unchanged."""
    document = {"format": JSON_TAG, "version": 1, "rules": [asdict(rule) for rule in rules]}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write_fedtrack_csv(rules: Iterable[Rule]) -> str:
    """``#domain,#effect,#reason,#expires_at,#created_at``, one rule per row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["#" + name for name in FEDTRACK_HEADER])
    for rule in rules:
        expires = "" if rule.expires_at is None else str(rule.expires_at)
        writer.writerow([rule.text, rule.effect, rule.reason, expires, str(rule.created_at)])
    return out.getvalue()


def mastodon_expressible(rule: Rule) -> bool:
    """Whether Mastodon's block CSV can say what `rule` means (a ``.domain`` rule)."""
    return rule.kind == SUBDOMAINS


def write_mastodon_csv(rules: Iterable[Rule]) -> str:
    """Mastodon's domain-block CSV of the ``.domain`` rules (``suspend``, or ``noop`` for
    an allow). Other kinds are left out: a Mastodon block always covers subdomains, and
    it has no globs or networks; `mastodon_expressible` tells which rules were."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["#" + name for name in MASTODON_HEADER])
    for rule in rules:
        if mastodon_expressible(rule):
            severity = "noop" if rule.effect == ALLOW else "suspend"
            writer.writerow([rule.text[1:], severity, "false", "false", rule.reason, "false"])
    return out.getvalue()


def write_text(rules: Iterable[Rule]) -> str:
    """One rule text per line (effects and metadata are not kept)."""
    return "".join(rule.text + "\n" for rule in rules)
