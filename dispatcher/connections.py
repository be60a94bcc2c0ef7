"""Redis connections: one that decodes text (our records) and one raw (RQ pickles its jobs)."""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis


@dataclass(frozen=True)
class Connections:
    text: Redis  # decode_responses=True: run records, leases, workers
    raw: Redis  # bytes: what RQ needs

    @classmethod
    def from_url(cls, url: str) -> Connections:
        # A Redis that does not answer must fail calls, not hang them (readiness probes, API requests).
        # The raw client gets no read timeout: RQ blocks on BLMOVE for minutes by design.
        return cls(
            text=Redis.from_url(
                url, decode_responses=True, health_check_interval=30, socket_connect_timeout=5, socket_timeout=30
            ),
            raw=Redis.from_url(url, health_check_interval=30, socket_connect_timeout=5),
        )

    def close(self) -> None:
        self.text.close()
        self.raw.close()
