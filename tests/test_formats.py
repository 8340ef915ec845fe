"""Rule list import and export: Mastodon, GoToSocial, plain text and the project's own CSV
and JSON, with every bad entry named by its line (unit, no servers)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtrack_redis.errors import InvalidRuleError
from fedtrack_redis.policy.formats import (
    FORMATS,
    InvalidEntry,
    detect_format,
    mastodon_expressible,
    parse_import,
    write_fedtrack_csv,
    write_fedtrack_json,
    write_mastodon_csv,
    write_text,
)
from fedtrack_redis.policy.rules import EFFECTS, Rule, make_rule
from rule_samples import GOTOSOCIAL_CSV, GOTOSOCIAL_JSON, MASTODON_ALLOWS, MASTODON_BLOCKS


def texts(rules: list[Rule]) -> list[tuple[str, str, str]]:
    return [(rule.text, rule.effect, rule.reason) for rule in rules]


def test_mastodon_block_csv() -> None:
    assert detect_format(MASTODON_BLOCKS, "domain_blocks.csv") == "mastodon-csv"
    result = parse_import(MASTODON_BLOCKS)
    assert result.format == "mastodon-csv" and result.invalid == []
    assert texts(result.rules) == [
        (".spam.example", "block", 'Spam, scams, and "free" crypto'),
        (".loud.example", "block", "Harassment"),
        (".media.example", "allow", ""),
        (".multi.example", "block", "first line\nsecond line"),
        (".xn--mnchen-3ya.example", "block", ""),
    ]
    assert all(rule.kind == "subdomains" and rule.source == "import" for rule in result.rules)


def test_mastodon_block_csv_invalid_lines_are_named() -> None:
    content = MASTODON_BLOCKS + (
        "bad..example,suspend,false,false,,false\n"  # line 9
        "\n"
        "exa***le.com,suspend,false,false,,true\n"  # line 11: obfuscated
        "ok.example,nuke,false,false,,false\n"  # line 12
        ",suspend,false,false,,false\n"  # line 13
        "spam.example,silence,false,false,other words,false\n"  # line 14: differs
        "loud.example,silence,false,false,Harassment,false\n"  # line 15: identical
    )
    result = parse_import(content)
    assert len(result.rules) == 5
    assert [entry.line for entry in result.invalid] == [8, 10, 11, 12, 13]
    reasons = [str(entry) for entry in result.invalid]
    assert reasons[0].startswith("line 8: invalid rule 'bad..example': empty label")
    assert "obfuscated" in reasons[1]
    assert "unknown severity 'nuke'" in reasons[2]
    assert "empty domain" in reasons[3]
    assert "differs from the same rule on line 2" in reasons[4]
    assert all("\n" not in reason for reason in reasons)


def test_mastodon_allow_csv() -> None:
    assert detect_format(MASTODON_ALLOWS) == "mastodon-allow-csv"
    result = parse_import(MASTODON_ALLOWS)
    assert [(r.text, r.kind, r.effect) for r in result.rules] == [
        ("friend.example", "exact", "allow"),
        ("xn--mnchen-3ya.de", "exact", "allow"),
    ]


def test_gotosocial_json() -> None:
    assert detect_format(GOTOSOCIAL_JSON) == "gotosocial-json"
    result = parse_import(GOTOSOCIAL_JSON)
    assert texts(result.rules) == [
        (".bumfaces.net", "block", "big jerks"),
        (".peepee.poopoo", "block", "harassment, daily"),
        (".nothanks.com", "block", ""),
    ]
    allows = parse_import(GOTOSOCIAL_JSON, effect="allow")
    assert {rule.effect for rule in allows.rules} == {"allow"}


def test_gotosocial_json_invalid_entries_are_named_by_entry() -> None:
    content = json.dumps(
        [
            {"domain": "ok.example"},
            "just a string",
            {"public_comment": "no domain"},
            {"domain": "bad..example"},
            {"domain": "x.example", "public_comment": 5},
        ]
    )
    result = parse_import(content, format="gotosocial-json")
    assert [rule.text for rule in result.rules] == [".ok.example"]
    assert [str(entry).split(":")[0] for entry in result.invalid] == [
        "line 2",
        "line 3",
        "line 4",
        "line 5",
    ]
    broken = parse_import('[{"domain": "a.example"},\n  {"domain": ]', format="gotosocial-json")
    assert broken.rules == [] and broken.invalid[0].line == 2
    assert "not JSON" in broken.invalid[0].reason
    assert parse_import('{"domain": "a"}', format="gotosocial-json").invalid == [
        InvalidEntry(1, "expected a list of rules")
    ]


def test_mastodon_public_block_list_json_is_read_the_mastodon_way() -> None:
    content = json.dumps(
        [
            {"domain": "a.example", "digest": "x", "severity": "silence", "comment": "rude"},
            {"domain": "b.example", "digest": "y", "severity": "noop", "comment": ""},
            {"domain": "c*.example", "digest": "z", "severity": "suspend", "comment": ""},
        ]
    )
    result = parse_import(content)
    assert texts(result.rules) == [(".a.example", "block", "rude"), (".b.example", "allow", "")]
    assert [entry.line for entry in result.invalid] == [3]


def test_gotosocial_csv() -> None:
    assert detect_format(GOTOSOCIAL_CSV) == "mastodon-csv"  # the same shape
    blocks = parse_import(GOTOSOCIAL_CSV, format="gotosocial-csv")
    assert texts(blocks.rules) == [
        (".bumfaces.net", "block", "big jerks"),
        (".peepee.poopoo", "block", "harassment"),
        (".nothanks.com", "block", ""),
    ]
    for fmt in ("gotosocial-csv", None):  # an allow export: suspend rows, meaning allow
        allows = parse_import(GOTOSOCIAL_CSV, format=fmt, effect="allow")
        assert [(r.text, r.effect) for r in allows.rules] == [
            (".bumfaces.net", "allow"),
            (".peepee.poopoo", "allow"),
            (".nothanks.com", "allow"),
        ]


def test_plain_text() -> None:
    content = (
        "# our blocklist\n"
        "example.com\n"
        "  .Spam.Example   # with its subdomains\n"
        "\n"
        "*.tracker.example\n"
        "192.0.2.0/24\n"
        "192.0.2.7/24\n"  # line 7
        "bad..example # broken\n"  # line 8
        "EXAMPLE.com\n"  # the same rule again: kept once
    )
    assert detect_format(content, "blocks.txt") == "text"
    result = parse_import(content)
    assert [(r.text, r.kind, r.effect) for r in result.rules] == [
        ("example.com", "exact", "exception"),
        (".spam.example", "subdomains", "exception"),
        ("*.tracker.example", "glob", "exception"),
        ("192.0.2.0/24", "network", "exception"),
    ]
    assert [entry.line for entry in result.invalid] == [7, 8]
    assert "host bits set" in result.invalid[0].reason
    assert {r.effect for r in parse_import(content, effect="block").rules} == {"block"}
    # A text file whose first line is a comment, and a file without a header.
    assert detect_format("#domain\nexample.com\n", "allow.txt") == "text"
    assert detect_format("example.com\nexample.org\n", "blocked_domains.csv") == "text"


def test_fedtrack_csv() -> None:
    content = (
        "#domain,#effect,#reason,#expires_at,#created_at\n"
        'example.com,block,"spam, lots",1900000000,1700000000\n'
        ".example.org,,,,\n"
        "*.x.example,allow,fine,,1700000001\n"
        "bad.example,blok,,,\n"  # line 5
        "late.example,block,,soon,\n"  # line 6
    )
    assert detect_format(content) == "fedtrack-csv"
    result = parse_import(content)
    assert [(r.text, r.effect, r.reason, r.expires_at, r.created_at) for r in result.rules] == [
        ("example.com", "block", "spam, lots", 1_900_000_000, 1_700_000_000),
        (".example.org", "exception", "", None, 0),
        ("*.x.example", "allow", "fine", None, 1_700_000_001),
    ]
    assert [entry.line for entry in result.invalid] == [5, 6]
    assert "effect 'blok'" in result.invalid[0].reason
    assert "not unix seconds" in result.invalid[1].reason
    again = parse_import(write_fedtrack_csv(result.rules))
    assert again.rules == result.rules and again.invalid == []


def test_fedtrack_json_round_trip_is_lossless() -> None:
    rules = [
        Rule(
            "example.com",
            "exact",
            "block",
            "spam",
            "ticket 42",
            "cli:ann@host",
            "manual",
            1_700_000_000,
            1_700_000_500,
            1_900_000_000,
        ),
        make_rule(".münchen.de", effect="allow", source="import:mastodon", created_at=5),
        make_rule("*.x.example", reason='quotes " and, commas\nand lines'),
        make_rule("2001:db8::/32", created_by=None, updated_at=7),
    ]
    exported = write_fedtrack_json(rules)
    assert detect_format(exported, "rules.json") == "fedtrack-json"
    result = parse_import(exported)
    assert result.rules == rules and result.invalid == []
    document = json.loads(exported)
    assert document["format"] == "fedtrack-rules" and len(document["rules"]) == 4
    assert set(document["rules"][0]) == set(Rule.__dataclass_fields__)
    bare = parse_import(json.dumps(document["rules"]))  # a bare list is read too
    assert bare.format == "fedtrack-json" and bare.rules == rules


def test_fedtrack_json_invalid_entries() -> None:
    content = json.dumps(
        {
            "format": "fedtrack-rules",
            "rules": [
                {"text": "ok.example"},
                {"text": "ok2.example", "kind": "glob"},
                {"text": "ok3.example", "created_at": "yesterday"},
                {"text": "ok4.example", "expires_at": True},
                {"text": 7},
                {"text": "ok5.example", "effect": "nope"},
            ],
        }
    )
    result = parse_import(content)
    assert [rule.text for rule in result.rules] == ["ok.example"]
    assert [entry.line for entry in result.invalid] == [2, 3, 4, 5, 6]
    assert "does not match" in result.invalid[0].reason


def test_mastodon_csv_writer() -> None:
    rules = [
        make_rule(".spam.example", effect="block", reason="spam, scams"),
        make_rule(".listed.example"),
        make_rule(".friend.example", effect="allow"),
        make_rule("exact.example", effect="block"),
        make_rule("*.glob.example"),
        make_rule("192.0.2.0/24"),
    ]
    written = write_mastodon_csv(rules)
    assert written.splitlines()[0] == (
        "#domain,#severity,#reject_media,#reject_reports,#public_comment,#obfuscate"
    )
    result = parse_import(written)
    assert texts(result.rules) == [
        (".spam.example", "block", "spam, scams"),
        (".listed.example", "block", ""),
        (".friend.example", "allow", ""),
    ]
    assert [mastodon_expressible(rule) for rule in rules] == [True] * 3 + [False] * 3


def test_text_writer_and_format_arguments() -> None:
    rules = [make_rule("a.example"), make_rule(".b.example")]
    assert parse_import(write_text(rules), source="manual").rules == rules
    with pytest.raises(ValueError, match="unknown rule list format"):
        parse_import("a.example", format="yaml")
    with pytest.raises(InvalidRuleError):
        parse_import("a.example", effect="maybe")
    assert "text" in FORMATS and len(FORMATS) == 7
    assert parse_import("\ufeff#domain\na.example\n").format == "mastodon-allow-csv"
    assert parse_import("", format="mastodon-csv").rules == []
    headerless = parse_import("a.example,suspend\n", format="mastodon-csv")
    assert headerless.invalid == [InvalidEntry(1, "no #domain header")]


_reasons = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20)
_times = st.one_of(st.none(), st.integers(0, 2**40))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a.example", ".b.example", "*.c.example", "10.0.0.0/8", "d.example"]),
            st.sampled_from(EFFECTS),
            _reasons,
            _reasons,
            st.one_of(st.none(), _reasons),
            _times,
            _times,
        ),
        max_size=5,
        unique_by=lambda t: t[0],
    )
)
def test_json_round_trip_property(
    entries: list[tuple[str, str, str, str, str | None, int | None, int | None]],
) -> None:
    rules = [
        make_rule(
            text,
            effect=effect,
            reason=reason,
            private_comment=private,
            created_by=by,
            updated_at=updated,
            expires_at=expires,
            created_at=3,
        )
        for text, effect, reason, private, by, updated, expires in entries
    ]
    assert parse_import(write_fedtrack_json(rules)).rules == rules
