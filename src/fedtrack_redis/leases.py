"""Queue leases (G8): a dead worker's in-flight counts leave ``queued_messages``.

Each push refreshes the worker's lease on the shard (push.lua: expiry = server TIME +
lease TTL) and keeps its absolute in-flight count per domain in the lease hash. A worker
that stops pushing (SIGKILL, freeze, partition) lets its leases expire; any live tracker
(every 5 s) or flusher then calls `reap_expired_leases`, which releases each expired
lease with lease_release.lua: the script re-checks the expiry with the server's clock,
and its ZREM makes the release happen exactly once however many processes race for it.
A worker that comes back finds its lease gone (push.lua says so) and re-sends its counts.
The lease also holds the worker's qshape ages (`ages`), released the same way.
"""

from __future__ import annotations

import logging
import re

import redis

from .engine import RedisEngine
from .errors import ConfigurationError
from .keys import NamespaceKeys, ShardKeys, validate_worker_id
from .scripts import Scripts

log = logging.getLogger("fedtrack_redis.leases")

#: How often a live tracker looks for expired leases (G8: released ≤ 15 s after expiry).
REAP_INTERVAL = 5.0
#: Expired workers handled per shard and pass (the rest wait for the next pass).
REAP_LIMIT = 100

_DOMAIN = re.compile(r"^[a-z0-9.:-]{1,253}$")


def server_time_ms(client: redis.Redis) -> int:
    """The Redis server's clock in unix milliseconds (the clock of every lease)."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def reap_expired_leases(
    engine: RedisEngine | redis.Redis,
    keys: NamespaceKeys,
    *,
    limit: int = REAP_LIMIT,
    scripts: Scripts | None = None,
) -> int:
    """Release every expired lease of the namespace; return how many this call released.

    Safe to call from any number of processes at once. Raises `redis.RedisError` when
    Redis cannot be reached (callers retry on their next pass).
    """
    engine = RedisEngine.wrap(engine)
    runner = scripts or Scripts(engine)
    expired: list[tuple[ShardKeys, list[str]]] = []
    for client, shards in engine.by_node(keys.shards, lambda shard: shard.base):
        now_ms = server_time_ms(client)
        with client.pipeline(transaction=False) as pipe:
            for shard in shards:
                pipe.zrangebyscore(shard.leases, "-inf", now_ms, start=0, num=limit)
            expired += zip(shards, pipe.execute(), strict=True)
    released = 0
    for shard, workers in expired:
        for worker in workers:
            released += _release(engine, runner, shard, _text(worker))
    return released


def _release(engine: RedisEngine, runner: Scripts, shard: ShardKeys, worker: str) -> int:
    try:
        validate_worker_id(worker)
    except ConfigurationError:
        log.error("lease of an invalid worker id %r in %s; left alone", worker, shard.leases)
        return 0
    for _attempt in range(3):
        held = engine.node_for(shard.base).hgetall(shard.lease(worker))
        domains = [_text(domain) for domain in held]
        bad = [domain for domain in domains if not _DOMAIN.match(domain)]
        if bad:
            log.error("lease %s holds invalid domains %r; left alone", shard.lease(worker), bad[:3])
            return 0
        outcome = int(
            runner.run(
                "lease_release",
                [
                    shard.leases,
                    shard.lease(worker),
                    shard.changed,
                    shard.flushing,
                    shard.snap,
                    shard.totals,
                    shard.top_queued,
                    shard.lease_ages(worker),
                    shard.qshape,
                    shard.qshape_top,
                    shard.qshape_total,
                ]
                + [shard.domain(domain) for domain in domains],
                [worker, *domains],
            )
        )
        if outcome >= 0:
            if outcome:
                log.info("released the expired queue lease of worker %s on %s", worker, shard.base)
            return outcome
    return 0


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
