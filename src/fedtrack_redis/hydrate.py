"""Add PostgreSQL's totals back into a Redis that lost its data (G6).

PostgreSQL is the durable copy. A shard whose ``hydrated`` marker is missing has lost
its data (restart without persistence, failover to an empty replica, ``FLUSHALL``), and
until the marker is back every push to it is refused (the tracker retries, unchanged)
and no flush of it runs. `hydrate_shards` restores such shards:

1. In one database transaction it takes a new fencing token (`stats.bump_fence`), which
   waits for a flush in flight and fences out every flush whose Redis snapshot was read
   before the loss, then reads every stats row and every push acknowledgement. Rows are
   assigned to shards in Python (``keys.shard_of(domain)``; the table has no shard
   column), sorted by domain.
   It checks the database's identity first (G11): a database other than the one Redis
   names (a surviving marker, the policy keys) or the `IdentityGuard` remembers raises
   `DatabaseMismatchError`, and nothing is added.
2. Each shard's rows are cut into chunks of `CHUNK_DOMAINS` and applied in order by
   ``hydrate.lua``, which adds them (counters except ``queued_messages``, the latency
   histogram, ``last_active`` as a maximum, the activity index) and records progress in
   the shard's ``hydrating`` hash, so each chunk is applied exactly once even with
   several hydrators at work or one dying midway. The last chunk restores the acks and
   sets the marker to the database's identity. An empty database sets the marker and adds nothing.

Chunks are the same for every hydrator, because the rows of a shard cannot change while
it is unhydrated (no flush of it runs); a digest of the whole plan is checked anyway.
A read older than `MAX_READ_AGE` seconds (by the Redis server's clock) is not applied,
which bounds how stale a frozen hydrator's data can be when it wakes up.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
import sqlalchemy as sa

from . import tops
from .ahead import send_ahead
from .chunk import TOP_SIZE
from .engine import RedisEngine
from .errors import BackendUnavailableError, FedtrackError
from .identity import IdentityGuard, read_database_id
from .keys import SHARDS, NamespaceKeys, ShardKeys, shard_of
from .scripts import REDIRECTS, Scripts
from .stats import FIELD_OF
from .store import migrate
from .store import stats as store
from .store.schema import COUNTER_COLUMNS

log = logging.getLogger("fedtrack_redis.hydrate")

#: Domains per ``hydrate.lua`` call: a few ms of Redis time each on a busy 2-core host
#: (500 took 10.6 ms there and 250 up to 11.7 ms, over the 10 ms bound of every call).
CHUNK_DOMAINS = 125
#: A database read older than this (seconds, Redis clock) is read again before applying.
MAX_READ_AGE = 30.0
#: Bound on the database's waits (for the fencing token row) while reading.
DATABASE_TIMEOUT = 15.0
MAX_ATTEMPTS = 5

#: Chunks sent together; one such batch is in flight while the next is built.
CHUNKS_PER_BATCH = 4
#: (position in a stats line, the shard totals' field, the domain hash's field) of the
#: counters restored: all but ``queued_messages``, a gauge that live workers re-assert.
_RESTORED = [
    (position, name, FIELD_OF[name])
    for position, name in enumerate(COUNTER_COLUMNS, start=1)
    if name != "queued_messages"
]

# hydrate.lua status codes
_DONE, _APPLIED, _SKIPPED = 2, 1, 0
_OUTCOMES = {-1: "progress lost", -2: "read too old", -3: "different plan in progress"}


@dataclass
class _Plan:
    """One shard's rows cut into chunks, with the acks its last chunk restores."""

    chunks: list[list[str]] = field(default_factory=list)
    acks: str = ""
    digest: str = ""


def marker_values(
    engine: RedisEngine | redis.Redis, keys: NamespaceKeys, shards: Iterable[int] | None = None
) -> dict[int, str | None]:
    """Each shard's ``hydrated`` marker value (an identity, a legacy stamp, or None)."""
    engine = RedisEngine.wrap(engine)
    wanted = [keys.shards[shard] for shard in _shard_list(shards)]
    replies = engine.per_shard(wanted, lambda pipe, shard: pipe.get(shard.hydrated))
    return {shard.shard: reply[0] for shard, reply in zip(wanted, replies, strict=True)}


def missing_shards(
    engine: RedisEngine | redis.Redis, keys: NamespaceKeys, shards: Iterable[int] | None = None
) -> list[int]:
    """Shards (of `shards`, default all) whose ``hydrated`` marker is missing."""
    return [shard for shard, value in marker_values(engine, keys, shards).items() if value is None]


def redis_identities(engine: RedisEngine | redis.Redis, keys: NamespaceKeys) -> list[str | None]:
    """Every identity Redis records for the namespace: the 16 markers and the policy's."""
    engine = RedisEngine.wrap(engine)
    values: list[str | None] = list(marker_values(engine, keys).values())
    policy = engine.node_for(keys.policy_meta).hget(keys.policy_meta, "database_id")
    values.append(None if policy is None else str(policy))
    return values


def hydrate_shards(
    engine: RedisEngine | redis.Redis,
    keys: NamespaceKeys,
    database: sa.Engine,
    shards: Iterable[int] | None = None,
    *,
    guard: IdentityGuard | None = None,
) -> int:
    """Restore every shard (of `shards`, default all) whose marker is missing.

    Returns the number of domains restored by this call (0 when every marker was
    present, or when another process applied the chunks). Creates missing tables first.
    Safe to call from several processes at once and more than once: each chunk is
    applied exactly once. Raises `DatabaseMismatchError` (adding nothing) when the
    database is not the namespace's, `BackendUnavailableError` when Redis or the
    database cannot be reached.
    """
    engine = RedisEngine.wrap(engine)
    wanted = _shard_list(shards)
    guard = guard or IdentityGuard(keys.namespace)
    runner = Scripts(engine)
    restored = 0
    try:
        migrate.upgrade(database)
        missing = missing_shards(engine, keys, wanted)
        if not missing:  # nothing to restore, but a caller on another database still hears so
            with database.connect() as connection:
                guard.check(read_database_id(connection), redis_identities(engine, keys))
        shards_done = list(missing)
        for _attempt in range(MAX_ATTEMPTS):
            if not missing:
                if shards_done:
                    log.info("hydrated shards %s: %d domains restored", shards_done, restored)
                return restored
            read_at = int(engine.node_for(keys.shards[missing[0]].hydrated).time()[0])
            identity, plans = _read_plans(engine, keys, database, missing, guard)
            count, again = _apply_all(
                runner, [keys.shards[shard] for shard in missing], plans, read_at, identity
            )
            restored += count
            guard.adopt(identity)
            missing = again
    except redis.RedisError as exc:
        raise BackendUnavailableError(
            f"Redis unavailable while hydrating: {type(exc).__name__}: {exc}"
        ) from exc
    except sa.exc.DBAPIError as exc:
        raise BackendUnavailableError(
            f"database unavailable while hydrating ({type(exc.orig).__name__})"
        ) from exc
    if missing:
        raise FedtrackError(f"could not hydrate shards {missing} after {MAX_ATTEMPTS} attempts")
    return restored


def clear_namespace(engine: RedisEngine, keys: NamespaceKeys, *, page: int = 250) -> int:
    """Delete every key of the namespace in Redis (for ``fedtrack db rehydrate``), in short
    calls and without SCAN: domain hashes are found through each shard's activity index
    and lease hashes through its lease index. Returns the keys deleted."""
    deleted = 0
    for shard in keys.shards:
        client = engine.node_for(shard.base)
        while True:
            count, domains = delete_domains(client, shard, page)
            deleted += count
            if not domains:
                break
        deleted += delete_leases(client, shard)
        deleted += int(client.unlink(*shard.fixed()))
    policy = engine.node_for(keys.policy_meta)
    deleted += int(policy.unlink(keys.rules, keys.policy_meta))
    deleted += int(engine.node_for(keys.flusher_lock).unlink(keys.flusher_lock))
    return deleted


def delete_domains(client: Any, shard: ShardKeys, count: int) -> tuple[int, int]:
    """Delete the first `count` domains of the shard's activity index with their hashes;
    (keys deleted, domains removed from the index: 0 once it is empty)."""
    domains = client.zrange(shard.active, 0, count - 1)
    if not domains:
        return 0, 0
    with client.pipeline(transaction=False) as pipe:
        pipe.unlink(*(shard.domain(str(domain)) for domain in domains))
        pipe.zrem(shard.active, *domains)
        return int(pipe.execute()[0]), len(domains)


def delete_leases(client: Any, shard: ShardKeys) -> int:
    """Delete the lease hashes (and their ages) of every worker in the shard's lease index."""
    workers = client.zrange(shard.leases, 0, -1)
    if not workers:
        return 0
    deleted = int(client.unlink(*(shard.lease(str(worker)) for worker in workers)))
    return deleted + int(client.unlink(*(shard.lease_ages(str(worker)) for worker in workers)))


def _shard_list(shards: Iterable[int] | None) -> list[int]:
    if shards is None:
        return list(range(SHARDS))
    wanted = sorted(set(shards))
    for shard in wanted:
        if not isinstance(shard, int) or not 0 <= shard < SHARDS:
            raise ValueError(f"shard must be an integer in 0..{SHARDS - 1}, got {shard!r}")
    return wanted


def _read_plans(
    engine: RedisEngine,
    keys: NamespaceKeys,
    database: sa.Engine,
    shards: list[int],
    guard: IdentityGuard,
) -> tuple[str, dict[int, _Plan]]:
    """Check the identity, then read rows and acks in one transaction that also takes a
    new fencing token (a mismatch rolls the token back and reads nothing)."""
    with database.begin() as connection:
        store.set_timeouts(connection, DATABASE_TIMEOUT)
        identity = read_database_id(connection)
        guard.check(identity, redis_identities(engine, keys))
        store.bump_fence(connection)  # fence out flushes of snapshots read before the loss
        lines = store.load_lines(connection)
        acks = store.load_acks(connection)
    wanted = set(shards)
    per_shard: dict[int, list[str]] = {shard: [] for shard in shards}
    for line in lines:
        shard = shard_of(line[: line.index("\t")])
        if shard in wanted:
            per_shard[shard].append(line)
    ack_pairs: dict[int, list[str]] = {shard: [] for shard in shards}
    for shard, worker, seq in acks:
        if shard in wanted:
            ack_pairs[shard] += [worker, str(seq)]
    plans: dict[int, _Plan] = {}
    for shard in shards:
        rows = per_shard[shard]
        chunks = [rows[i : i + CHUNK_DOMAINS] for i in range(0, len(rows), CHUNK_DOMAINS)]
        acks_text = ",".join(ack_pairs[shard])
        digest = hashlib.blake2b(digest_size=16)
        digest.update("\n".join(rows).encode())
        digest.update(b"\0" + acks_text.encode())
        plans[shard] = _Plan(chunks=chunks or [[]], acks=acks_text, digest=digest.hexdigest())
    return identity, plans


class _Summary:
    """A shard's totals and top lists, gathered from its chunks as they are sent; its
    last chunk carries them (hydrate.lua adds them once, with the marker)."""

    def __init__(self) -> None:
        self.sums: dict[str, int] = {}
        self.failing: list[tuple[int, str]] = []
        self.slow: list[tuple[float, str]] = []

    def records(self, chunk: list[str]) -> list[str]:
        """The chunk's domain records for hydrate.lua (ARGV[12..]), summed up here."""
        sums: dict[str, int] = self.sums
        out: list[str] = []
        rows = [line.split("\t") for line in chunk]
        scored = zip(rows, tops.failing_scores(rows), tops.slow_scores(rows), strict=True)
        for parts, failures, slow in scored:
            domain = parts[0]
            fields: list[str] = []
            for position, name, hash_field in _RESTORED:
                value = parts[position]
                if value != "0":
                    fields += (hash_field, value)
                    sums[name] = sums.get(name, 0) + int(value)
            if parts[-1]:
                for item in parts[-1].split(","):
                    bucket, _, count = item.partition(":")
                    fields += ("h" + bucket, count)
                    sums["h" + bucket] = sums.get("h" + bucket, 0) + int(count)
            if failures > 0:
                self.failing.append((failures, domain))
            if parts[tops.SUCCESSES] != "0":
                self.slow.append((slow, domain))
            last_active = parts[-2]
            active = "" if last_active in (store.NULL, "0") else last_active
            out += (domain, active, str(len(fields)), *fields)
        return out

    def texts(self) -> list[str]:
        """ARGV[9..11]: the totals and the `TOP_SIZE` best of each top list."""
        sums = "\t".join(f"{name}\t{total}" for name, total in self.sums.items())
        return [
            sums,
            *(_scored(heapq.nlargest(TOP_SIZE, items)) for items in (self.failing, self.slow)),
        ]


def _scored(items: list[tuple[Any, str]]) -> str:
    return "\t".join(f"{score}\t{domain}" for score, domain in items)


def _chunk_call(
    shard: ShardKeys,
    plan: _Plan,
    index: int,
    read_at: int,
    identity: str,
    summary: _Summary,
) -> tuple[list[str], list[str | int | float]]:
    """The keys and arguments of ``hydrate.lua`` for chunk `index` of `plan`; `summary`
    has seen the chunks before it."""
    chunk = plan.chunks[index]
    last = index == len(plan.chunks) - 1
    keys = [
        shard.hydrated,
        shard.hydrating,
        shard.active,
        shard.acks,
        shard.ack_seen,
        shard.totals,
        shard.top_failures,
        shard.top_latency,
        *[shard.domain(line[: line.index("\t")]) for line in chunk],
    ]
    records = summary.records(chunk)
    args: list[str | int | float] = [
        index,
        len(plan.chunks),
        plan.digest,
        read_at,
        MAX_READ_AGE,
        plan.acks if last else "",
        identity,
        TOP_SIZE,
        *(summary.texts() if last else ("", "", "")),
        *records,
    ]
    return keys, args


def apply_chunk(
    runner: Scripts, shard: ShardKeys, plan: _Plan, index: int, read_at: int, identity: str
) -> int:
    """Run ``hydrate.lua`` for chunk `index` of `plan` alone; return its status code."""
    summary = _Summary()
    if index == len(plan.chunks) - 1:
        for earlier in plan.chunks[:index]:
            summary.records(earlier)
    keys, args = _chunk_call(shard, plan, index, read_at, identity, summary)
    return int(runner.run("hydrate", keys, args))


def _apply(
    runner: Scripts, shard: ShardKeys, plan: _Plan, read_at: int, identity: str
) -> tuple[int, bool]:
    """Apply one shard's plan; return (domains restored, shard done)."""
    restored, refused = _apply_all(runner, [shard], {shard.shard: plan}, read_at, identity)
    return restored, not refused


def _apply_all(
    runner: Scripts,
    shards: list[ShardKeys],
    plans: dict[int, _Plan],
    read_at: int,
    identity: str,
) -> tuple[int, list[int]]:
    """Apply the plans of `shards`, each in order; return (domains restored, the shards
    whose chunks were refused: to read again).

    On each node the chunks of all its shards form one stream of batches, the next built
    while Redis applies the one before (`ahead.send_ahead`). A refused chunk stops its
    shard's sending; its chunks already sent are refused in turn (each names its index
    and the plan), so nothing is applied twice."""
    restored, refused = 0, []
    for client, group in runner.engine.by_node(shards, lambda shard: shard.hydrated):
        try:
            count, again = _apply_node(runner, client, group, plans, read_at, identity)
        except REDIRECTS:
            runner.engine.refresh()  # the next attempt asks the cluster where they are
            raise
        restored += count
        refused += again
    return restored, sorted(refused)


def _apply_node(
    runner: Scripts,
    client: redis.Redis,
    group: list[ShardKeys],
    plans: dict[int, _Plan],
    read_at: int,
    identity: str,
) -> tuple[int, list[int]]:
    sha = runner.load(client, "hydrate")
    sent: deque[tuple[ShardKeys, int]] = deque()  # (shard, chunk index) of each call sent
    stopped: set[int] = set()  # shards hydrated or refused: nothing more of them is sent

    def batches() -> Iterator[list[list[Any]]]:
        batch: list[list[Any]] = []
        for shard in group:
            plan, summary = plans[shard.shard], _Summary()
            for index in range(len(plan.chunks)):
                if shard.shard in stopped:
                    break
                keys, args = _chunk_call(shard, plan, index, read_at, identity, summary)
                batch.append(["EVALSHA", sha, len(keys), *keys, *args])
                sent.append((shard, index))
                if len(batch) == CHUNKS_PER_BATCH:
                    yield batch
                    batch = []
        if batch:
            yield batch

    restored, refused = 0, []
    ahead = send_ahead(client, batches())
    try:
        for replies in ahead:
            for code in map(int, replies):
                shard, index = sent.popleft()
                plan = plans[shard.shard]
                if code == _APPLIED:
                    restored += len(plan.chunks[index])
                    if index == len(plan.chunks) - 1:
                        log.debug("shard %02d hydrated", shard.shard)
                elif shard.shard in stopped:
                    continue  # sent before its shard stopped: refused by its index
                elif code == _DONE:
                    stopped.add(shard.shard)
                elif code != _SKIPPED:
                    log.warning(
                        "hydrating shard %02d: chunk %d refused (%s); reading the database again",
                        shard.shard,
                        index,
                        _OUTCOMES.get(code, f"code {code}"),
                    )
                    stopped.add(shard.shard)
                    refused.append(shard.shard)
    finally:
        ahead.close()
    return restored, refused
