"""The HTTP API application: ``create_app`` wires settings, clients and routes; ``serve`` runs it.

Everything a request needs sits on ``app.state.services`` (see :mod:`api.services`); nothing is
global, so tests build as many apps as they like, each with its own fakeredis and store.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

import dispatcher
from api import auth, docs, hotpaths, problems
from api.auth import check_auth_binding
from api.compat import comflowy, flask_seed, flowai
from api.routes import (
    batches,
    deliveries,
    events,
    health,
    metrics,
    outputs,
    queues,
    runs,
    uploads,
    usage,
    workers,
    workflows,
)
from api.services import Services
from dispatcher.connections import Connections
from dispatcher.settings import Settings
from dispatcher.storage import OutputStore, make_store
from dispatcher.tenants import DEFAULT_TENANT
from dispatcher.workflows import PublishedRegistry, Registry
from dispatcher.workflows.bundled import load_folder
from dispatcher.workflows.store import WorkflowStore

log = logging.getLogger(__name__)

DESCRIPTION = """Queue runs of bundled ComfyUI workflows and follow them to their outputs.

Errors are RFC 9457 problems (`application/problem+json`). The routes tagged *compat* serve the
APIs of the Flask seed (`/api/...`), Comflowy (`/api/open/v0/...`) and FlowAI (`/v1/api/workflow/...`)
over the same runs.

Every route but the probes and these docs needs an API key (`comfy-dispatch keys create`), sent as
`X-API-KEY: <key>` or `Authorization: Bearer <key>`: none, or an unknown one, is a 401; a key
without the route's scope (`read`, `submit`, `admin`) a 403; a run of another tenant a 404.
Submissions pass a leaky bucket per key: over its rate, a 429 with `Retry-After`; every submission
answer carries the key's `RateLimit` and `RateLimit-Policy` fields."""


def create_app(
    settings: Settings,
    *,
    conns: Connections | None = None,
    registry: Registry | None = None,
    store: OutputStore | None = None,
) -> FastAPI:
    """Build the API. What is not passed in is built from ``settings``.

    Loading the workflows happens here, so a broken manifest stops the API at start-up
    (ManifestError) rather than failing runs later. Connections built here are closed on shutdown;
    ones passed in belong to the caller.
    """
    owns_conns = conns is None
    conns = conns if conns is not None else Connections.from_url(settings.redis_url)
    bundled = registry.bundled() if registry is not None else load_folder(settings.workflows_dir)
    services = Services.build(
        settings,
        conns,
        PublishedRegistry(WorkflowStore(conns.text), bundled),
        store if store is not None else make_store(settings),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:  # the bundled folders become version 1 (or a new version, edited since): at once, not at the first run
            await run_in_threadpool(services.registry.seed)
            log.info("API ready: %d workflow(s), queue %r", len(services.registry), settings.queue_name)
        except RedisError as exc:  # Redis not up yet: the first request that reads a workflow tries again
            log.warning("could not publish the bundled workflows yet (%s); trying again at the first request", exc)
        if settings.auth == "disabled":
            log.warning("auth is disabled: every request acts as tenant %r with every scope", DEFAULT_TENANT)
        services.waits.start()
        yield
        await services.waits.stop()
        if owns_conns:
            services.conns.close()
            await services.conns.aclose()

    app = FastAPI(
        title="Comfy Dispatch",
        version=dispatcher.__version__,
        description=DESCRIPTION,
        docs_url=None,  # FastAPI's pages load their files from a CDN: api/docs.py serves them from here
        redoc_url=None,
        lifespan=lifespan,
        responses=problems.openapi_responses(),
    )
    app.state.services = services
    docs.install(app)
    problems.install(app)
    for router in (workflows.router, runs.router, outputs.router, queues.router, workers.router, health.router):
        app.include_router(router)
    app.include_router(batches.router)
    app.include_router(usage.router)
    app.include_router(uploads.router)
    app.include_router(events.router)
    app.include_router(deliveries.router)
    metrics.install(app, services)
    for compat in (flask_seed, comflowy, flowai):
        compat.install(app)
    auth.document(app)
    hotpaths.install(app)
    return app


def serve(settings: Settings, host: str, port: int) -> None:
    """Run the API with uvicorn until interrupted (logging is set up by the caller, e.g. the CLI).

    Raises ConfigError naming COMFY_DISPATCH_AUTH if auth is disabled and ``host`` is not loopback.
    """
    check_auth_binding(settings, host)
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower(), log_config=None)
