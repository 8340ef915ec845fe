"""From key schema version 2 to 3: retire the old shards, then let the new ones hydrate.

Schema 3 (docs/redis-keys.md) puts every shard under a hash tag of its own, so a flusher
leader of this release finds its shards without a ``hydrated`` marker and restores them
from PostgreSQL, where the previous release flushed its counts. What must not happen is a
process of the previous release still writing: its workers would push into the old
shards, where nothing of this release reads, and its flusher, should it win the lock,
would write those shards' absolute values over the rows this release flushed.

So before a new shard is hydrated, the leader retires the old shard of the same number
(the shard of a domain is the same in both versions): ``retire_shard.lua`` sets the old
marker to `RETIRED`, an identity no database has, if the shard holds nothing the
database lacks (no domain changed since its last flush, no flush in progress). Workers
and flushers of the previous release refuse a shard whose marker names another database
(G11), so from then on they leave it alone, and the new shard is hydrated from complete
rows. An old shard with changes not flushed yet is not retired and its new shard waits:
the leader says so once, and a flusher of the previous release (with its workers stopped)
or ``fedtrack db rehydrate --yes`` (which drops those changes) unblocks it.

Afterwards the leader deletes the retired shards' keys a few thousand domains per tick;
the retired markers stay, so that a forgotten old process keeps refusing them.
"""

from __future__ import annotations

import logging

from .engine import RedisEngine
from .hydrate import delete_domains, delete_leases
from .keys import NamespaceKeys
from .scripts import Scripts

log = logging.getLogger("fedtrack_redis.upgrade")

#: The key schema version this release upgrades from.
PREVIOUS_SCHEMA = 2
#: The marker of a retired shard: a well-formed database identity that no database has
#: (identities are random), so the previous release's G11 check refuses the shard.
RETIRED = "0" * 32
#: Domains whose keys one call of `drop_retired` deletes at most (in calls of `PAGE`).
DROP_PER_TICK = 2_000
PAGE = 250


def previous_keys(keys: NamespaceKeys) -> NamespaceKeys:
    """The namespace's keys under the previous schema's shard tags."""
    return NamespaceKeys(keys.namespace, schema=PREVIOUS_SCHEMA)


def retire_previous(
    scripts: Scripts, keys: NamespaceKeys, database_id: str, *, force: bool = False
) -> list[int]:
    """Retire every old shard that holds nothing the database lacks (all of them with
    `force`, dropping what was not flushed); the shard numbers left unretired."""
    pending: list[int] = []
    for shard in previous_keys(keys).shards:
        done = scripts.run(
            "retire_shard",
            [shard.hydrated, shard.changed, shard.flush_state],
            [database_id, RETIRED, "1" if force else "0"],
        )
        if not int(done):
            pending.append(shard.shard)
    return pending


def drop_retired(
    engine: RedisEngine, keys: NamespaceKeys, budget: int | None = DROP_PER_TICK
) -> int:
    """Delete the keys of retired old shards, at most `budget` domains' (None: all), and
    the shard's other keys once its domains are gone; the marker stays. Returns the keys
    deleted: 0 once nothing is left."""
    deleted = 0
    left = budget
    for shard in previous_keys(keys).shards:
        client = engine.node_for(shard.base)
        if client.get(shard.hydrated) != RETIRED:
            continue
        while left is None or left > 0:
            count, domains = delete_domains(
                client, shard, PAGE if left is None else min(PAGE, left)
            )
            deleted += count
            if not domains:
                break
            if left is not None:
                left -= domains
        if left is not None and left <= 0:
            break
        deleted += delete_leases(client, shard)
        deleted += int(client.unlink(*(key for key in shard.fixed() if key != shard.hydrated)))
    return deleted


class PreviousSchema:
    """The flusher leader's part: which new shards may be hydrated now, and deleting the
    retired shards' keys a tick at a time."""

    def __init__(self, engine: RedisEngine, scripts: Scripts, keys: NamespaceKeys) -> None:
        self._engine = engine
        self._scripts = scripts
        self._keys = keys
        self._waiting: list[int] = []
        self._dropping = True  # look once per process: an upgrade may have retired shards

    def hydratable(self, missing: list[int], database_id: str) -> list[int]:
        """The shards of `missing` whose old shard is retired (or never existed)."""
        waiting = retire_previous(self._scripts, self._keys, database_id)
        if waiting != self._waiting:
            if waiting:
                log.error(
                    "shards %s of key schema %d hold changes not yet in the database; their"
                    " new shards wait: run a flusher of the previous release once (its"
                    " workers stopped), or `fedtrack db rehydrate --yes` to drop them",
                    waiting,
                    PREVIOUS_SCHEMA,
                )
            else:
                log.info("the shards of key schema %d are retired", PREVIOUS_SCHEMA)
            self._waiting = waiting
        self._dropping = True
        return [shard for shard in missing if shard not in waiting]

    def drop_some(self) -> None:
        """Delete the next part of the retired shards' keys, until none is left."""
        if self._dropping:
            self._dropping = drop_retired(self._engine, self._keys) > 0
