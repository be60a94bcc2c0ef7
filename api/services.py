"""What every request handler needs, built once per app and kept on ``app.state.services``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from starlette.concurrency import run_in_threadpool

from api.body import read_json_object
from api.keycache import KeyCache
from api.waits import Ended, RunWaits, WaitQuota
from dispatcher import keys
from dispatcher.admission import Admission
from dispatcher.apikeys import ApiKeyStore
from dispatcher.batches import BatchStore
from dispatcher.cancel import Canceller
from dispatcher.connections import Connections
from dispatcher.routing.store import CapabilityStore, FleetCapabilities, capabilities_ttl
from dispatcher.runs import RunStore
from dispatcher.scheduling.handout import Handout
from dispatcher.settings import Settings
from dispatcher.storage import OutputStore
from dispatcher.submit import Submitter
from dispatcher.tenants import TenantStore
from dispatcher.tokens import TokenStore
from dispatcher.uploads import run_body_limit
from dispatcher.workflows import PublishedRegistry
from dispatcher.workflows.store import Latest, parse_entry


@dataclass(frozen=True)
class Services:
    """The app's settings and the clients of Redis, the workflow registry, the output store, the submitter,
    the API keys and access tokens, the tenants' limits, the admission buckets and the requests waiting for runs."""

    settings: Settings
    conns: Connections
    registry: PublishedRegistry
    store: OutputStore
    runs: RunStore
    submitter: Submitter
    apikeys: ApiKeyStore
    tokens: TokenStore
    tenants: TenantStore
    admission: Admission
    canceller: Canceller
    batches: BatchStore
    waits: RunWaits
    wait_quota: WaitQuota
    handout: Handout
    capabilities: CapabilityStore  # the workers' capability sets (dispatcher.routing), read once per digest
    key_cache: KeyCache
    ended: Ended

    @classmethod
    def build(cls, settings: Settings, conns: Connections, registry: PublishedRegistry, store: OutputStore) -> Services:
        key_cache = KeyCache()
        waits = RunWaits(
            conns.aio, channels={keys.API_KEYS_CHANGED: key_cache.forget}, on_listening=key_cache.listening
        )
        handout = Handout(settings, conns)
        capabilities = CapabilityStore(conns.text, ttl_seconds=capabilities_ttl(settings))
        fleet = FleetCapabilities(capabilities, handout.workers)
        handout.on_read = fleet.prepare  # derived off the event loop, wherever the list is read
        return cls(
            settings=settings,
            conns=conns,
            registry=registry,
            store=store,
            runs=RunStore(conns.text),
            # wake_scheduler: see submitting.hand_out
            submitter=Submitter(conns.text, registry, settings, wake_scheduler=False, fleet=fleet),
            apikeys=ApiKeyStore(conns.text),
            tokens=TokenStore(conns.text),
            tenants=TenantStore(conns.text, settings),
            admission=Admission(conns.text),
            canceller=Canceller(conns.text, run_ttl_seconds=settings.run_ttl_seconds),
            batches=BatchStore(conns.text, ttl_seconds=settings.run_ttl_seconds),
            waits=waits,
            wait_quota=WaitQuota(settings.max_waits_per_tenant),
            handout=handout,
            capabilities=capabilities,
            key_cache=key_cache,
            ended=Ended(),
        )


async def get_services(request: Request) -> Services:
    # async: FastAPI runs a sync dependency in its thread pool, a hop for nothing here
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def json_object_body(request: Request) -> dict[str, Any]:
    """A run request's body as a JSON object, size-limited (see :mod:`api.body`).

    Only the run routes take these bodies: they get room for base64 input images on top of
    ``max_body_bytes`` when their workflow has image parameters (:func:`dispatcher.uploads.run_body_limit`).
    """
    svc: Services = request.app.state.services  # not ServicesDep: a sub-dependency costs CPU on every request
    workflow_id = request.path_params.get("workflow_id") or request.path_params.get("name")  # the Flask seed's
    limit = run_body_limit(svc.settings, svc.registry, workflow_id)
    if workflow_id is not None and not _fits(request, limit, svc.registry.peek_latest(workflow_id)):
        # The latest version decides how many images the body may carry: one published since, through another
        # replica, is learned first (an HGET here; the build, rarely, in a thread). A body that fits what this
        # process knows needs no read: the run itself is bound to the latest version (a read of its own).
        entry: str | None = await svc.conns.aio.hget(keys.WORKFLOWS, workflow_id)  # type: ignore[assignment]
        latest = parse_entry(entry)
        if latest is not None and latest != svc.registry.peek_latest(workflow_id):
            await run_in_threadpool(svc.registry.learn, workflow_id)
            limit = run_body_limit(svc.settings, svc.registry, workflow_id)
    return await read_json_object(request, limit)


def _fits(request: Request, limit: int, known: Latest | None) -> bool:
    """Whether the body announces a size within ``limit``, the limit of a version this process knows."""
    declared = request.headers.get("content-length")
    return known is not None and declared is not None and declared.isdigit() and int(declared) <= limit


JsonBody = Annotated[dict[str, Any], Depends(json_object_body)]


def dependency_calls(dependant: Dependant) -> frozenset[Any]:
    """Every dependency a route (its ``dependant``) solves, however deep: what it reads and checks."""
    found: set[Any] = set()
    pending = list(dependant.dependencies)
    while pending:
        sub = pending.pop()
        found.add(sub.call)
        pending.extend(sub.dependencies)
    return frozenset(found)
