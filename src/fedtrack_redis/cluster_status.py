"""What an operator needs to know of a namespace's plumbing, in one read.

The engine and its nodes (one server, the Sentinel's master, every Cluster primary) with
their replicas and whether they are in sync (G10), and which database the namespace's
Redis data came from, beside the identity of the database the caller uses (G11). Used by
``fedtrack status``, ``/healthz`` and the dashboard's header.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from .engine import RedisEngine
from .hydrate import marker_values
from .identity import is_identity
from .keys import NamespaceKeys


@dataclass
class IdentityReport:
    """Which database Redis names, and whether the caller's database is that one."""

    in_redis: list[str] = field(default_factory=list)
    this_database: str | None = None
    pinned: str | None = None
    missing_shards: list[int] = field(default_factory=list)
    legacy_shards: list[int] = field(default_factory=list)

    @property
    def mismatch(self) -> str | None:
        """Why the caller's database may not be used with this Redis, or None."""
        if self.pinned and self.this_database and self.pinned != self.this_database:
            return f"this database is {self.this_database}, FEDTRACK_DATABASE_ID pins {self.pinned}"
        if len(self.in_redis) > 1:
            return f"Redis names several databases: {', '.join(self.in_redis)}"
        if self.in_redis and self.this_database and self.in_redis[0] != self.this_database:
            return (
                f"Redis holds data of database {self.in_redis[0]},"
                f" this database is {self.this_database}"
            )
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "redis": self.in_redis,
            "this_database": self.this_database,
            "pinned": self.pinned,
            "missing_shards": self.missing_shards,
            "legacy_shards": self.legacy_shards,
            "mismatch": self.mismatch,
        }


def engine_status(engine: RedisEngine) -> dict[str, Any]:
    """Engine, nodes and replication state, for ``fedtrack status`` and ``/healthz``."""
    master: str | None = None
    if engine.kind == "sentinel":
        try:
            host, port = engine.sentinel_master()
            master = f"{host}:{port}"
        except redis.RedisError as exc:
            master = f"unknown ({type(exc).__name__})"
    # A Sentinel client's pool has no fixed address: the master is what the sentinels name.
    nodes = [_node_status(client, master) for client in engine.primaries()]
    in_sync = all(node.get("replicas_in_sync", True) for node in nodes)
    enough = all(
        node.get("replicas", 0) >= engine.wait_replicas for node in nodes if "replicas" in node
    )
    result: dict[str, Any] = {
        "engine": engine.kind,
        "url": engine.description,
        "nodes": nodes,
        "wait_replicas": engine.wait_replicas,
        "replicas_in_sync": in_sync,
        "enough_replicas": enough,
    }
    if master is not None:
        result["master"] = master
    return result


def _node_status(client: redis.Redis, address: str | None = None) -> dict[str, Any]:
    address = address or _address(client)
    try:
        info = client.info("replication")
    except redis.RedisError as exc:
        return {"address": address, "up": False, "error": type(exc).__name__}
    master_offset = int(info.get("master_repl_offset", 0))
    replicas: list[dict[str, Any]] = []
    for name, value in info.items():
        if name.startswith("slave") and isinstance(value, dict):
            replicas.append(
                {
                    "address": f"{value.get('ip')}:{value.get('port')}",
                    "state": value.get("state"),
                    "lag_bytes": max(0, master_offset - int(value.get("offset", 0))),
                }
            )
    return {
        "address": address,
        "up": True,
        "role": info.get("role"),
        "replicas": len(replicas),
        "replicas_in_sync": all(r["state"] == "online" and r["lag_bytes"] == 0 for r in replicas),
        "replica_details": replicas,
    }


def _address(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


def identity_report(
    engine: RedisEngine,
    keys: NamespaceKeys,
    this_database: str | None = None,
    pinned: str | None = None,
) -> IdentityReport:
    """Read the 16 markers and the policy's identity (raises `redis.RedisError`)."""
    markers = marker_values(engine, keys)
    policy = engine.node_for(keys.policy_meta).hget(keys.policy_meta, "database_id")
    named = {value for value in markers.values() if is_identity(value)}
    if is_identity(policy):
        named.add(str(policy))
    return IdentityReport(
        in_redis=sorted(str(value) for value in named),
        this_database=this_database,
        pinned=pinned,
        missing_shards=[shard for shard, value in markers.items() if value is None],
        legacy_shards=[
            shard
            for shard, value in markers.items()
            if value is not None and not is_identity(value)
        ],
    )


def describe(
    engine: RedisEngine,
    keys: NamespaceKeys,
    this_database: str | None = None,
    pinned: str | None = None,
) -> dict[str, Any]:
    """Engine and identity, as one JSON-ready dict (``redis: unavailable`` when down)."""
    try:
        report = identity_report(engine, keys, this_database, pinned)
        plumbing = engine.status()
    except redis.RedisError as exc:
        return {"redis": f"unavailable ({type(exc).__name__})", "engine": engine.kind}
    return {"redis": "ok", **plumbing, "database": report.as_dict()}
