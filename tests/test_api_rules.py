"""The admin API's rules, imports, exports and audit log against real Redis and
PostgreSQL: every field, read tokens refused on every change, the caller's actor in the
audit log, real-shaped Mastodon and GoToSocial lists, all-or-nothing imports with line
numbers, a lossless JSON round trip, and bad input as a 4xx with one message."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fedtrack_redis.api.app import create_app
from fedtrack_redis.config import Settings
from rule_samples import GOTOSOCIAL_JSON, MASTODON_ALLOWS, MASTODON_BLOCKS

ADMIN = "admin-token-0123456789abcdefghijklmnop"
OPS = "ops-token-0123456789abcdefghijklmnopqrs"
VIEW = "view-token-0123456789abcdefghijklmnopq"
PEER = "198.51.100.7"
RULES = "/api/federation/rules"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(migrated_postgres_url: str, redis_url: str, namespace: str) -> Iterator[TestClient]:
    settings = Settings(
        redis_url=redis_url,
        database_url=migrated_postgres_url,
        namespace=namespace,
        local_domain="mail.example",
        admin_token=ADMIN,
        admin_tokens=f"ops:{OPS},viewer:{VIEW}:read",
    )
    with TestClient(create_app(settings), client=(PEER, 40000)) as test_client:
        yield test_client


def rules(client: TestClient, query: str = "") -> list[dict[str, Any]]:
    response = client.get(RULES + query, headers=bearer(VIEW))
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == len(body["rules"])
    return list(body["rules"])


def one_message(response: Any, status: int = 400) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    return detail


def test_rules_carry_every_field_and_a_change_keeps_what_it_leaves_out(
    client: TestClient,
) -> None:
    body = {
        "rules": [
            {
                "text": ".Spam.Example",
                "effect": "block",
                "reason": "phishing",
                "private_comment": "ticket 42",
                "expires_in": 3600,
            },
            {"text": "10.0.0.0/8", "effect": "allow"},
        ]
    }
    response = client.post(RULES, json=body, headers=bearer(OPS))
    assert response.json() == {
        "changed": [".spam.example", "10.0.0.0/8"],
        "unchanged": [],
        "total": 2,
    }
    listed = {rule["text"]: rule for rule in rules(client)}
    spam = listed[".spam.example"]
    assert spam | {"created_at": 0, "expires_at": 0} == {
        "domain": ".spam.example",
        "text": ".spam.example",
        "kind": "subdomains",
        "effect": "block",
        "reason": "phishing",
        "private_comment": "ticket 42",
        "created_by": f"api:ops@{PEER}",
        "source": "manual",
        "created_at": 0,
        "updated_at": None,
        "expires_at": 0,
        "expired": False,
    }
    assert abs(spam["expires_at"] - (time.time() + 3600)) < 60
    assert listed["10.0.0.0/8"]["kind"] == "network"
    again = client.post(
        RULES, json={"rules": [{"text": ".spam.example", "reason": "scams"}]}, headers=bearer(OPS)
    )
    assert again.json()["changed"] == [".spam.example"]
    changed = {rule["text"]: rule for rule in rules(client)}[".spam.example"]
    assert (changed["effect"], changed["reason"], changed["expires_at"]) == (
        "block",
        "scams",
        spam["expires_at"],
    )
    assert changed["created_at"] == spam["created_at"] and changed["updated_at"] is not None
    permanent = {"rules": [{"text": ".spam.example", "expires_at": None}]}
    client.post(RULES, json=permanent, headers=bearer(OPS))
    assert {r["text"]: r for r in rules(client)}[".spam.example"]["expires_at"] is None
    assert [r["text"] for r in rules(client, "?q=scams")] == [".spam.example"]
    assert [r["text"] for r in rules(client, "?kind=network")] == ["10.0.0.0/8"]
    assert [r["text"] for r in rules(client, "?effect=allow")] == ["10.0.0.0/8"]
    assert "unknown kind" in one_message(client.get(RULES + "?kind=fuzzy", headers=bearer(OPS)))


def test_check_returns_the_deciding_rule_and_every_match(client: TestClient) -> None:
    body = {
        "rules": [
            {"text": ".example.org", "effect": "block", "reason": "all of it"},
            {"text": "ok.example.org", "effect": "allow"},
        ]
    }
    client.post(RULES, json=body, headers=bearer(OPS))
    refused = client.get("/api/federation/check/www.example.org", headers=bearer(VIEW)).json()
    assert (refused["allowed"], refused["rule"], refused["matched"]) == (
        False,
        ".example.org",
        [".example.org"],
    )
    assert refused["reason"] == "blocked by a block rule"
    assert refused["rules"][0]["reason"] == "all of it"
    exempt = client.get("/api/federation/check/OK.example.org", headers=bearer(VIEW)).json()
    assert (exempt["allowed"], exempt["rule"]) == (True, "ok.example.org")
    assert exempt["matched"] == ["ok.example.org", ".example.org"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", RULES, {"json": {"rules": [{"text": "x.example", "effect": "block"}]}}),
        ("DELETE", RULES, {"json": {"domains": ["kept.example"]}}),
        ("POST", RULES + "/import", {"content": "new.example\n"}),
        ("POST", RULES + "/import?dry_run=true", {"content": "new.example\n"}),
        ("PUT", "/api/federation/settings", {"json": {"policy": "REJECT"}}),
    ],
)
def test_a_read_token_gets_403_on_every_change(
    client: TestClient, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    client.post(RULES, json={"domains": ["kept.example"]}, headers=bearer(OPS))
    entries = client.get("/api/federation/audit", headers=bearer(VIEW)).json()["entries"]
    response = client.request(method, path, headers=bearer(VIEW), **kwargs)
    assert response.status_code == 403
    assert "read-only" in response.json()["detail"]
    assert [r["text"] for r in rules(client)] == ["kept.example"]
    assert client.get("/api/federation/audit", headers=bearer(VIEW)).json()["entries"] == entries
    for read in (RULES + "/export", "/api/federation/audit", "/api/federation/check/a.example"):
        assert client.get(read, headers=bearer(VIEW)).status_code == 200


def test_the_audit_log_names_the_token_and_address_and_pages(client: TestClient) -> None:
    client.post(RULES, json={"domains": ["a.example", "b.example"]}, headers=bearer(OPS))
    client.request("DELETE", RULES, json={"domains": ["a.example"]}, headers=bearer(ADMIN))
    client.put("/api/federation/settings", json={"enabled": False}, headers=bearer(ADMIN))
    client.post(RULES + "/import?filename=list.txt", content="c.example\n", headers=bearer(OPS))
    page = client.get("/api/federation/audit?limit=3", headers=bearer(VIEW)).json()
    assert [(e["action"], e["target"], e["actor"]) for e in page["entries"]] == [
        ("import", "list.txt", f"api:ops@{PEER}"),
        ("enabled", "enabled", f"api:admin@{PEER}"),
        ("remove", "a.example", f"api:admin@{PEER}"),
    ]
    assert page["entries"][1]["before"] is True and page["entries"][1]["after"] is False
    assert page["entries"][2]["before"]["text"] == "a.example"
    older = client.get(
        f"/api/federation/audit?limit=3&before_id={page['next_before_id']}", headers=bearer(VIEW)
    ).json()
    assert [(e["action"], e["target"]) for e in older["entries"]] == [
        ("add", "b.example"),
        ("add", "a.example"),
    ]
    assert older["next_before_id"] is None
    only = client.get("/api/federation/audit?target=A.example", headers=bearer(VIEW)).json()
    assert [e["action"] for e in only["entries"]] == ["remove", "add"]
    assert client.get("/api/federation/audit?limit=0", headers=bearer(VIEW)).status_code == 422


def test_imports_of_real_shaped_mastodon_and_gotosocial_lists(client: TestClient) -> None:
    response = client.post(
        RULES + "/import?filename=domain_blocks.csv",
        content=MASTODON_BLOCKS.encode(),
        headers=bearer(OPS) | {"Content-Type": "text/csv"},
    )
    report = response.json()
    assert report["format"] == "mastodon-csv"
    assert report["added"] == [
        ".spam.example",
        ".loud.example",
        ".media.example",
        ".multi.example",
        ".xn--mnchen-3ya.example",
    ]
    listed = {rule["text"]: rule for rule in rules(client)}
    assert listed[".spam.example"]["reason"] == 'Spam, scams, and "free" crypto'
    assert listed[".media.example"]["effect"] == "allow"
    assert {rule["source"] for rule in listed.values()} == {"import"}
    allows = client.post(RULES + "/import", content=MASTODON_ALLOWS, headers=bearer(OPS)).json()
    assert (allows["format"], allows["added"]) == (
        "mastodon-allow-csv",
        ["friend.example", "xn--mnchen-3ya.de"],
    )
    gts = client.post(
        RULES + "/import?effect=allow&filename=gts.json",
        content=GOTOSOCIAL_JSON,
        headers=bearer(OPS) | {"Content-Type": "application/json"},
    ).json()
    assert gts["format"] == "gotosocial-json"
    assert gts["added"] == [".bumfaces.net", ".peepee.poopoo", ".nothanks.com"]
    again = client.post(RULES + "/import", content=MASTODON_BLOCKS, headers=bearer(OPS)).json()
    assert (again["added"], again["updated"], again["skipped"]) == ([], [], 5)


def test_an_invalid_line_changes_nothing_unless_skipped(client: TestClient) -> None:
    content = "good.example\n# a comment\nnot a domain\n.also.good\n192.0.2.7/24\n"
    version_before = client.get("/api/federation/audit", headers=bearer(VIEW)).json()
    refused = client.post(RULES + "/import?filename=list.txt", content=content, headers=bearer(OPS))
    message = one_message(refused)
    assert message.startswith("list.txt: 2 invalid entries, nothing imported")
    assert "line 3: invalid rule 'not a domain'" in message
    assert "line 5: invalid rule '192.0.2.7/24': host bits set" in message
    assert rules(client) == []
    assert client.get("/api/federation/audit", headers=bearer(VIEW)).json() == version_before
    dry = client.post(
        RULES + "/import?skip_invalid=true&dry_run=true", content=content, headers=bearer(OPS)
    ).json()
    assert (dry["dry_run"], dry["added"]) == (True, ["good.example", ".also.good"])
    assert rules(client) == []
    skipped = client.post(
        RULES + "/import?skip_invalid=true", content=content, headers=bearer(OPS)
    ).json()
    assert skipped["added"] == ["good.example", ".also.good"]
    assert [entry["line"] for entry in skipped["invalid"]] == [3, 5]
    assert sorted(r["text"] for r in rules(client)) == [".also.good", "good.example"]


def test_a_json_export_imports_back_losslessly(client: TestClient) -> None:
    body = {
        "rules": [
            {"text": ".a.example", "effect": "block", "reason": "r", "private_comment": "p"},
            {"text": "*.b.example", "effect": "allow", "expires_in": 7200},
            {"text": "2001:db8::/32"},
        ]
    }
    client.post(RULES, json=body, headers=bearer(OPS))
    client.post(
        RULES, json={"rules": [{"text": ".a.example", "reason": "r2"}]}, headers=bearer(OPS)
    )
    client.post(RULES + "/import", content="c.example\n", headers=bearer(OPS))  # source "import"
    before = rules(client)
    exported = client.get(RULES + "/export?format=fedtrack-json", headers=bearer(VIEW))
    assert exported.headers["content-type"].startswith("application/json")
    assert len(json.loads(exported.text)["rules"]) == 4
    client.request(
        "DELETE", RULES, json={"domains": [r["text"] for r in before]}, headers=bearer(OPS)
    )
    assert rules(client) == []
    restored = client.post(RULES + "/import", content=exported.text, headers=bearer(OPS)).json()
    assert restored["format"] == "fedtrack-json" and len(restored["added"]) == 4
    assert rules(client) == before  # created_at, updated_at, created_by and source included
    for fmt, media in (
        ("fedtrack-csv", "text/csv"),
        ("mastodon-csv", "text/csv"),
        ("text", "text/plain"),
    ):
        response = client.get(f"{RULES}/export?format={fmt}", headers=bearer(VIEW))
        assert response.headers["content-type"].startswith(media)
    text = client.get(f"{RULES}/export?format=text", headers=bearer(VIEW)).text
    assert text.splitlines() == [r["text"] for r in before]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "needle"),
    [
        ("POST", RULES, {"json": {"domains": ["bad domain"]}}, 400, "invalid rule"),
        (
            "POST",
            RULES,
            {"json": {"rules": [{"text": "x.example", "expires_at": 5}]}},
            400,
            "future",
        ),
        ("POST", RULES, {"json": {"rules": [{"text": "x.example", "effect": "deny"}]}}, 422, ""),
        ("POST", RULES, {"json": {"rules": [{"text": ".[1.2.3.4]"}]}}, 400, "address literal"),
        ("POST", RULES, {"json": {}}, 400, "send `domains` or `rules`"),
        ("DELETE", RULES, {"json": {"domains": ["a.example", "*[x"]}}, 400, "invalid rule"),
        ("POST", RULES + "/import?format=bogus", {"content": "a.example"}, 422, ""),
        ("POST", RULES + "/import", {"content": b"\xff\xfe\xfa"}, 400, "not UTF-8"),
        ("POST", RULES + "/import", {"content": "[{"}, 400, "line 1: not JSON"),
        ("POST", RULES + "/import", {"content": '[{"domain": "exa***le.com"}]'}, 400, "obfuscated"),
        ("GET", RULES + "/export?format=xml", {}, 422, ""),
        ("GET", "/api/federation/check/bad%20domain", {}, 400, "invalid domain"),
    ],
)
def test_bad_input_is_a_4xx_with_one_message_and_changes_nothing(
    client: TestClient, method: str, path: str, kwargs: dict[str, Any], status: int, needle: str
) -> None:
    client.post(RULES, json={"domains": ["a.example"]}, headers=bearer(OPS))
    before = rules(client)
    response = client.request(method, path, headers=bearer(OPS), **kwargs)
    assert response.status_code == status, response.text
    if needle:
        assert needle in one_message(response, status)
    assert rules(client) == before


def test_rules_page_with_limit_and_offset(client: TestClient) -> None:
    client.post(RULES, json={"domains": [f"r{i}.example" for i in range(5)]}, headers=bearer(OPS))
    page = client.get(RULES + "?limit=2&offset=1", headers=bearer(VIEW)).json()
    assert page["total"] == 5
    assert [rule["text"] for rule in page["rules"]] == ["r1.example", "r2.example"]
