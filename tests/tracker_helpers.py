"""Shared helpers and fixtures of the tracker tests (import the fixtures by name).

`make_tracker` builds trackers on the test's namespace and closes them afterwards. Trackers
never hydrate (the flusher leader does), so the fixture first marks the brand-new
namespace hydrated (`mark_hydrated`), which is what hydrating an empty database amounts to;
pass ``hydrated=False`` to start from an unhydrated namespace.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from fedtrack_redis import FederationTracker
from fedtrack_redis.errors import FedtrackError
from fedtrack_redis.history import BASE_FIELD
from fedtrack_redis.keys import NamespaceKeys
from fedtrack_redis.stats import FIELD_OF
from fedtrack_redis.store.schema import COUNTER_COLUMNS

SRC = str(Path(__file__).resolve().parents[1] / "src")

COUNTERS = COUNTER_COLUMNS


def mark_hydrated(client: redis.Redis, namespace: str) -> None:
    """Set the 16 ``hydrated`` markers of a brand-new namespace (an empty database's worth),
    as legacy markers that name no database (any process accepts them)."""
    for shard in NamespaceKeys(namespace).shards:
        client.set(shard.hydrated, "0", nx=True)


#: The JSON name of each field of a domain hash (`stats.FIELD_OF` the other way round).
NAME_OF = {field: name for name, field in FIELD_OF.items()}


def named(fields: dict[str, str]) -> dict[str, str]:
    """A domain hash with its fields under their JSON names (``h<b>`` and the history's
    fields unchanged): what the tests compare."""
    return {NAME_OF.get(field, field): value for field, value in fields.items()}


def domain_hash(client: redis.Redis, namespace: str, domain: str) -> dict[str, str]:
    """One domain's hash, its fields under their JSON names (`named`)."""
    keys = NamespaceKeys(namespace)
    return named(client.hgetall(keys.shard_for(domain).domain(domain)))  # type: ignore[arg-type]


def is_history_field(name: str) -> bool:
    """A field push.lua keeps in a domain hash for the history, not a stat: its base
    ``B`` and ``b<bucket>``, the 5-minute bucket of that base (docs/history.md)."""
    return name == BASE_FIELD or (name[:1] == "b" and name[1:].isdigit())


def counters(client: redis.Redis, namespace: str, domain: str) -> dict[str, int]:
    """The counters of one domain hash (docs/redis-keys.md) (missing fields are 0)."""
    fields = domain_hash(client, namespace, domain)
    return {name: int(fields.get(name, 0)) for name in COUNTERS}


def all_domain_hashes(client: redis.Redis, namespace: str) -> dict[str, dict[str, str]]:
    """Every domain hash of the namespace, read through the activity index."""
    keys = NamespaceKeys(namespace)
    result: dict[str, dict[str, str]] = {}
    for shard in keys.shards:
        for domain in client.zrange(shard.active, 0, -1):
            result[str(domain)] = named(client.hgetall(shard.domain(str(domain))))  # type: ignore[arg-type]
    return result


def lease_holders(client: redis.Redis, namespace: str) -> set[str]:
    """Worker ids holding a queue lease on any shard."""
    holders: set[str] = set()
    for shard in NamespaceKeys(namespace).shards:
        holders.update(str(member) for member in client.zrange(shard.leases, 0, -1))
    return holders


@pytest.fixture
def make_tracker(
    redis_url: str, namespace: str, redis_client: redis.Redis
) -> Iterator[Callable[..., FederationTracker]]:
    """Build trackers on the test's namespace (push every 50 ms, namespace marked hydrated
    unless ``hydrated=False``); all closed after the test."""
    trackers: list[FederationTracker] = []

    def make(*, hydrated: bool = True, **options: Any) -> FederationTracker:
        if hydrated:
            mark_hydrated(redis_client, namespace)
        settings: dict[str, Any] = {"namespace": namespace, "push_interval": 0.05}
        settings.update(options)
        url = settings.pop("redis", redis_url)
        tracker = FederationTracker(url, **settings)
        trackers.append(tracker)
        return tracker

    yield make
    for tracker in trackers:
        with contextlib.suppress(FedtrackError):
            tracker.close(timeout=2)


def child_env() -> dict[str, str]:
    """Environment for a child Python process that imports the package from the tree."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [SRC, str(Path(__file__).resolve().parent), env.get("PYTHONPATH", "")]
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_child(code: str) -> subprocess.Popen[str]:
    """Run `code` (dedented) in a fresh interpreter; its stdout is a pipe of lines."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=child_env(),
    )


def read_line(child: subprocess.Popen[str]) -> str:
    """Next stdout line of a child, failing with its stderr if it died."""
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        child.wait(10)
        stderr = child.stderr.read() if child.stderr else ""
        raise AssertionError(f"child exited with {child.returncode}: {stderr[-2000:]}")
    return line.strip()


def finish_child(child: subprocess.Popen[str]) -> tuple[str, str]:
    """Wait for a child and close its pipes; return (stdout rest, stderr)."""
    out, err = child.communicate(timeout=60)
    return out, err


# -- a reproducible workload, for worker processes and for the expected totals ---------------

TRANSPORTS = ("HTTP", "https", "SMTP")


def workload(seed: int, domains: int, events: int) -> list[tuple[str, str, int, str]]:
    """(kind, domain, latency, transport) events drawn from `seed`."""
    import random

    rng = random.Random(seed)
    names = [f"w{i}.example.org" for i in range(domains)]
    kinds = ("success", "success", "inbound", "failure", "inc", "dec", "touch")
    result = []
    for _ in range(events):
        kind = rng.choice(kinds)
        domain = rng.choice(names)
        if rng.random() < 0.1:
            domain = domain.upper()
        result.append((kind, domain, rng.randint(0, 5000), rng.choice(TRANSPORTS)))
    return result


def replay(tracker: FederationTracker, events: list[tuple[str, str, int, str]]) -> None:
    for kind, domain, latency, transport in events:
        if kind == "success":
            tracker.record_success(domain, latency, transport)
        elif kind == "inbound":
            tracker.record_success(domain, latency)
        elif kind == "failure":
            tracker.record_failure(domain, transport)
        elif kind == "inc":
            tracker.increment_queue(domain)
        elif kind == "dec":
            tracker.decrement_queue(domain)
        else:
            tracker.touch(domain)


def expected_totals(events: list[tuple[str, str, int, str]]) -> dict[str, dict[str, int]]:
    """Per-domain hash fields (counters and h<b>) the events add, queue gauge aside."""
    from fedtrack_redis.stats import bucket_of

    totals: dict[str, dict[str, int]] = {}
    for kind, raw, latency, transport in events:
        fields = totals.setdefault(raw.lower(), {})

        def add(name: str, amount: int = 1, fields: dict[str, int] = fields) -> None:
            fields[name] = fields.get(name, 0) + amount

        if kind == "success":
            add(f"success_{transport.lower()}")
            add("successful_deliveries")
            add("total_latency_ms", latency)
            add(f"h{bucket_of(latency)}")
        elif kind == "inbound":
            add("successful_deliveries")
            add("inbound_deliveries")
            add("total_latency_ms", latency)
        elif kind == "failure":
            add(f"failed_{transport.lower()}")
    return totals


def run_worker(redis_url: str, namespace: str, seed: int, events: int) -> str:
    """Body of a worker process: replay a workload, then close (which pushes the rest)."""
    tracker = FederationTracker(redis_url, namespace=namespace)
    replay(tracker, workload(seed, 300, events))
    tracker.close()
    return tracker.worker_id
