"""What every request handler needs, built once per app and kept on ``app.state.services``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request
from rq import Queue

from api.body import read_json_object
from dispatcher.connections import Connections
from dispatcher.registry import Registry
from dispatcher.runs import RunStore
from dispatcher.settings import Settings
from dispatcher.storage import OutputStore

# Requests waiting for a run each hold a thread for up to 300 s; they get their own pool so
# they can never take the threads that plain (sync) routes run on.
MAX_CONCURRENT_WAITS = 200


@dataclass(frozen=True)
class Services:
    """The app's settings and the clients of Redis, the workflow registry, the output store and RQ."""

    settings: Settings
    conns: Connections
    registry: Registry
    store: OutputStore
    runs: RunStore
    queue: Queue
    waiters: anyio.CapacityLimiter

    @classmethod
    def build(cls, settings: Settings, conns: Connections, registry: Registry, store: OutputStore) -> Services:
        return cls(
            settings=settings,
            conns=conns,
            registry=registry,
            store=store,
            runs=RunStore(conns.text),
            queue=Queue(settings.queue_name, connection=conns.raw),
            waiters=anyio.CapacityLimiter(MAX_CONCURRENT_WAITS),
        )


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def json_object_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, size-limited (see :mod:`api.body`)."""
    return await read_json_object(request, get_services(request).settings.max_body_bytes)


JsonBody = Annotated[dict[str, Any], Depends(json_object_body)]
