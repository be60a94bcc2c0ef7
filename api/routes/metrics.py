"""``GET /metrics``: the API process's own counters and the shared-state gauges read from Redis, for Prometheus.

Open like ``/healthz``: scrapers carry no API key, and nothing here names a run or a secret.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from api.auth import ANONYMOUS
from api.services import Services
from dispatcher.metrics import RedisCollector, redis_registry

router = APIRouter(tags=["system"])


def install(app: FastAPI, services: Services) -> None:
    """Give ``app`` its Redis gauges (a registry per app: test apps never share one) and the route."""
    # With auth disabled every submission goes through one bucket that has no key record: name its tenant.
    owners = {ANONYMOUS.key_id: ANONYMOUS.tenant} if services.settings.auth == "disabled" else {}
    collector = RedisCollector(services.conns.text, services.settings, key_owners=owners)
    app.state.metrics_registry = redis_registry(collector)
    app.include_router(router)


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    """Prometheus text exposition: this process's counters and histograms, then the queue, worker and bucket
    gauges read from Redis now. A plain ``def``: the Redis reads run in the thread pool, off the event loop."""
    shared: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(REGISTRY) + generate_latest(shared), media_type=CONTENT_TYPE_LATEST)
