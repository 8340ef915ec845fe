"""Fixtures: a real Redis and a real PostgreSQL for every test, each test in its own
namespace and its own database; throwaway Redis Sentinel and Redis Cluster deployments
for the engine matrix (``engine_url``: one test body over single, Sentinel, Cluster).

Where they come from, in order: ``FEDTRACK_TEST_REDIS_URL`` / ``FEDTRACK_TEST_DATABASE_URL``
(the database URL must allow CREATE DATABASE), else the local services on 127.0.0.1
when they answer, else throwaway servers started for the session. Tests delete only the
keys of their own namespace and drop only the databases they created.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
import redis
import sqlalchemy as sa

from engines import RedisCluster, RedisSentinelSet
from fedtrack_redis import PolicyStore
from servers import PostgresServer, RedisServer, wait_for

__all__ = ["wait_for"]
pytest_plugins = ["cli_helpers"]

#: Where the machine's own services are looked for (overridable, so a test can pretend
#: they are absent and check that throwaway servers are started instead).
LOCAL_REDIS = os.environ.get("FEDTRACK_TEST_LOCAL_REDIS", "redis://127.0.0.1:6379/0")
LOCAL_POSTGRES = os.environ.get(
    "FEDTRACK_TEST_LOCAL_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _redis_answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        with contextlib.closing(client):
            return bool(client.ping())
    except redis.RedisError:
        return False


def _postgres_answers(url: str) -> bool:
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 2})
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        engine.dispose()
        return True
    except sa.exc.SQLAlchemyError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis server shared by the session (tests use their own namespace)."""
    configured = os.environ.get("FEDTRACK_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    if _redis_answers(LOCAL_REDIS):
        yield LOCAL_REDIS
        return
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """URL of a real PostgreSQL where the session may create and drop its own databases."""
    configured = os.environ.get("FEDTRACK_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    if _postgres_answers(LOCAL_POSTGRES):
        yield LOCAL_POSTGRES
        return
    server = PostgresServer().init().start()
    try:
        yield server.url()
    finally:
        server.close()


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A namespace of this test's own; its keys are deleted afterwards."""
    name = "t" + uuid.uuid4().hex[:12]
    yield name
    client = redis.Redis.from_url(redis_url)
    with contextlib.closing(client):
        for key in client.scan_iter(match=f"fedtrack:{{{name}:*", count=1000):
            client.delete(key)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(params=["fakeredis", "redis"])
def script_client(
    request: pytest.FixtureRequest, redis_client: redis.Redis
) -> Iterator[redis.Redis]:
    """A client to run a Lua script against: fakeredis (its Lua is lupa's, so quick unit
    tests of the logic) and the real Redis (the scripts' real Lua 5.1)."""
    if request.param == "redis":
        yield redis_client
        return
    import fakeredis

    client = fakeredis.FakeRedis(decode_responses=True)
    yield client
    client.close()


def create_database(admin_url: str) -> str:
    """Create an empty PostgreSQL database and return its SQLAlchemy URL."""
    name = "fedtrack_test_" + uuid.uuid4().hex[:12]
    url = sa.make_url(admin_url)
    with psycopg.connect(_libpq(url), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, database_url: str) -> None:
    name = sa.make_url(database_url).database
    with psycopg.connect(_libpq(sa.make_url(admin_url)), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _libpq(url: sa.URL) -> str:
    parts = {
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "user": url.username or "postgres",
        "dbname": url.database or "postgres",
    }
    if url.password:
        parts["password"] = url.password
    return " ".join(f"{key}={value}" for key, value in parts.items())


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A PostgreSQL database of this test's own, dropped afterwards."""
    url = create_database(postgres_admin_url)
    yield url
    drop_database(postgres_admin_url, url)


def upgrade_schema(url: str) -> str:
    """Apply the migrations to the database at `url` (as ``fedtrack db upgrade``); return it."""
    from fedtrack_redis.connections import database_engine
    from fedtrack_redis.store import migrate

    engine = database_engine(url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture
def migrated_postgres_url(postgres_url: str) -> str:
    """This test's PostgreSQL database with the schema created."""
    return upgrade_schema(postgres_url)


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    return f"sqlite:///{os.path.join(tmp_path, 'fedtrack.sqlite3')}"


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on PostgreSQL and once on SQLite."""
    fixture = "postgres_url" if request.param == "postgresql" else "sqlite_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def make_policy_store(
    database_url: str, redis_url: str, namespace: str
) -> Iterator[Callable[..., PolicyStore]]:
    """Build initialised PolicyStores on this test's database and namespace (the schema
    upgraded, as ``fedtrack db upgrade`` would); all closed after."""
    stores: list[PolicyStore] = []

    def make(**kwargs: object) -> PolicyStore:
        options: dict[str, object] = {"namespace": namespace, "resync_interval": 0.2}
        options.update(kwargs)
        store = PolicyStore(database_url, redis_url, **options)  # type: ignore[arg-type]
        stores.append(store.init(migrate=True))
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def policy_store(make_policy_store: Callable[..., PolicyStore]) -> PolicyStore:
    return make_policy_store()


# -- the engine matrix: single, Sentinel, Cluster ------------------------------------------

#: Fixtures that start a Sentinel or Cluster deployment: a test using one is an ``engines``
#: test (as are the sentinel and cluster runs of `engine_url`, by their params' marks).
ENGINE_FIXTURES = frozenset(
    {"redis_cluster", "redis_sentinel", "throwaway_cluster", "throwaway_sentinel"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if ENGINE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.engines)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A Redis Cluster (3 masters, 3 replicas) shared by the session, started when a test
    first asks for it. Tests work in their own namespace and never kill its nodes (that
    is `throwaway_cluster`)."""
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinelSet]:
    """A Sentinel set (1 master, 2 replicas, 3 sentinels, service ``fedtrack``) shared by
    the session, started when a test first asks for it; never kill its nodes (that is
    `throwaway_sentinel`)."""
    with RedisSentinelSet() as sentinels:
        yield sentinels


@pytest.fixture
def throwaway_cluster() -> Iterator[RedisCluster]:
    """A Redis Cluster of this test's own, for failover tests that kill nodes."""
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture
def throwaway_sentinel() -> Iterator[RedisSentinelSet]:
    """A Sentinel set of this test's own, for failover tests that kill nodes."""
    with RedisSentinelSet() as sentinels:
        yield sentinels


@pytest.fixture(
    params=[
        pytest.param("single"),
        pytest.param("sentinel", marks=pytest.mark.engines),
        pytest.param("cluster", marks=pytest.mark.engines),
    ]
)
def engine_url(request: pytest.FixtureRequest) -> str:
    """The URL of the session's shared engine: each test using this runs on one Redis
    server (`redis_url`), on Sentinel (``redis+sentinel://…/fedtrack``) and on Cluster
    (``redis+cluster://…``); the last two carry the ``engines`` mark."""
    if request.param == "single":
        return str(request.getfixturevalue("redis_url"))
    fixture = "redis_sentinel" if request.param == "sentinel" else "redis_cluster"
    engine: RedisCluster | RedisSentinelSet = request.getfixturevalue(fixture)
    return engine.url
