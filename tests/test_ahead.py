"""ahead.send_ahead against a real Redis: replies in order, errors after their batch,
and a connection never left out of step."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from fedtrack_redis.ahead import send_ahead


@pytest.fixture
def key(redis_client: redis.Redis) -> Iterator[str]:
    name = f"fedtrack-test-ahead:{uuid.uuid4().hex}"
    yield name
    redis_client.delete(name)


def test_each_batch_is_sent_before_the_replies_of_the_one_before_are_read(
    redis_client: redis.Redis, key: str
) -> None:
    produced: list[int] = []
    received: list[int] = []

    def batches() -> Iterator[list[list[Any]]]:
        for number in range(5):
            produced.append(number)
            yield [["INCRBY", key, 1], ["GET", key]]

    for number, replies in enumerate(send_ahead(redis_client, batches())):
        # batch `number + 1` was already produced (and sent) when `number`'s replies came
        assert len(produced) == min(number + 2, 5)
        received.append(number)
        assert replies == [number + 1, str(number + 1)]
    assert received == [0, 1, 2, 3, 4]


def test_an_error_reply_raises_once_its_batch_was_read_and_the_pool_stays_usable(
    redis_client: redis.Redis, key: str
) -> None:
    redis_client.set(key, "text")
    batches = [[["INCR", key], ["GET", key]], [["GET", key]]]
    with pytest.raises(redis.ResponseError, match="not an integer"):
        list(send_ahead(redis_client, batches))
    assert redis_client.get(key) == "text"  # the next command on the pool reads its own reply
    assert list(send_ahead(redis_client, [[["GET", key]]])) == [["text"]]


def test_stopping_early_leaves_no_reply_for_the_next_user(
    redis_client: redis.Redis, key: str
) -> None:
    batches = ([["SET", key, str(number)], ["GET", key]] for number in range(10))
    replies = send_ahead(redis_client, batches)
    assert next(replies) == ["OK", "0"]  # replies as sent: no callbacks
    replies.close()  # batch 1 was sent (it ran) and is unread
    assert redis_client.incr(key) == 2
    assert list(send_ahead(redis_client, [[["GET", key]]])) == [["2"]]
