"""`fedtrack history`, `watch`, `unwatch`, `watched` against real Redis: the table and the
JSON carry the tracker's series; bad input exits 2 with one line."""

from __future__ import annotations

import json
from collections.abc import Callable

from cli_helpers import Run, one_error_line
from fedtrack_redis import FederationTracker
from history_helpers import Clock, clock
from tracker_helpers import make_tracker

__all__ = ["clock", "make_tracker"]


def test_history_prints_the_series_as_a_table_and_json(
    run: Run, make_tracker: Callable[..., FederationTracker], clock: Clock
) -> None:
    tracker = make_tracker()
    tracker.record_success("a.example", 100, "HTTPS")
    tracker.record_success("a.example", 300, "SMTP")
    tracker.record_failure("a.example", "HTTP")
    tracker.push()
    code, out, _err = run("history", "--json")
    assert code == 0
    data = json.loads(out)
    assert (data["window"], data["width"], data["domain"]) == ("1h", 60, None)
    assert data["buckets"] == [b.to_dict() for b in tracker.history()]
    code, out, _err = run("history", "A.example", "--window", "7d", "--json")
    data = json.loads(out)
    assert (data["domain"], data["width"], len(data["buckets"])) == ("a.example", 300, 2016)
    assert data["buckets"] == [b.to_dict() for b in tracker.history("a.example", "7d")]
    code, out, _err = run("history", "a.example")
    assert code == 0
    assert "a.example, last 1h in 5-minute buckets" in out
    total = next(line for line in out.splitlines() if "TOTAL" in line)
    assert [cell.strip() for cell in total.split("│")[1:-1]] == [
        "TOTAL", "2", "1", "0/1/1", "1/0/0", "0", "200"
    ]  # fmt: skip
    assert len([line for line in out.splitlines() if "-" in line and ":" in line]) >= 12


def test_watch_unwatch_watched(run: Run) -> None:
    assert run("watch", "B.example") == (0, "watching b.example\n", "")
    assert run("watch", "b.example")[1] == "b.example was already watched\n"
    assert json.loads(run("watched", "--json")[1]) == {"domains": ["b.example"]}
    assert run("watched")[1] == "b.example\n"
    assert run("unwatch", "b.example")[1] == "stopped watching b.example\n"
    assert run("unwatch", "b.example")[1] == "b.example was not watched\n"


def test_bad_history_input_exits_2_with_one_line(run: Run) -> None:
    code, _out, err = run("history", "--window", "2h")
    assert code == 2
    assert "2h" in one_error_line(err)
    for args in (("history", "bad name!"), ("watch", "bad name!"), ("unwatch", "")):
        code, _out, err = run(*args)
        assert code == 2, args
        one_error_line(err)
