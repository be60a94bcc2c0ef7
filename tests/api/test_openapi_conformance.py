"""The OpenAPI document against the API itself: schemathesis sends what the document allows (and what it does not)
to every operation, and checks each answer against the document.

Every check of schemathesis runs: no 5xx; every answer documented (status, content type, headers, body schema);
data the document allows accepted, data it forbids refused; auth enforced where the document says so; a 405 with
``Allow`` for an undocumented method; every example of the document sent as it is (the examples phase). The
budget is bounded and the run reproducible: few examples per operation, a fixed seed, no deadline, no database.

The app is the API tests' own (fakeredis, MemoryStore) with auth enabled, called with an admin key, so requests
get past auth, and schemathesis checks too that they are refused without it (``ignored_auth``). Requests reach
real resources: path parameters are mostly drawn from the bundled workflows and from runs the fixture makes (one
succeeded with a PNG, one failed, one running, one queued); a healthy worker is on record; every run submitted
during the test is finished shortly after by a stand-in worker, so waits, streams and FlowAI's synchronous runs
end fast, with outputs to show. In that working deployment any 5xx is a bug.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi

from api import operations
from api.app import create_app
from api.routes import events
from api.services import Services
from dispatcher import submit
from dispatcher.connections import Connections
from dispatcher.runs import Run
from dispatcher.settings import load_settings
from dispatcher.storage import MemoryStore
from tests.api.helpers import TestClient, beat, finish_run, start_run, store_output, tenant_with_key
from tests.api.test_api_events import use_fake_event_redis
from tests.conftest import fake_connections

pytestmark = pytest.mark.serial

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
# The runs the fixture makes, under the ids path parameters are drawn from.
SUCCEEDED, FAILED, RUNNING, QUEUED = RUNS = ("run-succeeded", "run-failed", "run-running", "run-queued")
# Per operation in the fuzzing phase, over 27 operations; the examples and coverage phases send what the document
# implies (its examples; each parameter's edge and invalid values, undocumented methods), a few dozen at most each.
MAX_EXAMPLES = 15
MAX_WAIT_SECONDS = 0.5  # see the api_key fixture

# Operations whose 422 can answer data the document allows, because what makes it valid cannot be said in a schema.
UNDESCRIBED_422 = {
    # The params a run takes are the workflow's (GET /v1/workflows/{id} lists them), not the route's.
    ("POST", "/v1/workflows/{workflow_id}/runs"),
    ("POST", "/api/workflow/{name}"),
    ("POST", "/api/open/v0/run"),
    ("POST", "/v1/api/workflow/run/{workflow_id}"),
    # The bytes of a PNG, JPEG, WebP or GIF image.
    ("POST", "/v1/uploads"),
    # A ComfyUI graph whose nodes and links hold together, and a manifest naming its inputs; a url-safe id.
    ("PUT", "/v1/workflows/{workflow_id}"),
    # A range of at most 366 days that does not run backwards.
    ("GET", "/v1/usage"),
    # A callback URL must name an address callbacks may go to (COMFY_DISPATCH_CALLBACK_ALLOW).
    ("POST", "/v1/runs/batch"),
    # A cursor the API handed out; a time that parses (RFC 3339 with a zone, or Unix seconds).
    ("GET", "/v1/runs"),
    ("GET", "/v1/batches/{batch_id}"),
    # The run id in the query or in the body: one of the two.
    ("POST", "/api/open/v0/check"),
}
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # schemathesis' default

SERVER = fakeredis.FakeServer()
CONNS = fake_connections(SERVER)
STORE = MemoryStore()
# One app for the module, since schemathesis parametrizes the test by the operations of the app's document;
# each test starts it over on an empty Redis and store (the fixtures below).
APP = create_app(load_settings({}, auth="enabled", max_body_bytes=64 * 1024), conns=CONNS, store=STORE)
use_fake_event_redis(APP, CONNS)

CONFIG = schemathesis.Config.from_dict(
    {
        "base-url": "http://testserver",  # the Host schemathesis' ASGI client sends
        "seed": 20240917,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
        "dictionaries": {
            "runs": {"values": list(RUNS)},
            "workflows": {"values": [w.id for w in APP.state.services.registry.all()]},
            "outputs": {"values": ["out.png"]},
        },
        # Mostly real resources, so that requests get past the 404 of an unknown run or workflow.
        "parameters": {
            "path.run_id": {"dictionary": "runs", "probability": 0.7},
            "path.prompt_id": {"dictionary": "runs", "probability": 0.7},
            "path.workflow_id": {"dictionary": "workflows", "probability": 0.7},
            "path.name": {"dictionary": "workflows", "probability": 0.7},
            "path.filename": {"dictionary": "outputs", "probability": 0.7},
        },
        "operations": [
            {
                "include-name": f"{method} {path}",
                "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "422"]}},
            }
            for method, path in sorted(UNDESCRIBED_422)
        ]
        # The events of a queued or running run go on until it ends, which these never do: a second of them will do.
        + [{"include-name": "GET /v1/runs/{run_id}/events", "request-timeout": 1}]
        # GET /v1/runs/batch is served: it is GET /v1/runs/{run_id} of the run "batch" (a 404), so Allow names GET.
        + [{"include-name": "POST /v1/runs/batch", "checks": {"allow_header_conformance": {"enabled": False}}}],
    }
)
schema = schemathesis.openapi.from_dict(APP.openapi(), config=CONFIG)
schema.app = APP  # what from_asgi does, without starting the app's lifespan at import: the first call starts it


@pytest.fixture
def fake_conns() -> Connections:
    """The app's fakeredis, emptied (the conftest's fixture, for the module's app)."""
    CONNS.text.flushall()
    return CONNS


@pytest.fixture
def store() -> MemoryStore:
    STORE.files.clear()
    return STORE


def _seed_runs(conns: Connections, store: MemoryStore, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runs of RUNS, under those ids: succeeded (with a PNG), failed, running and queued."""
    ids = iter(RUNS)
    with monkeypatch.context() as patch, TestClient(APP) as client:
        patch.setattr(submit, "new_run_id", lambda: next(ids))
        for _ in RUNS:
            response = client.post(
                "/v1/workflows/txt2img/runs", json={"params": {"prompt": "x"}}, headers={"X-API-KEY": key}
            )
            assert response.status_code == 202, response.text
    finish_run(conns, SUCCEEDED, outputs=[store_output(store, SUCCEEDED, "out.png", PNG)])
    finish_run(conns, FAILED, status="failed", error={"type": "execution_error", "message": "boom"})
    start_run(conns, RUNNING, node="3", progress=0.5)


@pytest.fixture
def api_key(
    fake_conns: Connections,
    store: MemoryStore,
    finish_after_submit: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    """An admin key of a tenant with the runs of RUNS; every later run is finished shortly after it is queued."""
    # A stream of a running run sends a keep-alive, then looks at the run again, every KEEPALIVE_SECONDS.
    monkeypatch.setattr(events, "KEEPALIVE_SECONDS", 0.05)
    # ?wait, a cancel and FlowAI's runs wait for the run to end, which the seeded running and queued runs never do:
    # they answer it as it is sooner (the stand-in worker ends the others well within that).
    wait = operations.wait

    async def wait_less(svc: Services, run_id: str, seconds: float, *args: Any, **kwargs: Any) -> Run:
        return await wait(svc, run_id, min(seconds, MAX_WAIT_SECONDS), *args, **kwargs)

    monkeypatch.setattr(operations, "wait", wait_less)
    key = tenant_with_key(fake_conns, "acme", "submit,read,admin", submit_rate=1000, submit_burst=1000)
    _seed_runs(fake_conns, store, key, monkeypatch)
    beat(fake_conns, "w1", healthy=True, current_run=RUNNING)
    finish_after_submit(delay=0.05, files={"out.png": PNG})
    yield key
    asgi.shutdown_lifespans()  # schemathesis keeps the lifespan of an app it called running until told


@schema.parametrize()
# The world of api_key is set up once per operation and shared by its examples on purpose, as a deployment is.
@settings(deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_openapi_document_matches_the_api(case: schemathesis.Case[Any], api_key: str) -> None:
    case.call_and_validate(headers={"X-API-KEY": api_key})


def test_test_comfy_without_a_healthy_worker_is_as_documented(api_key: str) -> None:
    # The seed's own 503, which the working deployment above never answers.
    beat(CONNS, "w1", healthy=False)
    case = schema["/api/test_comfy"]["GET"].Case()
    response = case.call_and_validate(headers={"X-API-KEY": api_key}, excluded_checks=[not_a_server_error])
    assert response.status_code == 503


def _request_examples() -> list[tuple[str, str, str, object]]:
    """(method, path, example name, body) for every example of a request body in the document."""
    found = []
    for path, item in APP.openapi()["paths"].items():
        for method, operation in item.items():
            for media in operation.get("requestBody", {}).get("content", {}).values():
                for name, example in media.get("examples", {}).items():
                    found.append((method.upper(), path, name, example["value"]))
    return found


def test_the_document_has_request_examples() -> None:
    # The run routes show an example per workflow they run (txt2img and img2img): their bodies are the workflow's.
    assert {(method, path) for method, path, _, _ in _request_examples()} == {
        ("POST", "/v1/workflows/{workflow_id}/runs"),
        ("POST", "/v1/runs/batch"),
        ("POST", "/api/workflow/{name}"),
        ("POST", "/api/open/v0/run"),
        ("POST", "/v1/api/workflow/run/{workflow_id}"),
    }


@pytest.mark.parametrize(
    ("method", "path", "name", "body"), [pytest.param(*e, id=f"{e[0]} {e[1]} {e[2]}") for e in _request_examples()]
)
def test_every_request_example_is_accepted(api_key: str, method: str, path: str, name: str, body: object) -> None:
    # An example is named after the workflow it runs, which is also in the path where the path names one.
    url = path.format(workflow_id=name, name=name)
    with TestClient(APP) as client:
        response = client.request(method, url, json=body, headers={"X-API-KEY": api_key})
    assert response.status_code in (200, 201, 202), response.text
