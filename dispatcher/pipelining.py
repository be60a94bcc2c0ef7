"""Many commands on one connection, each chunk sent as soon as it is made, the replies read at the end.

redis-py's Pipeline sends its commands once every one is queued, then waits for the replies: a caller that
makes the commands (binding a thousand runs: Python's work, on one core) and Redis that runs them (their
scripts: Redis' work, on another) take turns, each idle while the other works. Here each chunk goes out as
soon as the caller's iterator hands it over, so Redis runs one chunk while the next is made; the replies
wait in the socket meanwhile (Redis buffers what a client has not read yet).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError

Command = tuple[Any, ...]


def send_as_made(redis: Redis, chunks: Iterable[Sequence[Command]]) -> list[Any]:
    """The reply of every command of ``chunks``, in order (an error reply as its ResponseError, not raised).

    Nothing is retried: a connection lost midway raises, and what was sent before may have run (the
    caller's commands are idempotent, or it says what it does about it).
    """
    pool = redis.connection_pool
    connection = pool.get_connection()
    sent = 0
    try:
        for chunk in chunks:
            if chunk:
                # A health check reads a PONG: only before the first chunk, while no reply is pending.
                packed = connection.pack_commands(chunk)  # type: ignore[no-untyped-call]
                connection.send_packed_command(packed, check_health=sent == 0)  # type: ignore[no-untyped-call]
                sent += len(chunk)
        replies: list[Any] = []
        for _ in range(sent):
            try:
                replies.append(connection.read_response())
            except ResponseError as exc:
                replies.append(exc)
        return replies
    except BaseException:
        connection.disconnect()  # type: ignore[no-untyped-call]  # replies left unread: the connection is out of step with its commands
        raise
    finally:
        pool.release(connection)
