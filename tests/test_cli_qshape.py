"""`fedtrack qshape` against real Redis: Postfix's layout, the TOTAL row, --top, --json."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from cli_helpers import Run, one_error_line
from fedtrack_redis import FederationTracker
from tracker_helpers import make_tracker

__all__ = ["make_tracker"]  # fixture


def fill(make: Callable[..., FederationTracker]) -> None:
    tracker = make(push_interval=3600)
    now = time.time()
    for _ in range(12):
        tracker.increment_queue("big.example.org")
    tracker.increment_queue("a.example", enqueued_at=now - 25 * 60)
    tracker.increment_queue("a.example", enqueued_at=now - 2000 * 60)
    tracker.increment_queue("z.example")
    tracker.increment_queue("z.example")
    tracker.push()


def test_qshape_prints_the_header_right_aligned_rows_and_a_total(
    run: Run, make_tracker: Callable[..., FederationTracker]
) -> None:
    fill(make_tracker)
    code, out, err = run("qshape")
    assert code == 0, err
    assert out.splitlines() == [
        "                 T  5 10 20 40 80 160 320 640 1280 1280+",
        "big.example.org 12 12  0  0  0  0   0   0   0    0     0",
        "      a.example  2  0  0  0  1  0   0   0   0    0     1",
        "      z.example  2  2  0  0  0  0   0   0   0    0     0",
        "          TOTAL 16 14  0  0  1  0   0   0   0    0     1",
    ]


def test_qshape_top_keeps_the_total_over_every_domain(
    run: Run, make_tracker: Callable[..., FederationTracker]
) -> None:
    fill(make_tracker)
    code, out, _ = run("qshape", "--top", "1")
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["big.example.org", "TOTAL"]
    assert lines[-1].split()[1] == "16"
    shape = json.loads(run("qshape", "--json", "--top", "2")[1])
    assert [row["domain"] for row in shape["rows"]] == ["big.example.org", "a.example"]
    assert shape["columns"][-1] == "1280+"
    assert shape["total"][0] == 16


def test_an_empty_qshape_prints_the_header_and_a_zero_total(run: Run) -> None:
    code, out, _ = run("qshape")
    assert code == 0
    assert out.splitlines() == [
        "      T 5 10 20 40 80 160 320 640 1280 1280+",
        "TOTAL 0 0  0  0  0  0   0   0   0    0     0",
    ]


def test_a_bad_top_is_exit_2_and_one_line(run: Run) -> None:
    for bad in ("0", "1001", "many"):
        code, _out, err = run("qshape", "--top", bad)
        assert code == 2
        assert "--top" in one_error_line(err)
