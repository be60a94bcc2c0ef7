"""Redis connections: one that decodes text (our records), one raw (RQ pickles its jobs), and an asyncio one
for the API's event loop (waits, reads on the request path: no thread hop)."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio
from redis import Redis


@dataclass(frozen=True)
class Connections:
    text: Redis  # decode_responses=True: run records, leases, workers
    raw: Redis  # bytes: what RQ needs
    aio: redis.asyncio.Redis  # decode_responses=True; connects on first use, in the loop that uses it

    @classmethod
    def from_url(cls, url: str) -> Connections:
        # A Redis that does not answer must fail calls, not hang them (readiness probes, API requests).
        # The raw client gets no read timeout: RQ blocks on BLMOVE for minutes by design.
        return cls(
            text=Redis.from_url(
                url, decode_responses=True, health_check_interval=30, socket_connect_timeout=5, socket_timeout=30
            ),
            raw=Redis.from_url(url, health_check_interval=30, socket_connect_timeout=5),
            aio=redis.asyncio.Redis.from_url(
                url, decode_responses=True, health_check_interval=30, socket_connect_timeout=5, socket_timeout=30
            ),
        )

    def close(self) -> None:
        """Close the blocking clients (the asyncio one is closed by :meth:`aclose`, in its own loop)."""
        self.text.close()
        self.raw.close()

    async def aclose(self) -> None:
        await self.aio.aclose()
