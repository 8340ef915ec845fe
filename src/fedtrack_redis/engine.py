"""One connection factory for every Redis engine: a single server, Sentinel, or Cluster.

Every part of the library (tracker, pusher, policy store and sync, election, flusher,
hydrate, leases, reads, CLI, API, demo) opens Redis through `RedisEngine.open`, which
chooses the engine by URL scheme:

* ``redis://``, ``rediss://``, ``unix://`` — one server;
* ``redis+sentinel://[user:pass@]host:port[,host:port…]/SERVICE[?db=N]`` (and
  ``rediss+sentinel://``) — the master of SERVICE, found through the sentinels and
  followed across failovers (a demoted master answers READONLY, which redis-py turns into
  a reconnect to the new master, so a former master is never written to);
* ``redis+cluster://[user:pass@]host:port[,host:port…]`` (and ``rediss+cluster://``) —
  Redis Cluster, each shard's hash tag on its slot's node.

Any of them may carry ``?wait_replicas=N``: writes count as acknowledged only once ``WAIT
N`` confirms N replicas hold them (see `RedisEngine.wait_replicas`).

The rest of the library talks to *shards*: `RedisEngine.node_for` gives the client of the
node that owns a key's slot (on one server or Sentinel, always the same client), and
`RedisEngine.by_node` groups shards per node so one pipeline per node serves a round.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from .errors import ConfigurationError
from .redis_url import EngineKind, parse_redis_url
from .scripts import REDIRECTS

if TYPE_CHECKING:
    from .keys import ShardKeys

log = logging.getLogger("fedtrack_redis.engine")

SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
#: How long one ``WAIT`` may block, in milliseconds (a replica in sync answers in < 1 ms).
WAIT_TIMEOUT_MS = 500
#: Least time between two refreshes of a cluster's slot map.
REFRESH_INTERVAL = 0.2
#: Least time between two checks of the Sentinel's master (`RedisEngine.verify_master`).
MASTER_CHECK = 1.0

T = TypeVar("T")


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=0.5, base=0.01), 2)


def _client_options() -> dict[str, Any]:
    return {
        "decode_responses": True,
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "health_check_interval": 15,
    }


class RedisEngine:
    """The Redis clients of one part of the library, for one URL (or a client lent to us).

    ``client`` runs commands whose keys decide the node (on Cluster, redis-py routes
    them); `node_for` / `by_node` give per-node clients for pipelines and raw commands.
    """

    def __init__(
        self,
        kind: EngineKind,
        client: redis.Redis | RedisCluster,
        *,
        wait_replicas: int = 0,
        description: str = "",
        sentinel: Sentinel | None = None,
        service: str = "",
    ) -> None:
        self.kind: EngineKind = kind
        self.client: Any = client
        self.wait_replicas = wait_replicas
        self.description = description
        self._sentinel = sentinel
        self._service = service
        self._refresh_lock = threading.Lock()
        self._refreshed_at = 0.0
        self._master: tuple[str, int] | None = None
        self._master_checked = 0.0

    # -- construction ------------------------------------------------------------------

    @classmethod
    def open(cls, source: str | redis.Redis | RedisCluster | RedisEngine) -> RedisEngine:
        """An engine of our own for a URL or a client (whose settings we copy)."""
        from .config import wait_replicas_default

        if isinstance(source, RedisEngine):
            if not source.url:
                raise ConfigurationError("this RedisEngine has no URL to open a copy from")
            return cls.open_url(source.url, default_wait_replicas=source.wait_replicas)
        if isinstance(source, str):
            return cls.open_url(source, default_wait_replicas=wait_replicas_default())
        if isinstance(source, RedisCluster):
            nodes = [ClusterNode(node.host, node.port) for node in source.get_nodes()]  # type: ignore[no-untyped-call]
            kwargs = dict(source.get_connection_kwargs())  # type: ignore[no-untyped-call]
            kwargs.update(_client_options())
            for unwanted in ("host", "port", "retry", "connection_class"):
                kwargs.pop(unwanted, None)
            cluster = RedisCluster(startup_nodes=nodes, **kwargs)
            return cls("cluster", cluster, description="Redis Cluster (client)")
        if isinstance(source, redis.Redis):
            pool = source.connection_pool
            kwargs = dict(pool.connection_kwargs)
            kwargs["decode_responses"] = True
            kwargs.setdefault("socket_timeout", SOCKET_TIMEOUT)
            kwargs.setdefault("socket_connect_timeout", CONNECT_TIMEOUT)
            if isinstance(pool, SentinelConnectionPool):
                kwargs.pop("is_master", None)
                kwargs.pop("check_connection", None)
                service = pool.service_name
                manager = pool.sentinel_manager
                client = manager.master_for(service, **kwargs)
                return cls(
                    "sentinel",
                    client,
                    sentinel=manager,
                    service=service,
                    description=f"Sentinel service {service} (client)",
                )
            new_pool = redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
            return cls(
                "single",
                redis.Redis(connection_pool=new_pool, retry=_retry()),
                description="Redis (client)",
            )
        raise ConfigurationError(
            f"redis must be a URL or a redis.Redis / RedisCluster, got {type(source).__name__}"
        )

    @classmethod
    def wrap(cls, source: redis.Redis | RedisCluster | RedisEngine) -> RedisEngine:
        """Use a client as it is (no copy): for functions that take a client or an engine."""
        if isinstance(source, RedisEngine):
            return source
        if isinstance(source, RedisCluster):
            return cls("cluster", source, description="Redis Cluster (client)")
        if isinstance(source.connection_pool, SentinelConnectionPool):
            return cls("sentinel", source, description="Sentinel (client)")
        return cls("single", source, description="Redis (client)")

    @classmethod
    def open_url(cls, url: str, *, default_wait_replicas: int = 0) -> RedisEngine:
        parsed = parse_redis_url(url, default_wait_replicas=default_wait_replicas)
        options = _client_options()
        engine: RedisEngine
        if parsed.kind == "single":
            plain = parsed.url
            if "wait_replicas" in plain:  # redis-py would refuse the unknown option
                base, _, _ = plain.partition("?")
                query = urllib.parse.urlencode(parsed.query)
                plain = f"{base}?{query}" if query else base
            try:
                client = redis.Redis.from_url(plain, retry=_retry(), **options)
            except ValueError as exc:
                raise ConfigurationError(f"invalid Redis URL {parsed.redacted!r}: {exc}") from None
            engine = cls(
                "single", client, wait_replicas=parsed.wait_replicas, description=parsed.redacted
            )
        elif parsed.kind == "sentinel":
            credentials = {"username": parsed.username, "password": parsed.password}
            sentinel_kwargs: dict[str, Any] = {
                "socket_timeout": CONNECT_TIMEOUT,
                "socket_connect_timeout": CONNECT_TIMEOUT,
                "decode_responses": True,
            }
            if parsed.query.get("sentinel_username"):
                sentinel_kwargs["username"] = parsed.query["sentinel_username"]
            if parsed.query.get("sentinel_password"):
                sentinel_kwargs["password"] = parsed.query["sentinel_password"]
            if parsed.tls:
                sentinel_kwargs["ssl"] = True
                options["ssl"] = True
            sentinel = Sentinel(  # type: ignore[no-untyped-call]
                list(parsed.hosts), sentinel_kwargs=sentinel_kwargs, **credentials, **options
            )
            client = sentinel.master_for(  # type: ignore[no-untyped-call]
                parsed.service, db=parsed.db, retry=_retry()
            )
            engine = cls(
                "sentinel",
                client,
                wait_replicas=parsed.wait_replicas,
                description=parsed.redacted,
                sentinel=sentinel,
                service=parsed.service,
            )
        else:
            nodes = [ClusterNode(host, port) for host, port in parsed.hosts]  # type: ignore[no-untyped-call]
            cluster_options = dict(options)
            cluster_options.pop("health_check_interval", None)
            if parsed.tls:
                cluster_options["ssl"] = True
            try:
                cluster = RedisCluster(
                    startup_nodes=nodes,
                    username=parsed.username,
                    password=parsed.password,
                    require_full_coverage=False,
                    **cluster_options,
                )
            except redis.RedisError as exc:
                from .errors import BackendUnavailableError

                raise BackendUnavailableError(
                    f"Redis Cluster {parsed.redacted} does not answer: {type(exc).__name__}"
                ) from None
            engine = cls(
                "cluster", cluster, wait_replicas=parsed.wait_replicas, description=parsed.redacted
            )
        engine.url = parsed.url
        return engine

    url: str = ""

    # -- routing --------------------------------------------------------------------------

    def node_for(self, key: str) -> redis.Redis:
        """The client of the node that owns `key`'s slot (the one client elsewhere)."""
        if self.kind != "cluster":
            return self.client  # type: ignore[no-any-return]
        cluster: RedisCluster = self.client
        node = cluster.get_node_from_key(key)  # type: ignore[no-untyped-call]
        return cluster.get_redis_connection(node)

    def by_node(
        self, keyed: Iterable[T], key: Callable[[T], str]
    ) -> list[tuple[redis.Redis, list[T]]]:
        """Group items by the node owning ``key(item)``, in first-seen order."""
        groups: dict[int, tuple[redis.Redis, list[T]]] = {}
        for item in keyed:
            client = self.node_for(key(item))
            entry = groups.get(id(client))
            if entry is None:
                groups[id(client)] = (client, [item])
            else:
                entry[1].append(item)
        return list(groups.values())

    def per_shard(
        self, shards: Sequence[ShardKeys], build: Callable[[Any, ShardKeys], object]
    ) -> list[list[Any]]:
        """Run `build(pipe, shard)` for each shard in one pipeline per node; the replies of
        each shard's commands, in `shards` order. Redirects refresh the map and retry."""
        for attempt in range(3):
            try:
                return self._per_shard_once(shards, build)
            except REDIRECTS:
                if attempt == 2:
                    raise
                self.refresh()
            except redis.ConnectionError:
                if attempt == 2 or self.kind != "cluster":
                    raise
                self.refresh()
        raise AssertionError("unreachable")  # pragma: no cover

    def _per_shard_once(
        self, shards: Sequence[ShardKeys], build: Callable[[Any, ShardKeys], object]
    ) -> list[list[Any]]:
        replies: dict[int, list[Any]] = {}
        for client, group in self.by_node(shards, lambda shard: shard.base):
            with client.pipeline(transaction=False) as pipe:
                counts = []
                for shard in group:
                    before = len(pipe)
                    build(pipe, shard)
                    counts.append(len(pipe) - before)
                results = pipe.execute(raise_on_error=False)
            for error in results:
                if isinstance(error, (*REDIRECTS, redis.ConnectionError)):
                    raise error
            offset = 0
            for shard, count in zip(group, counts, strict=True):
                replies[shard.shard] = list(results[offset : offset + count])
                offset += count
        out = []
        for shard in shards:
            values = replies[shard.shard]
            for value in values:
                if isinstance(value, Exception):
                    raise value
            out.append(values)
        return out

    def primaries(self) -> list[redis.Redis]:
        """A client per primary node (script loading, engine status)."""
        if self.kind != "cluster":
            return [self.client]
        cluster: RedisCluster = self.client
        primaries = cluster.get_primaries()  # type: ignore[no-untyped-call]
        return [cluster.get_redis_connection(node) for node in primaries]

    def refresh(self) -> None:
        """After MOVED/ASK or a node that stopped answering: reload the cluster's slot map."""
        if self.kind != "cluster":
            return
        with self._refresh_lock:
            now = time.monotonic()
            if now - self._refreshed_at < REFRESH_INTERVAL:
                return
            self._refreshed_at = now
            try:
                self.client.nodes_manager.initialize()
            except redis.RedisError as exc:
                log.debug("cluster slot map refresh failed (%s)", type(exc).__name__)

    def verify_master(self) -> None:
        """Sentinel: drop our connections to a server the sentinels no longer name master.

        redis-py asks the sentinels for the master only when it opens a connection, so a
        pooled connection to a master failed over while alive (``SENTINEL FAILOVER``, a
        partition) would keep writing there until that server closes it; measured here:
        11 s of acknowledged writes lost. Checked at most every `MASTER_CHECK` seconds.
        """
        if self.kind != "sentinel" or self._sentinel is None:
            return
        now = time.monotonic()
        if now - self._master_checked < MASTER_CHECK:
            return
        self._master_checked = now
        try:
            address = self.sentinel_master()
        except redis.RedisError:
            return
        if self._master is not None and address != self._master:
            log.warning(
                "Sentinel names a new master %s:%s for %s; reconnecting",
                address[0],
                address[1],
                self._service,
            )
            self.client.connection_pool.disconnect()
        self._master = address

    # -- pub/sub ------------------------------------------------------------------------------

    @staticmethod
    def next_message(pubsub: Any, timeout: float, *, sharded: bool) -> dict[str, Any] | None:
        """The next message of a subscription, or None within `timeout`.

        A reconnect to a new Sentinel master closes every connection of the pool from the
        thread that noticed it, this subscription's too; redis-py then fails inside its
        read with a TypeError or AttributeError on the closed socket. That is the
        connection lost, so it is raised as `redis.ConnectionError` (the listener
        resubscribes), not as a bug."""
        try:
            if sharded:
                return pubsub.get_sharded_message(timeout=timeout)  # type: ignore[no-any-return]
            return pubsub.get_message(timeout=timeout)  # type: ignore[no-any-return]
        except (TypeError, AttributeError) as exc:
            connection = getattr(pubsub, "connection", None)
            if connection is not None and getattr(connection, "_sock", None) is not None:
                raise
            raise redis.ConnectionError("subscription closed by a reconnect") from exc

    @property
    def publish_command(self) -> str:
        """``SPUBLISH`` on Cluster (sharded pub/sub on the policy tag), else ``PUBLISH``."""
        return "SPUBLISH" if self.kind == "cluster" else "PUBLISH"

    # -- replication (G10) ----------------------------------------------------------------

    def wait_args(self) -> tuple[str, str, str] | None:
        """The ``WAIT`` command that confirms a write, or None when ``wait_replicas`` is 0."""
        if self.wait_replicas <= 0:
            return None
        return ("WAIT", str(self.wait_replicas), str(WAIT_TIMEOUT_MS))

    def confirm(self, pipe: Any) -> None:
        """Append the ``WAIT`` of `wait_args` to a pipeline (no-op when not configured)."""
        args = self.wait_args()
        if args is not None:
            pipe.execute_command(*args)

    def confirmed(self, reply: object) -> bool:
        """Whether a ``WAIT`` reply counts enough replicas."""
        return self.wait_replicas <= 0 or (isinstance(reply, int) and reply >= self.wait_replicas)

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Engine, nodes and replication state (`cluster_status.engine_status`)."""
        from .cluster_status import engine_status

        return engine_status(self)

    def sentinel_master(self) -> tuple[str, int]:
        """The master the sentinels name now (Sentinel only; raises `redis.RedisError`)."""
        assert self._sentinel is not None, "not a Sentinel engine"
        host, port = self._sentinel.discover_master(self._service)  # type: ignore[no-untyped-call]
        return str(host), int(port)

    def ping(self) -> bool:
        try:
            return all(bool(client.ping()) for client in self.primaries())
        except redis.RedisError:
            return False

    def close(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.client.close()
