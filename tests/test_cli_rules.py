"""The `fedtrack` CLI's rules v2 against real Redis and PostgreSQL: block/allow with a
reason and an expiry, `rules list` with kind, effect, reason and expiry, `audit`,
`check --explain`, imports of real-shaped lists with --dry-run, --skip-invalid and
--effect, exports in every format with a lossless JSON round trip, and bad input as
exit 2 with one line."""

from __future__ import annotations

import getpass
import json
import socket
import time
from pathlib import Path

import pytest

from cli_helpers import Run, one_error_line
from fedtrack_redis import PolicyStore
from rule_samples import GOTOSOCIAL_CSV, MASTODON_BLOCKS

ACTOR = f"cli:{getpass.getuser()}@{socket.gethostname()}"


def listed(run: Run) -> dict[str, dict[str, object]]:
    code, out, _ = run("rules", "list", "--json")
    assert code == 0
    return {rule["text"]: rule for rule in json.loads(out)["rules"]}


def test_block_with_a_reason_for_seven_days(run: Run) -> None:
    before = int(time.time())
    code, out, _ = run("block", ".spam.example", "--reason", "phishing waves", "--for", "7d")
    assert code == 0
    assert ".spam.example: blocked (subdomains block rule added, until" in out
    rule = listed(run)[".spam.example"]
    assert (rule["kind"], rule["effect"], rule["reason"], rule["created_by"]) == (
        "subdomains",
        "block",
        "phishing waves",
        ACTOR,
    )
    expires = rule["expires_at"]
    assert (
        isinstance(expires, int) and before + 7 * 86400 <= expires <= int(time.time()) + 7 * 86400
    )
    assert run("check", "mail.spam.example")[0] == 3
    assert run("check", "badspam.example")[0] == 0
    code, out, _ = run("rules", "list")
    row = next(line for line in out.splitlines() if ".spam.example" in line)
    for cell in (
        "subdomains",
        "block",
        "phishing waves",
        time.strftime("%Y-%m-%d", time.gmtime(expires)),
    ):
        assert cell in row
    code, out, _ = run("allow", "ok.spam.example", "--comment", "our partner")
    assert "exact allow rule added" in out
    assert run("check", "ok.spam.example")[0] == 0


def test_block_says_when_a_more_specific_rule_still_decides(run: Run) -> None:
    run("allow", "partner.example")
    code, out, _ = run("block", ".partner.example")
    assert code == 0
    assert (
        "note: partner.example is still allowed (allowed by an allow rule partner.example)" in out
    )


def test_rules_add_with_fields_and_list_filters(run: Run) -> None:
    assert run("rules", "add", "*.relay?.example", "10.0.0.0/8", "--effect", "allow")[0] == 0
    assert run("rules", "add", "plain.example")[0] == 0
    rules = listed(run)
    assert {text: (r["kind"], r["effect"]) for text, r in rules.items()} == {
        "*.relay?.example": ("glob", "allow"),
        "10.0.0.0/8": ("network", "allow"),
        "plain.example": ("exact", "exception"),
    }
    _code, out, _ = run("rules", "add", "plain.example", "--reason", "now with a reason")
    assert "0 rule(s) added, 1 updated" in out
    assert listed(run)["plain.example"]["effect"] == "exception"  # kept: not passed
    _, out, _ = run("rules", "list", "--kind", "network", "--json")
    assert [r["text"] for r in json.loads(out)["rules"]] == ["10.0.0.0/8"]
    _, out, _ = run("rules", "list", "--filter", "reason", "--json")
    assert [r["text"] for r in json.loads(out)["rules"]] == ["plain.example"]


def test_audit_lists_changes_with_actor_target_and_since(run: Run) -> None:
    run("block", "a.example", "--reason", "first")
    run("block", "a.example", "--reason", "second")
    run("rules", "remove", "a.example")
    run("policy", "reject")
    code, out, _ = run("audit", "--json")
    assert code == 0
    entries = json.loads(out)["entries"]
    assert [(e["action"], e["target"], e["actor"]) for e in entries] == [
        ("policy", "policy", ACTOR),
        ("remove", "a.example", ACTOR),
        ("update", "a.example", ACTOR),
        ("add", "a.example", ACTOR),
    ]
    assert (entries[2]["before"]["reason"], entries[2]["after"]["reason"]) == ("first", "second")
    code, out, _ = run("audit", "--target", "A.Example", "--json")
    assert [e["action"] for e in json.loads(out)["entries"]] == ["remove", "update", "add"]
    assert json.loads(run("audit", "--since", "1h", "--json")[1])["entries"] == entries
    assert json.loads(run("audit", "--since", "2999-01-01", "--json")[1])["entries"] == []
    code, out, _ = run("audit", "--limit", "2")
    assert code == 0
    assert "reason: 'first' → 'second'" not in out  # only the newest two
    assert "ACCEPT → REJECT" in out


def test_check_explain_lists_every_match(run: Run) -> None:
    run("block", ".example.org", "--reason", "all of it")
    run("allow", "ok.example.org")
    code, out, _ = run("check", "ok.example.org", "--explain")
    assert code == 0
    assert out.splitlines() == [
        "ok.example.org: ALLOWED (allowed by an allow rule ok.example.org; policy ACCEPT)",
        "  deciding: ok.example.org (exact, allow; expires never)",
        "  matches: .example.org (subdomains, block, reason 'all of it'; expires never)",
    ]
    code, out, _ = run("check", "www.example.org", "--json")
    assert code == 3
    assert json.loads(out) == {
        "domain": "www.example.org",
        "allowed": False,
        "policy": "ACCEPT",
        "reason": "blocked by a block rule",
        "rule": ".example.org",
        "matched": [".example.org"],
    }
    assert "no rule matches" in run("check", "ham.example", "--explain")[1]


def test_import_real_shaped_lists_dry_run_then_for_real(run: Run, tmp_path: Path) -> None:
    blocks = tmp_path / "domain_blocks.csv"
    blocks.write_text(MASTODON_BLOCKS)
    code, out, _ = run("import", str(blocks), "--dry-run")
    assert code == 0
    assert "+ .spam.example (subdomains block reason 'Spam, scams, and \"free\" crypto')" in out
    assert "would import" in out and "5 added" in out and "nothing changed" in out
    assert listed(run) == {}
    code, out, _ = run("import", str(blocks))
    assert code == 0
    assert f"imported {blocks} (mastodon-csv): 5 added, 0 updated" in out
    gts = tmp_path / "gts-allows.csv"
    gts.write_text(GOTOSOCIAL_CSV)
    code, out, _ = run("import", str(gts), "--format", "gotosocial-csv", "--effect", "allow")
    assert code == 0
    rules = listed(run)
    assert rules[".bumfaces.net"]["effect"] == "allow"
    assert rules[".bumfaces.net"]["reason"] == "big jerks"
    changed = tmp_path / "changed.csv"
    changed.write_text(MASTODON_BLOCKS.replace("Harassment", "Harassment daily"))
    code, out, _ = run("import", str(changed), "--dry-run")
    assert "~ .loud.example: reason 'Harassment' → 'Harassment daily'" in out
    entries = json.loads(run("audit", "--json")[1])["entries"]
    assert [(e["action"], e["target"]) for e in entries] == [
        ("import", str(gts)),
        ("import", str(blocks)),
    ]


def test_invalid_lines_change_nothing_unless_skipped(run: Run, tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("good.example\nnot a domain\n.also.good # ok\n*.x.[1]\n")
    code, out, err = run("import", str(listing))
    assert code == 2
    line = one_error_line(err)
    assert f"{listing}: 2 invalid entries, nothing imported" in line
    assert "line 2: invalid rule 'not a domain'" in line and "line 4:" in line
    assert listed(run) == {}
    code, out, err = run("import", str(listing), "--skip-invalid")
    assert code == 0
    assert "skipped line 2: invalid rule 'not a domain'" in out
    assert "2 added, 0 updated, 0 skipped (identical), 2 invalid" in out
    assert sorted(listed(run)) == [".also.good", "good.example"]


def test_exports_in_every_format_and_a_lossless_json_round_trip(run: Run, tmp_path: Path) -> None:
    run("block", ".a.example", "--reason", "r", "--comment", "p", "--for", "2h")
    run("allow", "b.example")
    run("rules", "add", "192.0.2.0/24", "*.c.example")
    run("block", ".a.example", "--reason", "r2")  # updated_at set
    before = listed(run)
    target = tmp_path / "rules.json"
    assert run("export", "--format", "fedtrack-json", "--output", str(target))[0] == 0
    assert run("rules", "flush", "--yes")[0] == 0
    _, out, _ = run("import", str(target))
    assert "(fedtrack-json): 4 added" in out
    assert listed(run) == before  # every field, times and creator included
    assert before[".a.example"]["updated_at"] is not None
    _code, out, _ = run("export", "--format", "text")
    assert out.splitlines() == sorted(before)
    _, out, err = run("export", "--format", "mastodon-csv")
    assert out.splitlines()[1:] == [
        "a.example,suspend,false,false,r2,false",
    ]
    assert "3 rule(s) that are not .domain rules were left out" in err
    _, out, _ = run("export", "--format", "fedtrack-csv")
    assert out.splitlines()[0] == "#domain,#effect,#reason,#expires_at,#created_at"
    assert run("export", "--format", "csv")[1] == out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("block", ".spam.example", "--for", "7 days"), "invalid duration"),
        (("block", ".spam.example", "--for", "0s"), "invalid duration"),
        (("block", "192.0.2.7/24"), "host bits set"),
        (("allow", ".[1.2.3.4]"), "address literal"),
        (("rules", "add", "ok.example", "--effect", "deny"), "Invalid value for '--effect'"),
        (("rules", "remove", "bad domain"), "invalid rule"),
        (("import", "/nonexistent/list.txt"), "No such file"),
        (("import", "-", "--format", "xml"), "Invalid value for '--format'"),
        (("audit", "--since", "last tuesday"), "invalid --since"),
        (("check", "*.example"), "invalid domain"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    run: Run, store: PolicyStore, args: tuple[str, ...], needle: str
) -> None:
    version = store.version
    code, _, err = run(*args)
    assert code == 2
    assert needle in one_error_line(err)
    assert store.version == version
    assert store.count() == 0
