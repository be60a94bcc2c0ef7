"""What a security review found, tried again through real processes (API, scheduler, worker, fake ComfyUI,
redis-server), with API keys on: one tenant's waits cannot starve another, the Flask seed's ComfyUI check
shows workers to admins only, no secret reaches a log line, Comflowy's access token is a token of its own,
and FlowAI's synchronous run answers a failure by whose fault it was.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from redis import Redis

from dispatcher.apikeys import ApiKeyStore
from dispatcher.settings import load_settings
from dispatcher.tenants import TenantStore
from tests.support_stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

AUTH = {"COMFY_DISPATCH_AUTH": "enabled"}
INVERT = {"params": {"width": 8, "height": 8}}


def key_of(redis: Redis, tenant: str, scopes: str = "submit,read") -> str:
    TenantStore(redis, load_settings({})).set(tenant)
    return ApiKeyStore(redis).create(tenant, scopes)[1]


def h(key: str) -> dict[str, str]:
    return {"X-API-KEY": key}


def test_one_read_key_holding_300_waits_starves_nobody(redis_url: str, tmp_path: Path) -> None:
    """Tenant A opens 300 long polls (?wait=300) on a run that never ends (no worker): 100 wait, 200 get a 429
    at once. Meanwhile tenant B's 159 submissions are all accepted and /readyz answers 200; and A's own
    submission with ?wait, over A's quota, is stored and answered 202 at once, never an error."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    with LocalStack(redis_url, tmp_path, workers=1, start_workers=False, env=AUTH) as stack:
        reader, a_submitter, b_submitter = key_of(redis, "a", "read"), key_of(redis, "a"), key_of(redis, "b")
        run_id = requests.post(
            f"{stack.api}/v1/workflows/invert/runs", json=INVERT, headers=h(a_submitter), timeout=10
        ).json()["id"]

        async def scenario() -> dict[str, Any]:
            limits = httpx.Limits(max_connections=500, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=stack.api, limits=limits, timeout=30) as client:
                waits = [
                    asyncio.create_task(client.get(f"/v1/runs/{run_id}", params={"wait": 300}, headers=h(reader)))
                    for _ in range(300)
                ]
                # The ones over the quota come back at once; the others hold on.
                deadline = time.monotonic() + 20
                while sum(t.done() for t in waits) < 200 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                refused = [t.result().status_code for t in waits if t.done()]
                retry_after = next((int(t.result().headers.get("Retry-After", 0)) for t in waits if t.done()), 0)
                submissions = await asyncio.gather(
                    *(
                        client.post(
                            "/v1/workflows/invert/runs",
                            json={"params": {"width": 8, "height": 8, "color": i}},
                            headers=h(b_submitter),
                        )
                        for i in range(159)
                    )
                )
                ready = [(await client.get("/readyz")).status_code for _ in range(20)]
                own = await client.post(
                    "/v1/workflows/invert/runs", params={"wait": 60}, json=INVERT, headers=h(a_submitter)
                )
                still_waiting = sum(not t.done() for t in waits)
                for task in waits:
                    task.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
                return {
                    "refused": refused,
                    "retry_after": retry_after,
                    "accepted": [r.status_code for r in submissions],
                    "ready": ready,
                    "still_waiting": still_waiting,
                    "own": own.status_code,
                    "own_stored": bool(redis.exists(f"cd:run:{own.json().get('id', 'none')}")),
                }

        got = asyncio.run(scenario())
        refused, accepted, ready, still_waiting, own = (
            got["refused"], got["accepted"], got["ready"], got["still_waiting"], got["own"]
        )  # fmt: skip
        print(
            f"\n300 waits of one read key: {still_waiting} waiting, {len(refused)} refused {set(refused)}; "
            f"another tenant's submissions {accepted.count(202)}/{len(accepted)} accepted; "
            f"/readyz {ready.count(200)}/{len(ready)} 200; the waiting tenant's own ?wait submission: {own}"
        )
        assert still_waiting == 100 and len(refused) == 200 and set(refused) == {429} and got["retry_after"] >= 1
        assert accepted.count(202) == len(accepted) == 159
        assert set(ready) == {200}
        assert own == 202 and got["own_stored"]  # stored, and answered at once as queued
        # An event stream counts as a wait (it holds a Redis connection): A has none left until its polls end
        # (a poll holds its place until its time is up, even after its client left).
        with requests.get(f"{stack.api}/v1/runs/{run_id}/events", headers=h(reader), stream=True, timeout=10) as r:
            assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        other = key_of(redis, "b", "read")  # another tenant's stream is served
        with requests.get(f"{stack.api}/v1/runs/{run_id}/events", headers=h(other), stream=True, timeout=10) as r:
            assert r.status_code == 404  # A's run is unknown to B, but B was not refused for A's waits


def test_the_flask_seeds_comfyui_check_hides_the_workers_from_a_read_key(redis_url: str, tmp_path: Path) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    with LocalStack(redis_url, tmp_path, workers=1, exec_seconds=2.0, env=AUTH) as stack:
        reader, submitter = key_of(redis, "a", "read"), key_of(redis, "b")
        admin = key_of(redis, "ops", "read,admin")
        run_id = requests.post(
            f"{stack.api}/v1/workflows/invert/runs", json=INVERT, headers=h(submitter), timeout=10
        ).json()["id"]
        deadline = time.monotonic() + 20
        while redis.hget(f"cd:run:{run_id}", "status") != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(100):  # the worker's heartbeat names the run it holds
            workers = requests.get(f"{stack.api}/api/test_comfy", headers=h(admin), timeout=10).json()
            if run_id in str(workers):
                break
            time.sleep(0.1)
        assert run_id in str(workers) and workers["comfyui_url"] == stack.comfyui_urls[0]
        seen = requests.get(f"{stack.api}/api/test_comfy", headers=h(reader), timeout=10)
        assert seen.status_code == 200 and seen.json()["status"] == "success"
        assert seen.json()["response"] == {"workers_healthy": 1, "workers_total": 1}
        assert run_id not in seen.text and stack.comfyui_urls[0] not in seen.text


def test_no_secret_in_the_access_log_and_comflowys_token_is_its_own(redis_url: str, tmp_path: Path) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    env = AUTH | {"COMFY_DISPATCH_LOG_LEVEL": "INFO", "COMFY_DISPATCH_ACCESS_TOKEN_SECONDS": "120"}
    with LocalStack(redis_url, tmp_path, workers=1, env=env) as stack:
        key = key_of(redis, "a")
        reply = requests.get(f"{stack.api}/api/open/v0/auth/token", params={"ppt": key}, timeout=10)
        assert reply.status_code == 200, reply.text
        token = reply.json()["access_token"]
        assert token.startswith("cdt_") and token != key and reply.json()["expires_in"] == 120
        assert 100 < redis.ttl(f"cd:token:{token.split('_')[1]}") <= 120
        bearer = {"Authorization": f"Bearer {token}"}
        run = requests.post(
            f"{stack.api}/api/open/v0/run", json={"workflow_id": "invert", "params": {}}, headers=bearer, timeout=10
        )
        assert run.status_code == 200, run.text
        run_id = run.json()["data"]["run_id"]
        done = requests.get(f"{stack.api}/v1/runs/{run_id}", params={"wait": 30}, headers=bearer, timeout=40)
        assert done.json()["status"] == "succeeded"
        check = requests.get(f"{stack.api}/api/open/v0/check", params={"id": run_id}, headers=bearer, timeout=10)
        assert check.json()["data"]["status"] == "success"

        ApiKeyStore(redis).revoke(key.split("_")[1])  # the token dies with its key, in every API process at once
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            gone = requests.get(f"{stack.api}/v1/runs/{run_id}", headers=bearer, timeout=10)
            if gone.status_code == 401:
                break
            time.sleep(0.05)
        assert gone.status_code == 401

        time.sleep(0.5)  # the access line is written after the answer
        log = (tmp_path / "api.log").read_text()
        assert "GET /api/open/v0/auth/token?ppt=[redacted]" in log
        assert key not in log and token not in log
        # The secret part whole (split twice at most: a urlsafe secret may hold "_", even start with one)
        assert key.split("_", 2)[2] not in log and token.split("_", 2)[2] not in log


def test_flowai_answers_a_failure_by_whose_fault_it_was(redis_url: str, tmp_path: Path) -> None:
    """A node that raises on the graph: 422 naming it. Out of GPU memory on every attempt: 503 with
    Retry-After. FlowAI tells its clients to try a 5xx again, so only the second may be one."""
    env = {"COMFY_DISPATCH_RETRY_BASE": "0.05", "COMFY_DISPATCH_RETRY_CAP": "0.1"}
    with LocalStack(redis_url, tmp_path, workers=1, env=env) as stack:
        (fake,) = stack.fakes
        url = f"{stack.api}/v1/api/workflow/run/invert"
        fake.control(fail_node_type="ImageInvert", exception_type="ValueError", exception_message="bad input")
        node_error = requests.post(url, json={"input": {"width": 8}}, timeout=60)
        assert node_error.status_code == 422, node_error.text
        problem = node_error.json()
        assert "ImageInvert" in problem["detail"] and problem["run_error"]["exception_type"] == "ValueError"
        assert "Retry-After" not in node_error.headers

        fake.control(fail_node_type="ImageInvert", exception_type="torch.OutOfMemoryError", exception_message="OOM")
        oom = requests.post(url, json={"input": {"width": 8}}, timeout=60)
        assert oom.status_code == 503, oom.text
        assert int(oom.headers["Retry-After"]) > 0 and oom.json()["run_error"]["exception_type"].endswith(
            "OutOfMemoryError"
        )

        fake.reset()
        fine = requests.post(url, json={"input": {"width": 8}}, timeout=60)
        assert fine.status_code == 200 and len(fine.json()["output"]) == 1
