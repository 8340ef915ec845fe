"""Keep Redis and Python busy at once: send the next batch of commands before reading
the replies of the one before, on one connection of the node's pool.

A plain call or pipeline leaves Redis idle while the client turns a reply into rows and
builds the next request, and a helper thread that reads ahead costs a hand-off of the
interpreter lock each time its reply arrives (CPython makes it wait up to the switch
interval, 5 ms, while the other thread computes). With one batch in flight on one
thread the two overlap and nothing waits for a hand-off. Each command stays its own
short call on the server, so other clients are served between them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Iterable, Sequence
from typing import Any

import hiredis
import redis
from redis.exceptions import ResponseError


def send_ahead(
    client: redis.Redis, batches: Iterable[Sequence[Sequence[Any]]]
) -> Generator[list[Any], None, None]:
    """The replies of each batch of `batches` (each command a sequence of arguments), in
    order. Batch i+1 is produced and sent before the replies of batch i are read, so the
    caller's work on replies and the producer's work on requests overlap with Redis's.

    An error reply raises (as `ResponseError`) once its whole batch was read. A batch
    whose replies were not all read (an exception, the caller stopping early) leaves the
    connection closed rather than out of step."""
    pool = client.connection_pool
    connection: Any = pool.get_connection()
    in_step = False
    try:
        in_flight: deque[int] = deque()
        for batch in batches:
            if batch:
                # hiredis packs in C; redis-py's serializer first walks every argument in
                # Python, which for a few thousand arguments per command doubled the cost
                connection.send_packed_command(
                    [hiredis.pack_command(tuple(command)) for command in batch]
                )
                in_flight.append(len(batch))
            if len(in_flight) > 1:
                yield _replies(connection, in_flight.popleft())
        while in_flight:
            yield _replies(connection, in_flight.popleft())
        in_step = True
    finally:
        if not in_step:
            connection.disconnect()
        pool.release(connection)


def _replies(connection: Any, count: int) -> list[Any]:
    replies: list[Any] = []
    error: ResponseError | None = None
    for _ in range(count):
        try:
            replies.append(connection.read_response())
        except ResponseError as exc:  # read the rest: the connection stays in step
            error = error or exc
            replies.append(exc)
    if error is not None:
        raise error
    return replies
