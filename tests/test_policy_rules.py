"""The rule semantics end to end: rules added through a real store (PostgreSQL and Redis),
decided by `check_federation_policy` and explained by `explain_federation_policy` in the
process that made them and in another store that learnt them through Redis."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import pytest

from fedtrack_redis import PolicyStore, check_federation_policy
from fedtrack_redis.check import explain_federation_policy
from servers import wait_for


@pytest.fixture
def pair(
    migrated_postgres_url: str, redis_url: str, namespace: str
) -> Iterator[tuple[PolicyStore, PolicyStore]]:
    """A store that changes the rules and one that only follows them (through Redis)."""
    with (
        PolicyStore(migrated_postgres_url, redis_url, namespace=namespace) as writer,
        PolicyStore(
            migrated_postgres_url, redis_url, namespace=namespace, resync_interval=0.2
        ) as reader,
    ):
        yield writer, reader


Allowed = Callable[[str, str], bool]


@pytest.fixture
def allowed(pair: tuple[PolicyStore, PolicyStore]) -> Allowed:
    """`check_federation_policy` in both stores, once the reader caught up; they agree."""
    writer, reader = pair

    def check(domain: str, mode: str = "") -> bool:
        wait_for(lambda: reader.version == writer.version, 5, "the reader caught up")
        here = check_federation_policy(domain, mode, store=writer)
        there = check_federation_policy(domain, mode, store=reader)
        assert here == there, f"{domain}: the two processes disagree"
        return here

    return check


def test_subdomain_rules_cover_label_boundaries_only(
    pair: tuple[PolicyStore, PolicyStore], allowed: Allowed
) -> None:
    writer, _ = pair
    writer.add_rule(".example.com")
    assert not allowed("example.com")
    assert not allowed("a.b.example.com")
    assert not allowed("A.B.EXAMPLE.COM.")
    assert allowed("badexample.com")
    assert allowed("example.com.evil.net")


def test_glob_semantics(pair: tuple[PolicyStore, PolicyStore], allowed: Allowed) -> None:
    writer, _ = pair
    writer.add_rule("*.example.com")
    writer.add_rule("mx?.example.net")
    assert allowed("example.com")  # '*.' needs a label before the dot
    assert not allowed("a.example.com")
    assert not allowed("a.b.example.com")  # '*' runs over dots
    assert not allowed("mx1.example.net")
    assert allowed("mx12.example.net")  # '?' is exactly one character
    assert allowed("mx.example.net")


def test_networks_over_ipv4_ipv6_and_mapped_literals(
    pair: tuple[PolicyStore, PolicyStore], allowed: Allowed
) -> None:
    writer, _ = pair
    writer.add_rule("192.0.2.0/24")
    writer.add_rule("[IPv6:2001:DB8::]/32")
    writer.add_rule("*")  # a glob: it never matches address literals
    writer.add_rule("10.0.0.0/8", effect="allow")
    assert not allowed("[192.0.2.7]")
    assert not allowed("192.0.2.255")
    assert not allowed("[IPv6:::ffff:192.0.2.7]")
    assert not allowed("[IPv6:2001:db8:1::25]")
    assert allowed("[192.0.3.1]")
    assert allowed("[IPv6:2001:db9::1]")
    assert not allowed("any.example")  # the glob covers every name
    assert allowed("[10.1.2.3]", "REJECT")
    assert writer.has_rule("2001:db8::/32")
    assert writer.has_rule("[::ffff:192.0.2.0]/120")  # the mapped spelling of the network


def test_specificity_order_exact_suffix_network_glob(
    pair: tuple[PolicyStore, PolicyStore], allowed: Allowed
) -> None:
    writer, _ = pair
    writer.add_rule(".example.org", effect="block")
    writer.add_rule(".mail.example.org", effect="allow")
    writer.add_rule("smtp.mail.example.org", effect="block")
    writer.add_rule("*.mail.example.org", effect="block")  # a glob loses to any suffix rule
    assert not allowed("www.example.org")
    assert allowed("in.mail.example.org")  # the longer suffix decides
    assert not allowed("smtp.mail.example.org")  # exact decides
    writer.add_rule("*.x.example.net", effect="allow")
    writer.add_rule("*.example.net", effect="block")
    assert allowed("a.x.example.net")  # the glob with more literal characters
    assert not allowed("a.y.example.net")
    writer.add_rule("198.51.100.0/24", effect="block")
    writer.add_rule("198.51.100.128/25", effect="allow")
    assert allowed("[198.51.100.200]")  # the longest prefix
    assert not allowed("[198.51.100.20]")
    decision = explain_federation_policy("smtp.mail.example.org", writer)
    assert decision.rule == "smtp.mail.example.org"
    assert decision.matched == (
        "smtp.mail.example.org",
        ".mail.example.org",
        ".example.org",
        "*.mail.example.org",
    )


def test_block_wins_a_tie_between_equally_specific_globs(
    pair: tuple[PolicyStore, PolicyStore], allowed: Allowed
) -> None:
    writer, _ = pair
    writer.add_rule("mx*.example.com", effect="allow")
    writer.add_rule("*mx.example.com", effect="block")  # as many literal characters
    assert not allowed("mx1mx.example.com")
    decision = explain_federation_policy("mx1mx.example.com", writer)
    assert decision.rule == "*mx.example.com"
    assert set(decision.matched) == {"mx*.example.com", "*mx.example.com"}
    assert allowed("mx1.example.com")


def test_fixed_effects_hold_in_both_modes_and_exceptions_follow_the_mode(
    pair: tuple[PolicyStore, PolicyStore], allowed: Allowed
) -> None:
    writer, _ = pair
    writer.add_rule("blocked.example", effect="block")
    writer.add_rule("allowed.example", effect="allow")
    writer.add_rule("listed.example")  # exception, the original's rule
    for mode in ("ACCEPT", "REJECT"):
        writer.set_policy(mode)
        assert not allowed("blocked.example"), mode
        assert allowed("allowed.example"), mode
        assert not allowed("blocked.example", mode)
        assert allowed("allowed.example", mode)
    assert not allowed("listed.example", "ACCEPT")
    assert allowed("listed.example", "REJECT")
    assert allowed("other.example", "ACCEPT")
    assert not allowed("other.example", "REJECT")


def test_under_an_unknown_mode_block_and_allow_rules_still_apply(
    pair: tuple[PolicyStore, PolicyStore], allowed: Allowed, caplog: pytest.LogCaptureFixture
) -> None:
    writer, _ = pair
    writer.add_rule("blocked.example", effect="block")
    writer.add_rule("listed.example")
    with caplog.at_level(logging.WARNING, logger="fedtrack_redis.policy"):
        assert not allowed("blocked.example", "SOMETIMES")
        assert allowed("listed.example", "SOMETIMES")
        assert allowed("other.example", "SOMETIMES")
    assert "unknown federation policy 'SOMETIMES'" in caplog.text
    decision = explain_federation_policy("listed.example", writer, policy="sometimes")
    assert (decision.allowed, decision.rule) == (True, None)
    assert decision.matched == ("listed.example",)


def test_the_federation_switch_and_the_local_domain_come_first(
    pair: tuple[PolicyStore, PolicyStore], allowed: Allowed
) -> None:
    writer, reader = pair
    writer.add_rule("friend.example", effect="allow")
    writer.add_rule(".mail.example", effect="block")
    writer.set_enabled(False)
    assert not allowed("friend.example")
    assert not allowed("friend.example", "REJECT")
    for store in (writer, reader):
        assert check_federation_policy("mail.example", local_domain="MAIL.example", store=store)
    decision = explain_federation_policy("friend.example", writer)
    assert (decision.allowed, decision.rule) == (False, None)
    assert decision.reason == "federation is disabled cluster-wide"
    assert decision.matched == ("friend.example",)
    local = explain_federation_policy("mail.example", writer, local_domain="mail.example")
    assert (local.allowed, local.rule, local.matched) == (True, None, (".mail.example",))
    writer.set_enabled(True)
    assert allowed("friend.example")
    assert not allowed("x.mail.example")


def test_explain_names_the_deciding_rule_and_the_mode_default(
    pair: tuple[PolicyStore, PolicyStore],
) -> None:
    writer, reader = pair
    writer.add_rule(".spam.example", effect="block", reason="waves of phishing")
    writer.add_rule("ok.spam.example", effect="allow")
    wait_for(lambda: reader.version == writer.version, 5, "the reader caught up")
    for store in (writer, reader):
        refused = explain_federation_policy("www.spam.example", store)
        assert (refused.allowed, refused.rule, refused.matched) == (
            False,
            ".spam.example",
            (".spam.example",),
        )
        assert refused.reason == "blocked by a block rule"
        assert refused.matched_rules[0].reason == "waves of phishing"
        exempt = explain_federation_policy("OK.spam.example", store)
        assert (exempt.allowed, exempt.rule) == (True, "ok.spam.example")
        assert exempt.matched == ("ok.spam.example", ".spam.example")
        nothing = explain_federation_policy("ham.example", store, policy="reject")
        assert (nothing.allowed, nothing.rule, nothing.matched) == (False, None, ())
        assert nothing.reason == "REJECT policy, no rule matches"


def test_an_expired_rule_is_listed_but_never_matches(
    pair: tuple[PolicyStore, PolicyStore], allowed: Allowed
) -> None:
    writer, reader = pair
    expires = int(time.time()) + 2
    writer.add_rule(".brief.example", effect="block", expires_at=expires)
    assert not allowed("x.brief.example")
    wait_for(lambda: time.time() >= expires + 1, 5, "the rule's expiry passed")
    assert allowed("x.brief.example")  # no leader here: only the processes' clocks
    for store in (writer, reader):
        assert store.has_rule(".brief.example")
        assert [rule.text for rule in store.rules()] == [".brief.example"]
        assert explain_federation_policy("x.brief.example", store).matched == ()
