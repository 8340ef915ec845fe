"""Key schema: one tag per shard, stable shards, nothing the input can forge (unit)."""

from __future__ import annotations

import re
import zlib

import pytest
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from fedtrack_redis.errors import ConfigurationError
from fedtrack_redis.keys import SHARDS, NamespaceKeys, shard_of, shard_tag, validate_worker_id

TAG = re.compile(r"\{([^}]*)\}")


def tag(key: str) -> str:
    match = TAG.search(key)
    assert match is not None, key
    return match.group(1)


def test_every_key_of_a_shard_shares_its_tag() -> None:
    keys = NamespaceKeys("prod")
    for shard in keys.shards:
        names = [
            shard.domain("example.com"),
            shard.active,
            shard.changed,
            shard.hydrated,
            shard.hydrating,
            shard.acks,
            shard.ack_seen,
            shard.leases,
            shard.lease("host-1.42.abc"),
        ]
        assert {tag(name) for name in names} == {shard_tag("prod", shard.shard)}
        assert shard_tag("prod", shard.shard).startswith(f"prod:{shard.shard:02d}:")
    assert len({tag(shard.active) for shard in keys.shards}) == SHARDS


#: The slots of the default namespace's shards. Pinned: a change to the tag scheme moves
#: every stored hash to a new key, which needs a new schema version and a rehydrate.
FEDTRACK_SLOTS = [
    954, 1389, 2394, 3593, 4316, 5643, 6276, 7763,
    8219, 9932, 10731, 12092, 12992, 13335, 14989, 15450,
]  # fmt: skip


def test_shard_slots_are_pinned_and_spread_evenly_over_the_masters() -> None:
    keys = NamespaceKeys("fedtrack")
    assert [key_slot(shard.totals.encode()) for shard in keys.shards] == FEDTRACK_SLOTS
    for namespace in ("fedtrack", "prod", "a", "x" * 64):
        slots = [
            key_slot(NamespaceKeys(namespace).shards[s].active.encode()) for s in range(SHARDS)
        ]
        for masters in (1, 2, 3, 4, 6):
            # `redis-cli --cluster create` splits the slots into equal ranges.
            per_master = [0] * masters
            for slot in slots:
                per_master[slot * masters // REDIS_CLUSTER_HASH_SLOTS] += 1
            assert max(per_master) - min(per_master) <= 1, (namespace, masters, per_master)


def test_policy_keys_share_one_tag_apart_from_the_shards() -> None:
    keys = NamespaceKeys("prod")
    assert tag(keys.rules) == tag(keys.policy_meta) == tag(keys.policy_channel) == "prod:policy"
    assert tag(keys.flusher_lock) == "prod:flusher"


def test_shard_is_a_stable_crc32() -> None:
    assert shard_of("example.com") == zlib.crc32(b"example.com") % SHARDS
    keys = NamespaceKeys("prod")
    assert keys.shard_for("example.com").shard == shard_of("example.com")
    spread = {shard_of(f"domain{i}.example") for i in range(1000)}
    assert spread == set(range(SHARDS))


def test_documented_schema_version_matches_the_code() -> None:
    from pathlib import Path

    from fedtrack_redis.keys import SCHEMA_VERSION

    doc = (Path(__file__).parents[1] / "docs" / "redis-keys.md").read_text()
    assert f"schema version {SCHEMA_VERSION}" in doc
    assert f"{SHARDS} shards" in doc


@pytest.mark.parametrize("bad", ["", "a{b", "a}b", "a:b", "a b", "x" * 65, "ü"])
def test_invalid_namespaces_are_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        NamespaceKeys(bad)


@pytest.mark.parametrize("bad", ["", "w{1}", "w:1", "w 1", "x" * 129])
def test_invalid_worker_ids_are_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        validate_worker_id(bad)
