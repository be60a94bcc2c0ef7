"""The compatibility routes of the three products, through real processes (API, scheduler, webhook sender,
worker, fake ComfyUI, redis-server), each route at least once, in the shapes each product's clients read
(/work/shared/seeds/): the Flask seed's ``/api/...``, Comflowy's ``/api/open/v0/...`` with its access token and
callbacks, and FlowAI's ``/v1/api/workflow/run/{id}``, synchronous and streamed.

Output URLs are fetched: their bytes must be the PNG ComfyUI made. The fake's ``hang`` control holds a run at
its first node, so a run behind it (pipeline depth 1) is seen waiting and the held one running.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from redis import Redis

from dispatcher.apikeys import ApiKeyStore
from dispatcher.runs import RunStore
from dispatcher.settings import load_settings
from dispatcher.tenants import TenantStore
from tests.e2e.helpers import executing_on, wait_until
from tests.events_helpers import parse_sse
from tests.faults.test_faults import FAST
from tests.support import FakeComfy
from tests.support_stack import LocalStack, first_pixel
from tests.webhook_receiver import Receiver, verify_all

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DEPTH_1 = FAST | {"COMFY_DISPATCH_PIPELINE_DEPTH": "1"}
AUTH = {"COMFY_DISPATCH_AUTH": "enabled"}
WEBHOOKS = {
    "COMFY_DISPATCH_CALLBACK_ALLOW": "loopback",
    "COMFY_DISPATCH_WEBHOOK_RETRY_BASE": "0.2",
    "COMFY_DISPATCH_WEBHOOK_RETRY_CAP": "1",
    "COMFY_DISPATCH_WEBHOOK_TIMEOUT": "2",
}
FAILING = {"fail_node_type": "KSampler", "exception_type": "ValueError", "exception_message": "bad sampler input"}


def graph_run_by(fake: FakeComfy, redis: Redis, run_id: str) -> dict[str, Any]:
    """The graph ComfyUI executed for ``run_id`` (from its /history): what the parameters were bound into."""
    run = RunStore(redis).get(run_id)
    assert run is not None
    entry = requests.get(f"{fake.url}/history/{run.prompt_id}", timeout=5).json()[run.prompt_id]
    graph: dict[str, Any] = entry["prompt"][2]
    return graph


def finished(session: requests.Session, api: str, run_id: str) -> dict[str, Any]:
    run: dict[str, Any] = session.get(f"{api}/v1/runs/{run_id}", params={"wait": 30}, timeout=40).json()
    assert run["status"] in ("succeeded", "failed", "canceled"), run
    return run


def png(session: requests.Session, url: str) -> bytes:
    """The bytes behind an output URL, which must be a PNG."""
    reply = session.get(url, timeout=10)
    assert reply.status_code == 200, (url, reply.text)
    assert reply.headers["content-type"] == "image/png" and reply.content.startswith(PNG_MAGIC)
    return reply.content


def api_key(redis: Redis, tenant: str) -> str:
    TenantStore(redis, load_settings({})).set(tenant)
    return ApiKeyStore(redis).create(tenant, "submit,read")[1]


def test_flask_seed_routes(redis_url: str, tmp_path: Path) -> None:
    """GET /api/test_comfy, /api/workflows; POST /api/workflow/{name} in the simple and the advanced form;
    /api/task_status through pending, running, completed, error and not_found; /api/history[/{id}];
    /api/image/{id}, whose URLs serve the PNGs. The seed had no auth: this stack has none either."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    with LocalStack(redis_url, tmp_path, workers=1, env=DEPTH_1) as stack:
        (fake,) = stack.fakes
        api, session = stack.api, requests.Session()

        def healthy() -> dict[str, Any] | None:
            reply = session.get(f"{api}/api/test_comfy", timeout=10)
            return reply.json() if reply.status_code == 200 else None

        comfy = wait_until(healthy, "no worker ever reported a healthy ComfyUI")
        assert comfy["status"] == "success" and comfy["comfyui_url"] == fake.url  # anonymous is admin: it is shown
        assert [w["comfyui_url"] for w in comfy["response"]["workers"]] == [fake.url]
        workflows = session.get(f"{api}/api/workflows", timeout=10).json()["workflows"]
        assert {"invert", "txt2img", "img2img", "blur-slow"} <= set(workflows)

        fake.control(hang=True)
        simple = session.post(f"{api}/api/workflow/txt2img", json={"prompt": "a cat", "target_node": "6"}, timeout=10)
        assert simple.status_code == 200, simple.text
        first = simple.json()
        assert first["status"] == "success" and first["client_id"] == f"comfy-dispatch-{first['prompt_id']}"
        executing_on(fake, redis, first["prompt_id"])
        advanced_body = {"6": {"inputs": {"text": "a dog"}}, "7": {"inputs": {"text": "blurry"}}}
        advanced = session.post(f"{api}/api/workflow/txt2img", json=advanced_body, timeout=10)
        assert advanced.status_code == 200, advanced.text
        second = advanced.json()["prompt_id"]

        running = session.get(f"{api}/api/task_status/{first['prompt_id']}", timeout=10).json()
        assert running["status"] == "running" and running["message"] == "Task is currently running"
        assert set(running["execution_info"]) == {"progress", "node"}
        pending = session.get(f"{api}/api/task_status/{second}", timeout=10).json()
        assert pending == {"status": "pending", "message": "Task is waiting in queue", "queue_position": 1}
        assert session.get(f"{api}/api/history/{second}", timeout=10).json() == {}  # not finished: no entry yet
        no_image = session.get(f"{api}/api/image/{second}", timeout=10)
        assert no_image.status_code == 404 and no_image.json()["status_code"] == 404 and no_image.json()["error"]

        fake.control(hang=False)
        runs = [first["prompt_id"], second]
        assert [finished(session, api, r)["status"] for r in runs] == ["succeeded"] * 2, stack.logs()
        bound = [graph_run_by(fake, redis, r) for r in runs]  # what reached ComfyUI
        assert bound[0]["6"]["inputs"]["text"] == "a cat"
        assert (bound[1]["6"]["inputs"]["text"], bound[1]["7"]["inputs"]["text"]) == ("a dog", "blurry")

        completed = session.get(f"{api}/api/task_status/{first['prompt_id']}", timeout=10).json()
        assert completed["status"] == "completed" and completed["message"] == "Image generation completed"
        assert completed["node_errors"] == {} and completed["execution_time"] >= 0
        [image] = completed["images"]
        assert (image["subfolder"], image["type"]) == ("", "output") and image["filename"].endswith(".png")
        assert image["url"] == f"{api}/v1/runs/{first['prompt_id']}/outputs/{image['filename']}"
        data = png(session, image["url"])

        images = session.get(f"{api}/api/image/{first['prompt_id']}", timeout=10).json()
        assert images == {"status": "success", "images": [image]}
        one = session.get(f"{api}/api/history/{first['prompt_id']}", timeout=10).json()
        entry = one[first["prompt_id"]]
        assert entry["prompt_id"] == first["prompt_id"] and entry["workflow"] == "txt2img"
        assert entry["status"] == {"status_str": "success", "completed": True, "messages": []}
        assert entry["outputs"] == {"9": {"images": [image]}}

        fake.control(**FAILING)
        failing = session.post(f"{api}/api/workflow/txt2img", json={"prompt": "a bird"}, timeout=10).json()
        assert finished(session, api, failing["prompt_id"])["status"] == "failed", stack.logs()
        error = session.get(f"{api}/api/task_status/{failing['prompt_id']}", timeout=10).json()
        assert error["status"] == "error" and "bad sampler input" in error["message"], error

        history = session.get(f"{api}/api/history", timeout=10).json()
        assert list(history) == [failing["prompt_id"], second, first["prompt_id"]]  # newest first
        assert history[first["prompt_id"]] == entry
        assert history[failing["prompt_id"]]["status"]["status_str"] == "error"
        other = history[second]["outputs"]["9"]["images"][0]
        assert png(session, other["url"]) != data  # each run its own image

        unknown = session.get(f"{api}/api/task_status/feedbeef", timeout=10)
        assert unknown.status_code == 404
        assert unknown.json()["status"] == "not_found" and unknown.json()["message"] == "Task not found"
        print(f"\nFlask seed: runs {runs + [failing['prompt_id']]}, ComfyUI {fake.stats()['executed']} executed")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def test_comflowy_routes_with_auth_and_callbacks(redis_url: str, tmp_path: Path, receiver: Receiver) -> None:
    """GET /auth/token?ppt=KEY; POST /run with the token as bearer and callback_urls; GET and POST /check
    through waiting, pending or running, success and failed; one signed result per run at on_result_url (the
    same URLs /check answers, serving the PNG) and its progress at on_progress_event_url."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    stack = LocalStack(redis_url, tmp_path, workers=1, env=DEPTH_1 | AUTH | WEBHOOKS)
    stack.env["COMFY_DISPATCH_PUBLIC_URL"] = stack.api  # absolute output URLs in callbacks
    with stack:
        (fake,) = stack.fakes
        api, session = stack.api, requests.Session()
        open_api = f"{api}/api/open/v0"
        key = api_key(redis, "acme")

        refused = session.get(f"{open_api}/auth/token", params={"ppt": "cd_nope_nope"}, timeout=10)
        assert refused.status_code == 401 and refused.json()["success"] is False
        minted = session.get(f"{open_api}/auth/token", params={"ppt": key}, timeout=10)
        assert minted.status_code == 200, minted.text
        token = minted.json()
        assert token["token_type"] == "Bearer" and token["expires_in"] > 0 and token["access_token"] != key
        session.headers["Authorization"] = f"Bearer {token['access_token']}"

        callbacks = {"on_result_url": receiver.url + "/result", "on_progress_event_url": receiver.url + "/progress"}

        def run(text: str) -> str:
            body = {"workflow_id": "txt2img", "params": {"6::text": text, "3::sampler_name": "euler"}}
            reply = session.post(f"{open_api}/run", json=body | {"callback_urls": callbacks}, timeout=10)
            assert reply.status_code == 200, reply.text
            assert reply.json()["success"] is True
            run_id: str = reply.json()["data"]["run_id"]
            return run_id

        anonymous = requests.post(f"{open_api}/run", json={"workflow_id": "txt2img", "params": {}}, timeout=10)
        assert anonymous.status_code == 401 and anonymous.json()["success"] is False

        fake.control(hang=True)
        held = run("glass bottle")
        executing_on(fake, redis, held)
        behind = run("purple galaxy bottle")
        check = session.get(f"{open_api}/check", params={"id": held}, timeout=10).json()
        assert check["success"] is True and check["data"]["status"] in ("pending", "running"), check
        waiting = session.post(f"{open_api}/check", json={"id": behind}, timeout=10).json()
        assert waiting == {"success": True, "data": {"status": "waiting", "output_images": [], "full_outputs": {}}}

        fake.control(hang=False)
        for run_id in (held, behind):
            assert finished(session, api, run_id)["status"] == "succeeded", stack.logs()
        fake.control(**FAILING)
        failing = run("a bottle that fails")
        assert finished(session, api, failing)["status"] == "failed", stack.logs()

        runs = [held, behind, failing]
        results: dict[str, list[dict[str, Any]]] = {}

        def all_results() -> bool:
            results.clear()
            for item in receiver.delivered("/result"):
                results.setdefault(item.json()["run_id"], []).append(item.json())
            return set(results) == set(runs)

        receiver.wait_for(all_results, timeout=20)
        time.sleep(0.5)  # a second result of any run would arrive here
        all_results()
        assert all(len(got) == 1 for got in results.values()), results
        with Redis.from_url(redis_url, decode_responses=True) as client:
            verify_all(receiver.snapshot(), TenantStore(client, load_settings({})).webhook_secret("acme"))

        pictures = []
        progress = [item.json() for item in receiver.delivered("/progress")]
        for run_id in (held, behind):
            by_get = session.get(f"{open_api}/check", params={"id": run_id}, timeout=10).json()
            by_post = session.post(f"{open_api}/check", params={"id": run_id}, timeout=10).json()
            assert by_get == by_post and by_get["success"] is True
            data = by_get["data"]
            [url] = data["output_images"]
            assert data["status"] == "success" and data["full_outputs"] == {"9": {"images": [url]}}
            assert url.startswith(f"{api}/v1/runs/{run_id}/outputs/")
            pictures.append(png(session, url))
            [result] = results[run_id]
            full = data["full_outputs"]
            assert result == {"type": "success", "run_id": run_id, "output_images": [url], "full_outputs": full}
            kinds = {event["type"] for event in progress if event["payload"]["run_id"] == run_id}
            assert {"waiting", "pending", "message"} <= kinds, kinds
        assert pictures[0] != pictures[1]
        failed = session.get(f"{open_api}/check", params={"id": failing}, timeout=10).json()["data"]
        assert failed["status"] == "failed" and "bad sampler input" in failed["error"] and failed["output_images"] == []
        [result] = results[failing]
        assert result["type"] == "failed" and "bad sampler input" in result["error"] and result["output_images"] == []
        other_tenant = {"X-API-KEY": api_key(redis, "other")}
        unknown = requests.get(f"{open_api}/check", params={"id": held}, headers=other_tenant, timeout=10)
        assert unknown.status_code == 404 and unknown.json()["success"] is False
        print(f"\nComflowy: runs {runs}, the held run checked {check['data']['status']!r}, "
              f"{len(receiver.delivered('/result'))} results and "
              f"{len(receiver.delivered('/progress'))} progress events delivered")  # fmt: skip


def test_flowai_route_synchronous_streamed_and_failing(redis_url: str, tmp_path: Path) -> None:
    """POST /v1/api/workflow/run/{id} with X-API-KEY: 200 with output URLs serving the PNG; with "stream": true
    FlowAI's events (msg start, start_node/finish_node, then output, whose URL serves the PNG); a node that
    raises: 422 naming it, and event: error when streamed."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    # Long enough for progress events: a run writes its progress 0.25 s after it started, then at most as often.
    with LocalStack(redis_url, tmp_path, workers=1, exec_seconds=0.6, env=FAST | AUTH) as stack:
        (fake,) = stack.fakes
        session = requests.Session()
        session.headers["X-API-KEY"] = api_key(redis, "acme")
        url = f"{stack.api}/v1/api/workflow/run/invert"
        refused = requests.post(url, json={"input": {}}, timeout=10)
        assert refused.status_code == 401

        reply = session.post(url, json={"input": {"width": 8, "height": 8, "color": 0x102030}}, timeout=60)
        assert reply.status_code == 200, (reply.text, stack.logs())
        answer = reply.json()
        [output] = answer["output"]
        assert output.startswith(f"{stack.api}/v1/runs/{answer['run_id']}/outputs/")
        assert first_pixel(png(session, output)) == (0xEF, 0xDF, 0xCF)  # the colour, inverted
        assert answer["total_time"] >= 0.6

        params = {"width": 8, "height": 8, "color": 0x0000FF}
        with session.post(url, json={"input": params, "stream": True}, stream=True, timeout=60) as response:
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].startswith("text/event-stream")
            events = [e for e in parse_sse(response.iter_lines(decode_unicode=True)) if not e.comments]
        kinds = [e.event for e in events]
        assert kinds[-1] == "output" and set(kinds[:-1]) == {"msg"}, kinds
        messages = [e.json() for e in events[:-1]]
        assert messages[0] == {"Node": "invert", "Msg": "start", "Type": "start", "Data": params}
        steps = [m["Type"] for m in messages[1:]]
        assert steps and steps == ["start_node", "finish_node"] * (len(steps) // 2), steps
        for opened, closed in zip(messages[1::2], messages[2::2], strict=True):
            assert opened["Node"] == closed["Node"] and opened["Data"] is None
            assert closed["Data"]["time_spend"] >= 0 and closed["Msg"].startswith(f"Finish node {closed['Node']}")
        done = events[-1].json()
        [streamed] = done["output"]
        assert done["total_time"] >= 0.5 and streamed.startswith(f"{stack.api}/v1/runs/{done['run_id']}/outputs/")
        assert first_pixel(png(session, streamed)) == (0xFF, 0xFF, 0x00)

        fake.control(fail_node_type="ImageInvert", exception_type="ValueError", exception_message="bad input")
        failing = session.post(url, json={"input": {"width": 8}}, timeout=60)
        assert failing.status_code == 422, failing.text
        problem = failing.json()
        assert failing.headers["content-type"].startswith("application/problem+json")
        assert "ImageInvert" in problem["detail"] and problem["run_status"] == "failed"
        assert problem["run_error"]["exception_type"] == "ValueError" and "Retry-After" not in failing.headers
        with session.post(url, json={"input": {"width": 8}, "stream": True}, stream=True, timeout=60) as response:
            assert response.status_code == 200
            streamed_events = [e for e in parse_sse(response.iter_lines(decode_unicode=True)) if not e.comments]
        last = streamed_events[-1]
        assert last.event == "error" and last.json()["status"] == "failed" and "bad input" in last.json()["error"]
        stats = fake.stats()
        print(f"\nFlowAI: {len(steps) // 2} nodes streamed, total_time {answer['total_time']}s synchronous; "
              f"ComfyUI executed {stats['executed']}, failed {stats['failed']}")  # fmt: skip
        assert stats["executed"] == 2 and stats["failed"] == 2
