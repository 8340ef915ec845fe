"""The connection factory: every URL form, wait_replicas, one-line errors (unit + real Redis)."""

from __future__ import annotations

import pytest

from fedtrack_redis.engine import RedisEngine
from fedtrack_redis.errors import ConfigurationError
from fedtrack_redis.redis_url import parse_redis_url


def test_single_server_forms() -> None:
    for url in ("redis://h:6379/2", "rediss://h:6380/0", "unix:///run/redis.sock?db=1"):
        parsed = parse_redis_url(url)
        assert parsed.kind == "single" and parsed.wait_replicas == 0
    assert parse_redis_url("rediss://h:1/0").tls
    assert parse_redis_url("redis://h/0?wait_replicas=2").wait_replicas == 2
    assert parse_redis_url("redis://h/0", default_wait_replicas=1).wait_replicas == 1


def test_sentinel_form() -> None:
    parsed = parse_redis_url(
        "rediss+sentinel://user:pw@s1:26379,s2,[::1]:26381/fedtrack?db=3&wait_replicas=2"
    )
    assert parsed.kind == "sentinel" and parsed.tls
    assert parsed.hosts == (("s1", 26379), ("s2", 26379), ("::1", 26381))
    assert (parsed.service, parsed.db, parsed.wait_replicas) == ("fedtrack", 3, 2)
    assert (parsed.username, parsed.password) == ("user", "pw")
    assert "pw" not in parsed.redacted and "pw" not in repr(parsed)


def test_cluster_form() -> None:
    parsed = parse_redis_url("redis+cluster://:pw@n1:7000,n2:7001?wait_replicas=1")
    assert parsed.kind == "cluster"
    assert parsed.hosts == (("n1", 7000), ("n2", 7001))
    assert (parsed.password, parsed.wait_replicas) == ("pw", 1)


@pytest.mark.parametrize(
    "url",
    [
        "cache:6379",
        "http://cache:6379",
        "redis+sentinel://s1:26379",  # no service
        "redis+sentinel://s1:26379/svc?db=x",
        "redis+cluster://n1:7000/2",  # a cluster has only db 0
        "redis+cluster://n1:port",
        "redis+cluster://:pw@n1:99999",
        "redis+sentinel://s1:1/svc?unknown=1",
        "redis://h/0?wait_replicas=-1",
        "redis://h/0?wait_replicas=100",
    ],
)
def test_bad_urls_fail_with_one_redacted_line(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_redis_url(url)
    message = str(info.value)
    assert "\n" not in message and "pw@" not in message


def test_a_bad_single_server_url_fails_at_open() -> None:
    with pytest.raises(ConfigurationError):
        RedisEngine.open("redis://h:notaport/0")


def test_open_and_status_on_a_real_server(redis_url: str) -> None:
    engine = RedisEngine.open(redis_url + "?wait_replicas=0")
    try:
        assert engine.kind == "single" and engine.ping()
        status = engine.status()
        assert status["engine"] == "single" and status["nodes"][0]["up"]
        assert engine.publish_command == "PUBLISH"
        assert engine.wait_args() is None
    finally:
        engine.close()
    with_wait = RedisEngine.open(redis_url + "?wait_replicas=1")
    try:
        assert with_wait.wait_args() == ("WAIT", "1", "500")
        assert not with_wait.confirmed(0) and with_wait.confirmed(1)
    finally:
        with_wait.close()


def test_a_subscription_closed_under_its_reader_is_a_lost_connection() -> None:
    """A reconnect to a new Sentinel master closes the pool's connections from another
    thread; redis-py then fails inside the subscriber's read with a TypeError on the
    closed socket (seen in the soak): the listeners must see a lost connection."""
    from types import SimpleNamespace

    import redis as redis_module

    from fedtrack_redis.engine import RedisEngine

    class Subscription:
        def __init__(self, sock: object) -> None:
            self.connection = SimpleNamespace(_sock=sock)

        def get_message(self, timeout: float) -> None:
            raise TypeError("argument must be an int, or have a fileno() method.")

        get_sharded_message = get_message

    for sharded in (False, True):
        with pytest.raises(redis_module.ConnectionError, match="closed by a reconnect"):
            RedisEngine.next_message(Subscription(None), 0.1, sharded=sharded)
        with pytest.raises(TypeError):  # with its socket open, a TypeError is a bug
            RedisEngine.next_message(Subscription(object()), 0.1, sharded=sharded)
