"""The `fedtrack` CLI against real Redis and PostgreSQL: every policy command, exit codes,
JSON output, options from the environment."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cli_helpers import Run, one_error_line
from fedtrack_redis import PolicyStore
from servers import wait_for


def test_policy_show_and_set(run: Run) -> None:
    code, out, _ = run("policy", "--json")
    assert code == 0
    assert json.loads(out) == {"policy": "ACCEPT", "enabled": True, "rules": 0}
    code, out, _ = run("policy", "REJECT")
    assert code == 0
    assert "REJECT" in out
    assert json.loads(run("policy", "--json")[1])["policy"] == "REJECT"


def test_block_and_allow_add_fixed_effect_rules_that_hold_in_either_mode(run: Run) -> None:
    assert run("block", "Spam.Example", "[1.2.3.4]")[0] == 0
    rules = json.loads(run("rules", "list", "--json")[1])
    assert [(r["domain"], r["effect"]) for r in rules["rules"]] == [
        ("1.2.3.4", "block"),
        ("spam.example", "block"),
    ]
    assert run("check", "spam.example")[0] == 3
    code, out, _ = run("allow", "spam.example")
    assert code == 0
    assert "exact allow rule updated" in out
    assert run("check", "spam.example")[0] == 0
    run("policy", "reject")
    code, out, _ = run("allow", "friend.example")
    assert "exact allow rule added" in out
    assert run("check", "friend.example")[0] == 0
    code, out, _ = run("block", "friend.example")
    assert "exact block rule updated" in out
    assert run("check", "friend.example")[0] == 3
    run("policy", "accept")  # a mode switch changes nothing a fixed effect says
    assert run("check", "friend.example")[0] == 3
    assert run("check", "spam.example")[0] == 0


def test_rules_add_remove_flush(run: Run) -> None:
    assert run("rules", "add", "a.example", "b.example")[0] == 0
    assert run("rules", "remove", "a.example", "unknown.example")[0] == 0
    listed = json.loads(run("rules", "list", "--json")[1])
    assert listed["total"] == 1
    assert listed["rules"][0]["domain"] == "b.example"
    code, _, err = run("rules", "flush")  # not a terminal, no --yes: refused
    assert code == 2
    assert "--yes" in one_error_line(err)
    assert json.loads(run("rules", "list", "--json")[1])["total"] == 1
    assert run("rules", "flush", "--yes")[0] == 0
    assert json.loads(run("rules", "list", "--json")[1])["total"] == 0


def test_check_exit_codes_and_json(run: Run) -> None:
    run("block", "spam.example")
    code, out, _ = run("check", "SPAM.example", "--json")
    assert code == 3
    assert json.loads(out) == {
        "domain": "spam.example",
        "allowed": False,
        "policy": "ACCEPT",
        "reason": "blocked by a block rule",
        "rule": "spam.example",
        "matched": ["spam.example"],
    }
    code, out, _ = run("check", "ok.example", "--json")
    assert code == 0
    assert json.loads(out)["allowed"] is True
    run("policy", "reject")
    code, out, _ = run("check", "mail.example", "--json")  # FEDTRACK_LOCAL_DOMAIN
    assert code == 0
    assert json.loads(out)["reason"] == "local domain is always allowed"
    assert run("check", "ok.example", "--policy", "accept")[0] == 0


def test_disable_and_enable(run: Run) -> None:
    assert run("disable")[0] == 2  # needs --yes off a terminal
    assert run("disable", "--yes")[0] == 0
    assert json.loads(run("policy", "--json")[1])["enabled"] is False
    assert run("check", "anyone.example")[0] == 3
    assert run("enable")[0] == 0
    assert run("check", "anyone.example")[0] == 0


def test_import_mastodon_csv_and_json_then_export(run: Run, tmp_path: Path) -> None:
    run("rules", "add", ".already.example")
    blocklist = tmp_path / "domain_blocks.csv"
    blocklist.write_text(
        "#domain,#severity,#reject_media,#reject_reports,#public_comment,#obfuscate\n"
        "bad.example,suspend,false,false,spam,false\n"
        "Worse.Example,silence,true,false,,false\n"
        "already.example,noop,false,false,,false\n"
    )
    code, out, _ = run("import", str(blocklist))
    assert code == 0
    assert "2 added, 1 updated, 0 skipped" in out
    assert "(mastodon-csv)" in out
    code, out, _ = run("import", str(blocklist))
    assert "0 added, 0 updated, 3 skipped" in out
    as_json = tmp_path / "rules.json"
    as_json.write_text(json.dumps({"rules": [{"domain": "j.example"}, "k.example"]}))
    assert "2 added" in run("import", str(as_json))[1]
    code, out, _ = run("export")
    lines = out.strip().splitlines()
    assert lines[0] == "#domain,#effect,#reason,#expires_at,#created_at"
    assert [line.split(",")[:3] for line in lines[1:]] == [
        [".already.example", "allow", ""],
        [".bad.example", "block", "spam"],
        [".worse.example", "block", ""],
        ["j.example", "exception", ""],
        ["k.example", "exception", ""],
    ]
    target = tmp_path / "out.json"
    assert run("export", "--format", "json", "--output", str(target))[0] == 0
    assert len(json.loads(target.read_text())["rules"]) == 5


def test_import_with_a_bad_line_changes_nothing(run: Run, tmp_path: Path) -> None:
    blocklist = tmp_path / "bad.txt"
    blocklist.write_text("# my list\ngood.example\nnot a domain\n")
    code, _, err = run("import", str(blocklist))
    assert code == 2
    line = one_error_line(err)
    assert "line 3: invalid rule 'not a domain'" in line
    assert "nothing imported" in line
    assert json.loads(run("rules", "list", "--json")[1])["total"] == 0


@pytest.mark.parametrize(
    "args",
    [
        ("block", "bad domain"),
        ("rules", "add", "ok.example", "[IPv6:nope]"),
        ("check", "x" * 300),
        ("policy", "maybe"),
        ("stats", "--limit", "0"),
        ("nosuchcommand",),
    ],
)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    run: Run, store: PolicyStore, args: tuple[str, ...]
) -> None:
    version = store.version
    code, _, err = run(*args)
    assert code == 2
    one_error_line(err)
    assert store.version == version
    assert store.count() == 0


def test_bad_configuration_exits_2(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDTRACK_NAMESPACE", "bad{tag}")
    code, _, err = run("policy")
    assert code == 2
    assert "FEDTRACK_NAMESPACE" in one_error_line(err)


def test_unreachable_services_exit_1(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    from fedtrack_redis.policy import writer

    monkeypatch.setattr(writer, "INIT_DATABASE_PATIENCE", 0.5)  # start-up retries: not 30 s
    code, _, err = run("--redis-url", "redis://127.0.0.1:1/0", "policy")
    assert code == 1
    assert "Redis" in one_error_line(err)
    code, _, err = run("--database-url", "postgresql+psycopg://nobody@127.0.0.1:1/x", "policy")
    assert code == 1
    assert "unavailable" in one_error_line(err)


def test_options_come_from_the_environment(run: Run, store: PolicyStore) -> None:
    assert run("rules", "add", "env.example")[0] == 0
    # same database and namespace as the env says: the change reaches this process
    wait_for(lambda: store.has_rule("env.example"), 5, "the rule reaches the store")


def test_db_upgrade(run: Run) -> None:
    code, out, _ = run("db", "upgrade")
    assert code == 0
    assert "revision" in out


def test_help_for_every_command(run: Run) -> None:
    code, out, _ = run("--help")
    assert code == 0
    commands = [
        "allow",
        "audit",
        "block",
        "check",
        "db",
        "disable",
        "enable",
        "export",
        "flusher",
        "import",
        "policy",
        "rules",
        "serve",
        "stats",
        "status",
    ]
    for name in commands:
        assert name in out
        code, text, _ = run(name, "--help")
        assert code == 0
        assert "Usage: fedtrack" in text


# -- no password, no driver text in any error line or log ------------------------------

SECRET = "s3cretpass"
UNREACHABLE_DATABASE = f"postgresql+psycopg://fedtrack:{SECRET}@127.0.0.1:1/x"
CLI_TOKEN = "cli-test-token-0123456789abcdefghijklm"


@pytest.mark.parametrize(
    "args", [("policy",), ("rules", "list"), ("db", "upgrade"), ("serve", "--port", "0")]
)
def test_an_unreachable_database_never_shows_its_password(
    run: Run,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    args: tuple[str, ...],
) -> None:
    from fedtrack_redis.policy import writer

    monkeypatch.setattr(writer, "INIT_DATABASE_PATIENCE", 0.5)  # start-up retries: not 30 s
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("FEDTRACK_DATABASE_URL", UNREACHABLE_DATABASE)
    monkeypatch.setenv("FEDTRACK_ADMIN_TOKEN", CLI_TOKEN)
    code, out, err = run("--log-level", "debug", *args)
    assert code == 1
    line = one_error_line(err)
    assert SECRET not in out + err
    assert line.endswith("(OperationalError) at postgresql+psycopg://fedtrack:***@127.0.0.1:1/x")
    for driver_text in ("refused", "port 1 failed", "Is the server running", "sqlalche.me"):
        assert driver_text not in line
    assert SECRET not in caplog.text
    assert all(SECRET not in str(record.args) for record in caplog.records)


def test_an_unreachable_redis_never_shows_its_password(
    run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    code, out, err = run("--redis-url", f"redis://:{SECRET}@127.0.0.1:1/0", "stats")
    assert code == 1
    assert one_error_line(err) == (
        "fedtrack: error: service unavailable: Redis does not answer (ConnectionError)"
        " at redis://:***@127.0.0.1:1/0"
    )
    assert SECRET not in out + err + caplog.text


def test_invalid_urls_are_shown_redacted(run: Run) -> None:
    code, out, err = run("--redis-url", f"http://u:{SECRET}@cache:6379", "stats")
    assert code == 2
    assert "FEDTRACK_REDIS_URL" in one_error_line(err)
    assert "http://u:***@cache:6379" in err
    assert SECRET not in out + err


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FEDTRACK_ADMIN_TOKEN", "short-token"),
        ("FEDTRACK_ADMIN_TOKENS", f"ops:{CLI_TOKEN},viewer:tooshort:read"),
        ("FEDTRACK_ADMIN_TOKENS", f"bad name:{CLI_TOKEN}"),
    ],
)
def test_serve_refuses_a_bad_token_with_one_line(
    run: Run, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.delenv("FEDTRACK_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv(variable, value)
    code, _, err = run("serve", "--port", "0")
    assert code == 2
    line = one_error_line(err)
    assert line.startswith(f"fedtrack: error: {variable}: ")
    assert "short-token" not in line
    assert "tooshort" not in line


def test_serve_without_any_token_exits_2(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDTRACK_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("FEDTRACK_ADMIN_TOKENS", raising=False)
    code, _, err = run("serve", "--port", "0")
    assert code == 2
    assert "FEDTRACK_ADMIN_TOKEN" in one_error_line(err)
