"""What every ``comfy-dispatch`` command shares: the one-line error and exit 2, and Redis being away."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def die(message: str) -> typer.Exit:
    """Print a one-line error; the caller raises the returned Exit (so type checkers see the flow end)."""
    typer.echo(f"comfy-dispatch: {message}", err=True)
    return typer.Exit(2)


@contextmanager
def redis_reachable(redis_url: str) -> Iterator[None]:
    """Turn "Redis is not there" into the one-line error and exit 2, not a traceback."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise die(f"cannot reach Redis at {redis_url}: {exc}") from None
