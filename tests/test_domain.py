"""normalize_domain: the cases of the original package, the rules of docs/policy.md,
and properties (unit)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtrack_redis import InvalidDomainError, normalize_domain
from fedtrack_redis.domain import DomainMemo


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Example.COM", "example.com"),
        ("  example.com  ", "example.com"),
        ("example.com.", "example.com"),
        ("[1.2.3.4]", "1.2.3.4"),
        ("1.2.3.4", "1.2.3.4"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[IPv6:2001:DB8:0:0::1]", "2001:db8::1"),
        ("[ipv6:2001:0db8::0001]", "2001:db8::1"),
        ("2001:db8:0::1", "2001:db8::1"),
        ("[IPv6:::ffff:1.2.3.4]", "1.2.3.4"),
        ("[::ffff:102:304]", "1.2.3.4"),
        ("[MIXED.Case]", "mixed.case"),
        ("münchen.de", "xn--mnchen-3ya.de"),
        ("MÜNCHEN.DE", "xn--mnchen-3ya.de"),
        ("xn--mnchen-3ya.de", "xn--mnchen-3ya.de"),
        ("localhost", "localhost"),
        ("a-b.example", "a-b.example"),
    ],
)
def test_normalizes(raw: str, expected: str) -> None:
    assert normalize_domain(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("[]", "empty"),
        (".", "empty"),
        ("a..example", "empty label"),
        ("x" * 64 + ".example", "label longer than 63"),
        (".".join(["a" * 63] * 4), "longer than 253"),
        ("exa mple.com", "not a valid host name"),
        ("exa{mple}.com", "not a valid host name"),
        ("spam.example\r\nRCPT", "not a valid host name"),
        ("a/b.example", "not a valid host name"),
        ("-lead.example", "holds characters"),
        ("under_score.example", "not a valid host name"),
        ("1.2.3.999", "not a valid IPv4"),
        ("[IPv6:not-an-address]", "not a valid IPv6"),
        ("[IPv6:fe80::1%eth0]", "scope"),
        ("example.com..", "empty label"),
    ],
)
def test_rejects_with_a_named_error(raw: str, reason: str) -> None:
    with pytest.raises(InvalidDomainError, match=re.escape(reason)):
        normalize_domain(raw)


def test_rejects_non_strings() -> None:
    with pytest.raises(InvalidDomainError):
        normalize_domain(None)  # type: ignore[arg-type]


def test_spellings_of_one_name_agree() -> None:
    spellings = ["München.DE.", " [münchen.de] ", "xn--mnchen-3ya.de", "XN--MNCHEN-3YA.DE."]
    assert {normalize_domain(s) for s in spellings} == {"xn--mnchen-3ya.de"}
    assert normalize_domain("[IPv6:::FFFF:1.2.3.4]") == normalize_domain("[1.2.3.4]")


def test_memo_matches_normalize_and_stays_bounded() -> None:
    memo = DomainMemo(max_size=10)
    for index in range(25):
        assert memo.require(f"Host{index}.Example") == f"host{index}.example"
    assert memo.get("bad domain") is None
    with pytest.raises(InvalidDomainError):
        memo.require("bad domain")
    assert len(memo._cache) <= 10


ALLOWED = re.compile(r"^[a-z0-9.:-]+$")


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80))
def test_any_string_gives_a_name_or_invalid_domain_error(raw: str) -> None:
    try:
        name = normalize_domain(raw)
    except InvalidDomainError:
        return
    assert ALLOWED.match(name), name
    assert normalize_domain(name) == name  # a fixed point
    assert len(name) <= 253


label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(label, min_size=2, max_size=4))
def test_case_brackets_and_trailing_dot_give_one_name(labels: list[str]) -> None:
    name = ".".join(labels)
    if re.fullmatch(r"[0-9.]+", name):
        return  # all-digit names are IPv4 literals, covered elsewhere
    try:
        canonical = normalize_domain(name)
    except InvalidDomainError:
        return  # e.g. "xn--" labels that are not valid punycode
    for spelling in (name.upper(), f"[{name}]", f"{name}.", f"  {name.title()}. "):
        assert normalize_domain(spelling) == canonical


@settings(max_examples=200, deadline=None)
@given(st.ip_addresses())
def test_ip_literals_in_every_spelling(address: object) -> None:
    text = str(address)
    canonical = normalize_domain(text)
    if ":" in text:
        assert normalize_domain(f"[IPv6:{text.upper()}]") == canonical
        assert normalize_domain(f"[{text}]") == canonical
    else:
        assert normalize_domain(f"[{text}]") == canonical
        assert normalize_domain(f"[IPv6:::ffff:{text}]") == canonical


@settings(max_examples=200, deadline=None)
@given(
    st.text(
        alphabet=st.characters(min_codepoint=0xC0, max_codepoint=0x24F), min_size=1, max_size=10
    )
)
def test_unicode_and_punycode_are_one_domain(word: str) -> None:
    try:
        unicode_name = normalize_domain(f"{word}.example")
    except InvalidDomainError:
        return
    assert normalize_domain(unicode_name) == unicode_name
    assert unicode_name.endswith(".example")
