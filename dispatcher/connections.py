"""Redis connections: one that decodes text (our records), one raw (RQ pickles its jobs), and an asyncio one
for the API's event loop (waits, reads on the request path: no thread hop).

Each client draws from a *blocking* pool: when every connection is busy, a call waits (up to
:data:`POOL_WAIT_SECONDS`) for one to come back instead of failing. redis-py's plain pool caps at 100
connections and raises "Too many connections" beyond, so a burst of concurrent requests answered errors
(503) to whoever came last, stored runs included. A connection is held for one command or script, well
under a millisecond, so waiting for one costs little; and nothing holds one for long (waits share one
pub/sub connection per process, event streams open their own, counted per tenant).

The asyncio client packs its commands with hiredis, as redis-py's blocking client does when hiredis is
installed; its own asyncio connections pack them in Python, at three times the CPU (the submit script's
hundred arguments: about 90 µs against 30, on the event loop of every submission).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio
from redis import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.connection import HiredisRespSerializer
from redis.utils import HIREDIS_AVAILABLE

try:
    import hiredis

    HIREDIS_PACKS = HIREDIS_AVAILABLE and hasattr(hiredis, "pack_command")  # older hiredis only parses
except ImportError:  # redis-py without its hiredis extra
    HIREDIS_PACKS = False

POOL_SIZE = 100
POOL_WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class Connections:
    text: Redis  # decode_responses=True: run records, leases, workers
    raw: Redis  # bytes: what RQ needs
    aio: redis.asyncio.Redis  # decode_responses=True; connects on first use, in the loop that uses it

    @classmethod
    def from_url(cls, url: str) -> Connections:
        # A Redis that does not answer must fail calls, not hang them (readiness probes, API requests).
        # The raw client gets no read timeout: RQ blocks on BLMOVE for minutes by design.
        common = {"health_check_interval": 30, "socket_connect_timeout": 5, "max_connections": POOL_SIZE}
        return cls(
            # from_pool: the client owns its pool, and closing it closes the pool's connections.
            text=Redis.from_pool(
                BlockingConnectionPool.from_url(
                    url, decode_responses=True, socket_timeout=30, timeout=POOL_WAIT_SECONDS, **common
                )
            ),
            raw=Redis.from_pool(BlockingConnectionPool.from_url(url, timeout=POOL_WAIT_SECONDS, **common)),
            aio=redis.asyncio.Redis.from_pool(
                packed_by_hiredis(
                    redis.asyncio.BlockingConnectionPool.from_url(
                        url, decode_responses=True, socket_timeout=30, timeout=POOL_WAIT_SECONDS, **common
                    )
                )
            ),
        )

    def close(self) -> None:
        """Close the blocking clients (the asyncio one is closed by :meth:`aclose`, in its own loop)."""
        self.text.close()
        self.raw.close()

    async def aclose(self) -> None:
        await self.aio.aclose()


class _HiredisPacking:
    """Mixed into an asyncio connection class: commands packed as the blocking client packs them."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._packer.pack(*args)
        return packed


def packed_by_hiredis(pool: redis.asyncio.ConnectionPool) -> redis.asyncio.ConnectionPool:
    """``pool``, its connections packing commands with hiredis when it is installed. The pool's own connection
    class (TCP, TLS or Unix socket, chosen from the URL) is kept underneath."""
    base: type[AbstractConnection] = pool.connection_class
    if HIREDIS_PACKS and not issubclass(base, _HiredisPacking):
        pool.connection_class = type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})
    return pool
