"""parse_rule: every text form of a rule, its canonical spelling, and every refusal (unit)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

import fedtrack_redis
from fedtrack_redis import InvalidDomainError, InvalidRuleError, Rule, parse_rule
from fedtrack_redis.policy.rules import (
    MAX_RULE_LENGTH,
    literal_count,
    make_rule,
    parse_effect,
)


@pytest.mark.parametrize(
    ("text", "kind", "canonical"),
    [
        # exact: a name or an address literal, normalized as normalize_domain does
        ("example.com", "exact", "example.com"),
        ("  Example.COM.  ", "exact", "example.com"),
        ("münchen.de", "exact", "xn--mnchen-3ya.de"),
        ("[Mixed.Case]", "exact", "mixed.case"),
        ("1.2.3.4", "exact", "1.2.3.4"),
        ("[1.2.3.4]", "exact", "1.2.3.4"),
        ("[IPv6:2001:DB8:0::1]", "exact", "2001:db8::1"),
        ("[IPv6:::ffff:1.2.3.4]", "exact", "1.2.3.4"),
        # subdomains
        (".example.com", "subdomains", ".example.com"),
        (".MÜNCHEN.de", "subdomains", ".xn--mnchen-3ya.de"),
        (".Example.com.", "subdomains", ".example.com"),
        (".com", "subdomains", ".com"),
        # globs: literal labels IDNA-encoded around the wildcards, runs of * collapsed
        ("*.example.com", "glob", "*.example.com"),
        ("*.MÜNCHEN.de", "glob", "*.xn--mnchen-3ya.de"),
        ("mail?.Example.*", "glob", "mail?.example.*"),
        ("ex**am*?ple.com", "glob", "ex*am*?ple.com"),
        ("*.example.com.", "glob", "*.example.com"),
        ("*", "glob", "*"),
        ("?", "glob", "?"),
        ("xn--mnchen-3ya.*", "glob", "xn--mnchen-3ya.*"),
        ("*-relay.example", "glob", "*-relay.example"),
        ("192.168.*", "glob", "192.168.*"),
        # networks: bare or bracketed, compressed, IPv4-mapped → IPv4
        ("192.0.2.0/24", "network", "192.0.2.0/24"),
        ("0.0.0.0/0", "network", "0.0.0.0/0"),
        ("192.0.2.7/32", "network", "192.0.2.7/32"),
        ("192.0.2.0/024", "network", "192.0.2.0/24"),
        ("[192.0.2.0]/24", "network", "192.0.2.0/24"),
        ("2001:DB8::/32", "network", "2001:db8::/32"),
        ("2001:0db8:0000::/32", "network", "2001:db8::/32"),
        ("[2001:db8::]/32", "network", "2001:db8::/32"),
        ("[IPv6:2001:DB8::]/32", "network", "2001:db8::/32"),
        ("::/0", "network", "::/0"),
        ("::ffff:192.0.2.0/120", "network", "192.0.2.0/24"),
        ("::ffff:c000:200/120", "network", "192.0.2.0/24"),
        ("[IPv6:::ffff:0:0]/96", "network", "0.0.0.0/0"),
        ("::ffff:192.0.2.1/128", "network", "192.0.2.1/32"),
    ],
)
def test_text_forms(text: str, kind: str, canonical: str) -> None:
    rule = parse_rule(text)
    assert (rule.kind, rule.text) == (kind, canonical)
    assert parse_rule(rule.text) == rule  # the canonical text is a fixed point


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (".", "empty"),
        ("..example.com", "empty label"),
        ("a..example", "empty label"),
        ("exa mple.com", "not a valid host name"),
        ("under_score.example", "not a valid host name"),
        ("x" * 64 + ".example", "label longer than 63"),
        # a dot before an address literal
        (".1.2.3.4", "cannot stand before an address literal"),
        (".[1.2.3.4]", "cannot stand before an address literal"),
        (".2001:db8::1", "cannot stand before an address literal"),
        (".[IPv6:2001:db8::1]", "cannot stand before an address literal"),
        # globs
        ("*..com", "empty label"),
        (".*.example.com", "empty label"),
        ("*.exa_mple.com", "holds characters no host name may"),
        ("*.-bad.com", "holds characters no host name may"),
        ("mü*.de", "beside '*' or '?' only a-z"),
        ("*_x.com", "beside '*' or '?' only a-z"),
        ("*.a b", "only host name characters"),
        ("[*.example.com]", "only host name characters"),
        ("*:80", "only host name characters"),
        ("*." + "x" * 64, "label longer than 63"),
        ("*.xn--zz.com", "label 'xn--zz'"),
        # networks
        ("192.0.2.7/24", "host bits set (the network is 192.0.2.0/24)"),
        ("2001:db8::1/32", "host bits set (the network is 2001:db8::/32)"),
        ("192.0.2.0/33", "not an IPv4 or IPv6 network"),
        ("2001:db8::/129", "not an IPv4 or IPv6 network"),
        ("192.0.2.0/255.255.255.0", "address/prefix-length"),
        ("192.0.2.0/", "address/prefix-length"),
        ("192.0.2.0/ 24", "address/prefix-length"),
        ("192.0.2.0/+24", "address/prefix-length"),
        ("192.0.2.0/0024", "address/prefix-length"),
        ("example.com/24", "not an IPv4 or IPv6 network"),
        ("192.000.2.0/24", "not an IPv4 or IPv6 network"),
        ("[IPv6:192.0.2.0]/24", "'IPv6:' before an IPv4 address"),
        ("fe80::%eth0/64", "scope ids"),
        ("/24", "not an IPv4 or IPv6 network"),
    ],
)
def test_invalid_texts(text: str, reason: str) -> None:
    with pytest.raises(InvalidRuleError) as caught:
        parse_rule(text)
    assert reason in caught.value.reason
    message = str(caught.value)
    assert "\n" not in message and message.startswith("invalid rule ")
    assert caught.value.value == text


def test_invalid_rule_error_is_an_invalid_domain_error_exported_from_the_root() -> None:
    assert issubclass(InvalidRuleError, InvalidDomainError)
    assert issubclass(InvalidRuleError, fedtrack_redis.FedtrackError)
    assert {"InvalidRuleError", "InvalidDomainError", "Rule", "parse_rule"} <= set(
        fedtrack_redis.__all__
    )
    with pytest.raises(InvalidDomainError):
        parse_rule("192.0.2.7/24")


def test_not_a_string() -> None:
    with pytest.raises(InvalidRuleError, match="not a string"):
        parse_rule(42)  # type: ignore[arg-type]


def test_length_limit_of_255_characters() -> None:
    # A glob (names stop at 253 octets; a glob's text can be longer than any name it covers).
    label = "a" * 60
    at_limit = "*" + ("." + label) * 4 + "." + "b" * (MAX_RULE_LENGTH - 1 - 61 * 4 - 1)
    assert len(at_limit) == MAX_RULE_LENGTH
    assert parse_rule(at_limit).text == at_limit
    with pytest.raises(InvalidRuleError, match="longer than 255 characters"):
        parse_rule(at_limit + "b")
    # Surrounding blanks do not count; the canonical text does (IDNA can lengthen it).
    assert parse_rule("  " + at_limit + "  ").text == at_limit
    long_unicode = "*." + ".".join(["ü" * 20] * 10)
    assert len(long_unicode) < MAX_RULE_LENGTH
    with pytest.raises(InvalidRuleError, match="once encoded"):
        parse_rule(long_unicode)
    # A .suffix of the longest valid name fits.
    longest = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert parse_rule("." + longest).text == "." + longest


def test_idna_equivalent_spellings_are_one_rule() -> None:
    assert parse_rule(".münchen.de") == parse_rule(".xn--mnchen-3ya.de")
    assert parse_rule("*.münchen.DE") == parse_rule("*.xn--mnchen-3ya.de")
    assert parse_rule("MÜNCHEN.de") == parse_rule("xn--mnchen-3ya.de")


def test_literal_count() -> None:
    assert literal_count("*.example.com") == 12
    assert literal_count("ex*a?ple.com") == 10
    assert literal_count("*") == 0


def test_rule_defaults_and_every_field() -> None:
    rule = parse_rule("example.com")
    assert [f.name for f in dataclasses.fields(Rule)] == [
        "text",
        "kind",
        "effect",
        "reason",
        "private_comment",
        "created_by",
        "source",
        "created_at",
        "updated_at",
        "expires_at",
    ]
    assert (rule.effect, rule.reason, rule.private_comment, rule.created_by) == (
        "exception",
        "",
        "",
        None,
    )
    assert (rule.source, rule.created_at, rule.updated_at, rule.expires_at) == (
        "manual",
        0,
        None,
        None,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.effect = "block"  # type: ignore[misc]


def test_make_rule_effects_and_expiry() -> None:
    rule = make_rule(" .Example.com ", effect="BLOCK", reason="spam", expires_at=100)
    assert (rule.text, rule.kind, rule.effect, rule.reason) == (
        ".example.com",
        "subdomains",
        "block",
        "spam",
    )
    assert not rule.expired(99.9) and rule.expired(100) and rule.expired(101)
    assert not make_rule("a.example").expired(1e12)
    assert parse_effect(" Allow ") == "allow"
    with pytest.raises(InvalidRuleError, match="effect 'blok' is not one of"):
        make_rule("a.example", effect="blok")
    with pytest.raises(InvalidRuleError, match="unknown kind"):
        Rule("a.example", "regex")


_label = st.text(alphabet="abcxyz019-", min_size=1, max_size=8).filter(
    lambda s: not s.startswith("-") and not s.endswith("-")
)


@given(st.lists(_label, min_size=1, max_size=4), st.sampled_from(["", ".", "*.", "?"]))
def test_canonical_text_is_stable(labels: list[str], prefix: str) -> None:
    text = prefix + ".".join(labels)
    try:
        rule = parse_rule(text.upper())
    except InvalidRuleError:
        return  # e.g. an all-digit name is not a host name
    assert parse_rule(rule.text) == rule
    assert rule.text == rule.text.lower()
