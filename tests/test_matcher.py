"""Matcher: precedence, glob and network semantics, effects and modes, expiry, derivation,
and a property test against a plain loop over every rule (unit, no servers)."""

from __future__ import annotations

import fnmatch
import ipaddress
import math

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from fedtrack_redis import normalize_domain
from fedtrack_redis.errors import InvalidRuleError
from fedtrack_redis.policy.matcher import Matcher, rule_allows
from fedtrack_redis.policy.rules import EFFECTS, Rule, is_address, literal_count, make_rule

NOW = 1_700_000_000.0


def matcher(*texts: str, effect: str = "exception") -> Matcher:
    return Matcher.build([make_rule(text, effect=effect) for text in texts], NOW)


def decided(m: Matcher, raw: str) -> str | None:
    rule = m.decide(normalize_domain(raw))
    return rule.text if rule else None


# -- the plain reference: every rule, in precedence order ----------------------------------

_KIND_ORDER = {"exact": 0, "subdomains": 1, "network": 2, "glob": 3}
_EFFECT_ORDER = {"block": 0, "exception": 1, "allow": 2}


def _specificity(rule: Rule) -> int:
    if rule.kind == "subdomains":
        return len(rule.text)
    if rule.kind == "network":
        return ipaddress.ip_network(rule.text).prefixlen
    if rule.kind == "glob":
        return literal_count(rule.text)
    return 0


def _covers(rule: Rule, name: str) -> bool:
    address = is_address(name)
    if rule.kind == "exact":
        return rule.text == name
    if rule.kind == "subdomains":
        return not address and (name == rule.text[1:] or name.endswith(rule.text))
    if rule.kind == "network":
        return address and ipaddress.ip_address(name) in ipaddress.ip_network(rule.text)
    return not address and fnmatch.fnmatchcase(name, rule.text)


def reference_matches(rules: list[Rule], name: str, now: float) -> list[Rule]:
    live = [rule for rule in rules if not rule.expired(now) and _covers(rule, name)]
    return sorted(
        live,
        key=lambda r: (_KIND_ORDER[r.kind], -_specificity(r), _EFFECT_ORDER[r.effect], r.text),
    )


# -- precedence and kinds --------------------------------------------------------------------


def test_subdomains_on_label_boundaries() -> None:
    m = matcher(".example.com")
    assert decided(m, "example.com") == ".example.com"
    assert decided(m, "a.example.com") == ".example.com"
    assert decided(m, "a.b.example.com") == ".example.com"
    assert decided(m, "A.B.Example.COM.") == ".example.com"
    assert decided(m, "badexample.com") is None
    assert decided(m, "example.com.evil") is None
    assert decided(m, "com") is None


def test_exact_covers_only_the_name() -> None:
    m = matcher("example.com")
    assert decided(m, "example.com") == "example.com"
    assert decided(m, "a.example.com") is None


def test_glob_semantics() -> None:
    m = matcher("*.example.com")
    assert decided(m, "a.example.com") == "*.example.com"
    assert decided(m, "a.b.example.com") == "*.example.com"  # * runs over dots
    assert decided(m, "example.com") is None
    assert decided(m, "a.example.com.evil") is None  # the whole name must match
    assert decided(m, "A.EXAMPLE.COM") == "*.example.com"  # case-insensitive
    q = matcher("mx?.example.com")
    assert decided(q, "mx1.example.com") == "mx?.example.com"
    assert decided(q, "mx.example.com") is None
    assert decided(q, "mx12.example.com") is None
    assert decided(matcher("a?b.example"), "a.b.example") == "a?b.example"  # ? may be a dot
    middle = matcher("mail*relay.example")
    assert decided(middle, "mailrelay.example") == "mail*relay.example"
    assert decided(middle, "mail.eu.relay.example") == "mail*relay.example"
    assert decided(middle, "relay.example") is None
    free = matcher("*spam*")
    assert decided(free, "nospamhere.example") == "*spam*"
    assert decided(free, "ham.example") is None
    assert decided(matcher("*.münchen.de"), "www.MÜNCHEN.de") == "*.xn--mnchen-3ya.de"


def test_globs_never_match_address_literals() -> None:
    m = matcher("*", "1.2.3.*", "?.2.3.4", "*.4")
    assert m.decide("1.2.3.4") is None
    assert m.decide("2001:db8::1") is None
    assert m.matched("1.2.3.4") == []
    assert m.decide("1.2.3.x") is not None  # a host name that looks like one


def test_networks_over_ipv4_ipv6_and_mapped_literals() -> None:
    m = matcher("192.0.2.0/24", "192.0.0.0/16", "2001:db8::/32", "2001:db8:1::/48")
    assert decided(m, "[192.0.2.7]") == "192.0.2.0/24"
    assert decided(m, "192.0.9.1") == "192.0.0.0/16"
    assert decided(m, "192.1.0.1") is None
    assert decided(m, "[IPv6:2001:db8::1]") == "2001:db8::/32"
    assert decided(m, "[IPv6:2001:DB8:1::5]") == "2001:db8:1::/48"
    assert decided(m, "[IPv6:::ffff:192.0.2.9]") == "192.0.2.0/24"  # mapped → IPv4
    assert decided(m, "[IPv6:2001:db9::1]") is None
    mapped = matcher("::ffff:192.0.2.0/120")
    assert decided(mapped, "192.0.2.200") == "192.0.2.0/24"
    assert decided(mapped, "[IPv6:::ffff:192.0.2.200]") == "192.0.2.0/24"
    assert decided(matcher("::/0"), "1.2.3.4") is None  # IPv6 networks cover IPv6 only
    assert decided(matcher("0.0.0.0/0"), "[IPv6:2001:db8::1]") is None
    assert decided(matcher("0.0.0.0/0"), "example.com") is None


def test_specificity_order() -> None:
    m = matcher(
        "*",
        "*.com",
        "*.example.com",
        "a.*.example.com",
        ".com",
        ".example.com",
        ".b.example.com",
        "a.b.example.com",
    )
    assert m.matched("a.b.example.com") == [
        "a.b.example.com",
        ".b.example.com",
        ".example.com",
        ".com",
        "a.*.example.com",
        "*.example.com",
        "*.com",
        "*",
    ]
    assert m.decide("a.b.example.com") == make_rule("a.b.example.com")
    assert m.matched("z.example.com")[0] == ".example.com"
    assert m.matched("z.org") == ["*"]
    ips = matcher("10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3")
    assert ips.matched("10.1.2.3") == ["10.1.2.3", "10.1.2.0/24", "10.1.0.0/16", "10.0.0.0/8"]
    assert ips.matched(None) == []


def test_ties_among_globs_go_to_block_then_exception() -> None:
    rules = [
        make_rule("a*.example", effect="allow"),
        make_rule("*a.example", effect="block"),
        make_rule("?*.example", effect="exception"),  # one literal fewer
        make_rule("*x.example", effect="exception"),
    ]
    m = Matcher.build(rules, NOW)
    assert m.matched("aa.example") == ["*a.example", "a*.example", "?*.example"]
    assert m.decide("aa.example") == rules[1]
    no_block = Matcher.build([rules[0], make_rule("*a.example", effect="exception")], NOW)
    assert no_block.decide("aa.example") == make_rule("*a.example", effect="exception")
    same = Matcher.build([make_rule("b*.example"), make_rule("*b.example")], NOW)
    assert same.matched("bb.example") == ["*b.example", "b*.example"]  # then by text


def test_effects_fixed_in_either_mode_and_the_unknown_mode() -> None:
    m = Matcher.build(
        [
            make_rule("blocked.example", effect="block"),
            make_rule("allowed.example", effect="allow"),
            make_rule("listed.example", effect="exception"),
        ],
        NOW,
    )
    table = {
        # name: (ACCEPT, REJECT, unknown mode)
        "blocked.example": (False, False, False),
        "allowed.example": (True, True, True),
        "listed.example": (False, True, True),
        "other.example": (True, False, True),
    }
    for name, verdicts in table.items():
        assert tuple(m.allows(name, mode) for mode in ("ACCEPT", "REJECT", "BOGUS")) == verdicts
        rule = m.decide(name)
        assert tuple(rule_allows(rule, mode) for mode in ("ACCEPT", "REJECT", "")) == verdicts
    assert m.allows(None, "ACCEPT") and not m.allows(None, "REJECT")  # invalid: no rule
    assert m.decide(None) is None


def test_expired_rules_never_match() -> None:
    rules = [
        make_rule("gone.example", expires_at=int(NOW) - 1),
        make_rule("now.example", expires_at=int(NOW)),
        make_rule(".soon.example", expires_at=int(NOW) + 10),
        make_rule("*.later.example", expires_at=int(NOW) + 20),
        make_rule("kept.example"),
    ]
    m = Matcher.build(rules, NOW)
    assert m.decide("gone.example") is None and m.decide("now.example") is None
    assert "gone.example" not in m and len(m) == 3
    assert m.next_expiry == NOW + 10
    assert m.decide("a.soon.example") == rules[2]  # cached from here on
    assert m.current(NOW + 9.9) is m  # before the next expiry: nothing to do
    later = m.current(NOW + 10)
    assert later.decide("a.soon.example") is None  # the derived matcher's cache is its own
    assert later.next_expiry == NOW + 20 and len(later) == 2
    assert later.current(NOW + 25).next_expiry == math.inf
    assert later.current(NOW + 25).decide("x.later.example") is None
    assert m.decide("a.soon.example") == rules[2]  # the old matcher is unchanged
    # An expired rule added is no rule; one replacing a live rule removes it.
    assert (
        m.with_added(make_rule("x.example", expires_at=int(NOW)), now=NOW).decide("x.example")
        is None
    )
    replaced = m.with_added(make_rule("kept.example", expires_at=1), now=NOW)
    assert "kept.example" not in replaced


def test_next_expiry_is_a_lower_bound_after_a_removal() -> None:
    m = Matcher.build(
        [
            make_rule("a.example", expires_at=int(NOW) + 5),
            make_rule("b.example", expires_at=int(NOW) + 9),
        ],
        NOW,
    )
    removed = m.with_removed("a.example")
    assert removed.next_expiry <= NOW + 9
    exact = removed.current(NOW + 6)  # nothing expired yet: only the instant is corrected
    assert exact.next_expiry == NOW + 9 and "b.example" in exact


def test_derivations() -> None:
    m = matcher("example.com")
    assert m.with_removed("unknown.example") is m
    assert m.with_added(make_rule("example.com"), now=NOW) is m  # identical: no change
    assert m.with_removed("EXAMPLE.com.").decide("example.com") is None
    with pytest.raises(InvalidRuleError):
        m.with_removed("192.0.2.7/24")
    blocked = m.with_added(make_rule("example.com", effect="block"), now=NOW)
    assert blocked.decide("example.com") == make_rule("example.com", effect="block")
    assert m.decide("example.com") == make_rule("example.com")
    assert m.rules() == [make_rule("example.com")] and m.get("example.com") is not None


def test_a_small_decision_cache_still_answers_right() -> None:
    m = Matcher.build([make_rule(f"n{i}.example") for i in range(50)], NOW, cache_size=4)
    for _ in range(3):
        for i in range(100):
            assert (m.decide(f"n{i}.example") is not None) == (i < 50)


def test_a_long_run_of_single_adds_and_removes() -> None:
    m = Matcher.build([], NOW)
    texts = [f"h{i}.example" if i % 3 else f".s{i}.example" for i in range(3000)]
    for text in texts:
        m = m.with_added(make_rule(text, effect="block"), now=NOW)
    assert len(m) == 3000 and m.decide("x.s3.example") is not None
    for text in texts[::2]:
        m = m.with_removed(text)
    assert len(m) == 1500
    assert all((m.decide(t.lstrip(".")) is not None) == (i % 2 == 1) for i, t in enumerate(texts))


# -- properties --------------------------------------------------------------------------------

_labels = st.sampled_from(["a", "b", "ab", "ba", "x1", "com", "org"])
_names = st.lists(_labels, min_size=1, max_size=4).map(".".join)
_v4 = st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 255)).map(
    lambda t: f"10.{t[0]}.{t[1]}.{t[2]}"
)
_v6 = st.integers(0, 2**20).map(lambda n: str(ipaddress.IPv6Address((0x20010DB8 << 96) + n)))


@st.composite
def _network(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        address = ipaddress.IPv4Address(draw(_v4))
        prefix = draw(st.sampled_from([8, 14, 16, 22, 24, 30, 32]))
    else:
        address = ipaddress.IPv6Address(draw(_v6))
        prefix = draw(st.sampled_from([32, 100, 108, 116, 124, 128]))
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


_glob_token = st.sampled_from(["*", "?", "a", "b", "ab", ".", "com", "x1", "*.", ".*"])
_globs = (
    st.lists(_glob_token, min_size=1, max_size=5)
    .map("".join)
    .filter(lambda t: "*" in t or "?" in t)
)


@st.composite
def _rule(draw: st.DrawFn) -> Rule:
    kind = draw(st.sampled_from(["exact", "subdomains", "glob", "network", "address"]))
    if kind == "exact":
        text = draw(_names)
    elif kind == "subdomains":
        text = "." + draw(_names)
    elif kind == "glob":
        text = draw(_globs)
    elif kind == "network":
        text = draw(_network())
    else:
        text = draw(st.one_of(_v4, _v6))
    expires = draw(st.sampled_from([None, None, int(NOW) - 5, int(NOW), int(NOW) + 5]))
    try:
        return make_rule(text, effect=draw(st.sampled_from(EFFECTS)), expires_at=expires)
    except InvalidRuleError:
        return make_rule("fallback.example")


def _deduplicated(rules: list[Rule]) -> list[Rule]:
    return list({rule.text: rule for rule in rules}.values())


@settings(max_examples=300, deadline=None)
@given(st.lists(_rule(), max_size=40), st.lists(st.one_of(_names, _v4, _v6), max_size=30))
def test_matcher_agrees_with_the_plain_loop(rules: list[Rule], names: list[str]) -> None:
    m = Matcher.build(rules, NOW)
    unique = _deduplicated(rules)
    candidates = names + [
        rule.text.lstrip(".").replace("*", "a").replace("?", "b") for rule in unique
    ]
    for raw in candidates:
        try:
            name = normalize_domain(raw)
        except ValueError:
            continue
        expected = reference_matches(unique, name, NOW)
        event(f"decided by {expected[0].kind if expected else 'no rule'}")
        if len(expected) > 1 and expected[0].kind == expected[1].kind == "glob":
            event("glob over glob")
        assert m.matched(name) == [rule.text for rule in expected], name
        assert m.decide(name) == (expected[0] if expected else None), name
        assert m.decide(name) == (expected[0] if expected else None), name  # cached


@settings(max_examples=150, deadline=None)
@given(
    st.lists(_rule(), max_size=30),
    st.lists(st.tuples(st.booleans(), _rule()), max_size=30),
    st.lists(st.one_of(_names, _v4, _v6), max_size=20),
)
def test_derived_matcher_equals_a_rebuild(
    start: list[Rule], steps: list[tuple[bool, Rule]], names: list[str]
) -> None:
    m = Matcher.build(start, NOW)
    held: dict[str, Rule] = {}
    for rule in start:  # a later rule of the same text wins, expired or not
        held.pop(rule.text, None)
        if not rule.expired(NOW):
            held[rule.text] = rule
    for add, rule in steps:
        if add:
            m = m.with_added(rule, now=NOW)
            held.pop(rule.text, None)
            if not rule.expired(NOW):
                held[rule.text] = rule
        else:
            m = m.with_removed(rule.text)
            held.pop(rule.text, None)
    rebuilt = Matcher.build(held.values(), NOW)
    assert m.rules() == rebuilt.rules() and len(m) == len(rebuilt)
    probes = names + [text.lstrip(".").replace("*", "a").replace("?", "b") for text in held]
    for raw in probes:
        try:
            name = normalize_domain(raw)
        except ValueError:
            continue
        assert m.matched(name) == rebuilt.matched(name), name
        assert m.decide(name) == rebuilt.decide(name), name
