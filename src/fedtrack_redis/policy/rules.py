"""Rule texts: what an operator types, what a rule covers, and its one canonical spelling.

A rule's text names its kind, so the API, the CLI, imports and exports all speak the
same language:

* ``example.com`` — **exact**: that name (or that address literal) only;
* ``.example.com`` — **subdomains**: the name and every name under it, on label
  boundaries (``a.b.example.com`` yes, ``badexample.com`` no);
* a text holding ``*`` or ``?`` — **glob**: ``*`` is any run of characters, dots
  included, ``?`` exactly one character; the pattern must cover the whole name,
  case-insensitively, so ``*.example.com`` does not cover ``example.com``. Globs match
  host names only, never address literals;
* ``192.0.2.0/24``, ``2001:db8::/32`` — **network**: every address literal inside.

`parse_rule` turns any accepted spelling into the canonical text, so two spellings of one
rule are one rule: names go through `normalize_domain` (lowercase, IDNA), a glob's
wildcard-free labels are IDNA-encoded one by one, networks are printed by `ipaddress`.

Network spellings accepted: ``address/prefix`` with a decimal prefix length, the address
bare (``192.0.2.0/24``, ``2001:DB8::/32``) or bracketed as an address literal is
(``[192.0.2.0]/24``, ``[2001:db8::]/32``, ``[IPv6:2001:db8::]/32``). Netmask forms
(``/255.255.255.0``), scope ids and host bits are refused. An IPv6 network inside the
IPv4-mapped range (``::ffff:192.0.2.0/120``) becomes the IPv4 network (``192.0.2.0/24``),
just as a mapped address literal normalizes to the IPv4 address. The canonical text is
the bare, compressed form. A bare address without a prefix is an exact rule.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import idna

from ..domain import MAX_LABEL_OCTETS, normalize_domain
from ..errors import InvalidDomainError, InvalidRuleError

EXACT = "exact"
SUBDOMAINS = "subdomains"
GLOB = "glob"
NETWORK = "network"
KINDS = (EXACT, SUBDOMAINS, GLOB, NETWORK)

EXCEPTION = "exception"
BLOCK = "block"
ALLOW = "allow"
EFFECTS = (EXCEPTION, BLOCK, ALLOW)

MAX_RULE_LENGTH = 255

_ASCII_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_WILDCARD_LABEL = re.compile(r"^[a-z0-9*?-]+$")
_DOTTED_DIGITS = re.compile(r"^[0-9.]+$")
_STARS = re.compile(r"\*{2,}")


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule with its metadata; `text` is canonical (as `parse_rule` returns it).

    `effect` decides what a match means: ``exception`` (blocked under ACCEPT, allowed
    under REJECT), ``block`` or ``allow`` (the same under either mode). Times are unix
    seconds; `updated_at` is None until a change after creation, `expires_at` None for a
    rule that never expires. An expired rule still exists (it is listed until removed)
    but never matches.
    """

    text: str
    kind: str
    effect: str = EXCEPTION
    reason: str = ""
    private_comment: str = ""
    created_by: str | None = None
    source: str = "manual"
    created_at: int = 0
    updated_at: int | None = None
    expires_at: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidRuleError(self.text, f"unknown kind {self.kind!r}")
        if self.effect not in EFFECTS:
            raise InvalidRuleError(self.text, _effect_reason(self.effect))

    def expired(self, now: float) -> bool:
        """Whether the rule has stopped matching at `now` (its expiry is at or before)."""
        return self.expires_at is not None and self.expires_at <= now


def parse_effect(value: str) -> str:
    """``exception``, ``block`` or ``allow`` from any case; anything else is refused."""
    effect = value.strip().lower() if isinstance(value, str) else value
    if effect not in EFFECTS:
        raise InvalidRuleError(value, _effect_reason(value))
    return str(effect)


def make_rule(
    text: str,
    *,
    effect: str = EXCEPTION,
    reason: str = "",
    private_comment: str = "",
    created_by: str | None = None,
    source: str = "manual",
    created_at: int = 0,
    updated_at: int | None = None,
    expires_at: int | None = None,
) -> Rule:
    """`parse_rule` plus metadata, with the effect checked as `parse_effect` does."""
    parsed = parse_rule(text)
    return Rule(
        parsed.text,
        parsed.kind,
        parse_effect(effect),
        reason,
        private_comment,
        created_by,
        source,
        created_at,
        updated_at,
        expires_at,
    )


def parse_rule(text: str) -> Rule:
    """The rule a text names, in canonical form, with default metadata.

    Raises `InvalidRuleError` (an `InvalidDomainError`) with a one-line reason for any
    text that names no rule.
    """
    if not isinstance(text, str):
        raise InvalidRuleError(text, "not a string")
    stripped = text.strip()
    if not stripped:
        raise InvalidRuleError(text, "empty")
    if len(stripped) > MAX_RULE_LENGTH:
        raise InvalidRuleError(text, f"longer than {MAX_RULE_LENGTH} characters")
    if "/" in stripped:
        kind, canonical = NETWORK, _parse_network(text, stripped)
    elif "*" in stripped or "?" in stripped:
        kind, canonical = GLOB, _parse_glob(text, stripped)
    elif stripped.startswith("."):
        kind, canonical = SUBDOMAINS, _parse_subdomains(text, stripped)
    else:
        kind, canonical = EXACT, _normalize(text, stripped)
    if len(canonical) > MAX_RULE_LENGTH:
        raise InvalidRuleError(text, f"longer than {MAX_RULE_LENGTH} characters once encoded")
    return Rule(canonical, kind)


def literal_count(glob: str) -> int:
    """How specific a canonical glob is: its characters other than ``*`` and ``?``."""
    return len(glob) - glob.count("*") - glob.count("?")


def is_address(name: str) -> bool:
    """Whether a normalized name is an address literal (IPv4 or IPv6), not a host name."""
    return ":" in name or _DOTTED_DIGITS.match(name) is not None


def _normalize(original: str, text: str) -> str:
    try:
        return normalize_domain(text)
    except InvalidDomainError as exc:
        raise InvalidRuleError(original, _one_line(exc.reason)) from None


def _parse_subdomains(original: str, text: str) -> str:
    rest = text[1:]
    if rest.startswith("[") or ":" in rest or _DOTTED_DIGITS.match(rest.rstrip(".")):
        raise InvalidRuleError(original, "a leading '.' cannot stand before an address literal")
    if rest.startswith("."):
        raise InvalidRuleError(original, "empty label")
    name = _normalize(original, rest)
    if is_address(name):
        raise InvalidRuleError(original, "a leading '.' cannot stand before an address literal")
    return "." + name


def _parse_glob(original: str, text: str) -> str:
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]
    if any(char in text for char in "[]:") or any(char.isspace() for char in text):
        raise InvalidRuleError(original, "a glob holds only host name characters, '*' and '?'")
    labels = []
    for label in text.split("."):
        if not label:
            raise InvalidRuleError(original, "empty label")
        if "*" in label or "?" in label:
            lowered = label.lower()
            if not lowered.isascii() or not _WILDCARD_LABEL.match(lowered):
                raise InvalidRuleError(
                    original,
                    f"label {label!r}: beside '*' or '?' only a-z, 0-9 and '-'"
                    " (write other letters in their xn-- form)",
                )
            labels.append(lowered)
        else:
            labels.append(_glob_label(original, label))
    return _STARS.sub("*", ".".join(labels))


def _glob_label(original: str, label: str) -> str:
    """One wildcard-free label of a glob, lowercased and IDNA-encoded like a name's."""
    lowered = label.lower()
    if lowered.isascii() and not lowered.startswith("xn--"):
        if len(lowered) > MAX_LABEL_OCTETS:
            raise InvalidRuleError(original, f"label longer than {MAX_LABEL_OCTETS} octets")
        if not _ASCII_LABEL.match(lowered):
            raise InvalidRuleError(original, f"label {label!r} holds characters no host name may")
        return lowered
    try:
        encoded = idna.encode(label, uts46=True, transitional=False)
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise InvalidRuleError(original, _one_line(f"label {label!r}: {exc}")) from None
    return encoded.decode("ascii").lower()


def _parse_network(original: str, text: str) -> str:
    address, _, prefix = text.rpartition("/")
    if not (prefix.isascii() and prefix.isdigit()) or len(prefix) > 3:
        raise InvalidRuleError(original, "a network is address/prefix-length, e.g. 192.0.2.0/24")
    address = address.strip()
    v6_only = False
    if len(address) >= 2 and address[0] == "[" and address[-1] == "]":
        address = address[1:-1].strip()
        if address[:5].lower() == "ipv6:":
            address, v6_only = address[5:], True
    if "%" in address:
        raise InvalidRuleError(original, "IPv6 scope ids are not allowed")
    if v6_only and ":" not in address:
        raise InvalidRuleError(original, "'IPv6:' before an IPv4 address")
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    try:
        network = ipaddress.ip_network(f"{address}/{int(prefix)}", strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            loose = ipaddress.ip_network(f"{address}/{int(prefix)}", strict=False)
            raise InvalidRuleError(original, f"host bits set (the network is {loose})") from None
        raise InvalidRuleError(original, "not an IPv4 or IPv6 network") from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            network = ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network.compressed


def _effect_reason(value: object) -> str:
    return f"effect {value!r} is not one of {', '.join(EFFECTS)}"


def _one_line(reason: str) -> str:
    return " ".join(reason.split())
