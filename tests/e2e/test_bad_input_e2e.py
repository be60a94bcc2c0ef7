"""Hostile request bodies through real processes (issue 9): each is a 4xx problem, and nothing is stored.

Lone UTF-16 surrogates (``"\\ud800"``: valid JSON, not text), JSON nested a thousand levels deep, integers
too large for a float, IPv6 addresses that carry an internal IPv4 address, and fields the native run body
does not take. Each goes to every route that takes a run body, as raw bytes over HTTP; then no run record
exists (or the one that legitimately does still reads 200), and the same stack still runs a normal run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from redis import Redis

from dispatcher import keys
from tests.support_stack import LocalStack, submit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PROBLEM_JSON = "application/problem+json"
NATIVE_TXT2IMG = "/v1/workflows/txt2img/runs"
FLOWAI_TXT2IMG = "/v1/api/workflow/run/txt2img"
COMFLOWY_RUN = "/api/open/v0/run"
COMFLOWY_CHECK = "/api/open/v0/check"
FLASK_TXT2IMG = "/api/workflow/txt2img"


@pytest.fixture
def stack(redis_url: str, tmp_path: Path) -> Iterator[LocalStack]:
    with LocalStack(redis_url, tmp_path, workers=1) as stack:
        yield stack


def post(stack: LocalStack, path: str, raw: bytes, headers: dict[str, Any] | None = None) -> requests.Response:
    """POST ``raw`` as it is: requests' own JSON encoder would never write these bodies."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    return requests.post(stack.api + path, data=raw, headers=headers, timeout=30)


def problem(reply: requests.Response, status: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = reply.json()
    assert body["status"] == status and {"type", "title", "detail", "instance"} <= set(body)
    return body


def stored_runs(stack: LocalStack) -> int:
    """Run records in Redis (not their graphs, whose keys share the prefix)."""
    depth = keys.run("x").count(":")
    with Redis.from_url(stack.redis_url, decode_responses=True) as redis:
        return sum(1 for name in redis.scan_iter(keys.run("*")) if name.count(":") == depth)


def assert_serves_a_normal_run(stack: LocalStack) -> None:
    run_id = submit(requests.Session(), stack.api, "invert", {"params": {"width": 8, "height": 8, "color": 5}})
    run = requests.get(f"{stack.api}/v1/runs/{run_id}", params={"wait": 60}, timeout=70).json()
    assert run["status"] == "succeeded", f"{run}\n{stack.logs()}"  # a str: shown whole


# -- 3: lone surrogates -------------------------------------------------------------------------------------------

SURROGATE_BODIES = [
    (NATIVE_TXT2IMG, rb'{"params": {"prompt": "\ud800"}}', "params.prompt"),
    (NATIVE_TXT2IMG, rb'{"params": {"prompt": "x", "\ud800": 1}}', "params"),
    (
        NATIVE_TXT2IMG,
        rb'{"params": {"prompt": "x"}, "callback_urls": {"on_result_url": "http://\ud800.example/"}}',
        "callback_urls.on_result_url",
    ),
    ("/v1/workflows/img2img/runs", rb'{"params": {"prompt": "x", "image": "http://\udfff.example/a.png"}}', "image"),
    (FLOWAI_TXT2IMG, rb'{"input": {"prompt": "a \udc00 cat"}, "stream": true}', "input.prompt"),
    (FLOWAI_TXT2IMG, rb'{"input": {"prompt": "a cat"}, "stream": true, "\ud83d": 1}', "\\ud83d"),
    (COMFLOWY_RUN, rb'{"workflow_id": "txt2img", "params": {"6::text": ["\ud800"]}}', "params.6::text[0]"),
    (COMFLOWY_CHECK, rb'{"id": "\ud800"}', "id"),
    (FLASK_TXT2IMG, rb'{"prompt": "\ude00"}', "prompt"),
]


def test_lone_surrogates_are_refused_before_anything_is_stored(stack: LocalStack) -> None:
    for path, raw, where in SURROGATE_BODIES:
        refused = problem(post(stack, path, raw), 400)
        assert "surrogate" in refused["detail"] and where in refused["detail"], (path, refused)
        assert refused["instance"] == path
    # A header cannot carry a surrogate (it is read as Latin-1), but its UTF-8 bytes are refused all the same.
    key = problem(
        post(stack, NATIVE_TXT2IMG, b'{"params": {"prompt": "x"}}', {"Idempotency-Key": b"\xed\xa0\x80"}), 422
    )
    assert key["errors"][0]["param"] == "Idempotency-Key"
    assert stored_runs(stack) == 0, stack.logs()

    # A key already used: a surrogate sent with it is refused too, and the first run still reads 200.
    first = post(
        stack, "/v1/workflows/invert/runs", b'{"params": {"width": 8, "height": 8}}', {"Idempotency-Key": "k1"}
    )
    assert first.status_code == 202, first.text
    again = post(stack, "/v1/workflows/invert/runs", rb'{"params": {"\ud800": 8}}', {"Idempotency-Key": "k1"})
    problem(again, 400)
    run = requests.get(f"{stack.api}/v1/runs/{first.json()['id']}", params={"wait": 60}, timeout=70)
    assert run.status_code == 200 and run.json()["status"] == "succeeded", (run.text, stack.logs())
    assert stored_runs(stack) == 1
    assert_serves_a_normal_run(stack)


# -- 4: deep nesting ----------------------------------------------------------------------------------------------


def nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@pytest.mark.parametrize("levels", [1000, 40])
def test_deeply_nested_json_is_a_400_on_every_body_route(stack: LocalStack, levels: int) -> None:
    bodies = [
        (NATIVE_TXT2IMG, b'{"params": {"prompt": ' + nested(levels) + b"}}"),
        (NATIVE_TXT2IMG, b'{"a": ' * levels + b"1" + b"}" * levels),
        (FLOWAI_TXT2IMG, b'{"input": ' + nested(levels) + b', "stream": true}'),
        (COMFLOWY_RUN, b'{"workflow_id": "txt2img", "params": {"6::text": ' + nested(levels) + b"}}"),
        (COMFLOWY_CHECK, b'{"id": ' + nested(levels) + b"}"),
        (FLASK_TXT2IMG, b'{"6": {"inputs": {"text": ' + nested(levels) + b"}}}"),
    ]
    for path, raw in bodies:
        refused = problem(post(stack, path, raw), 400)
        assert "nested too deeply" in refused["detail"], (path, refused)
    assert stored_runs(stack) == 0, stack.logs()
    assert_serves_a_normal_run(stack)


# -- 5: numbers beyond a float ------------------------------------------------------------------------------------

HUGE = b"1" + b"0" * 400  # an exact JSON integer, 1e400: no float holds it


def test_an_integer_too_large_for_a_float_is_a_422_naming_the_parameter(stack: LocalStack) -> None:
    for path, raw, param in [
        (NATIVE_TXT2IMG, b'{"params": {"prompt": "x", "cfg": ' + HUGE + b"}}", "cfg"),
        (NATIVE_TXT2IMG, b'{"params": {"prompt": "x", "3::denoise": ' + HUGE + b"}}", "3::denoise"),
        (NATIVE_TXT2IMG, b'{"params": {"prompt": "x", "3::cfg": -' + HUGE + b"}}", "3::cfg"),
        (
            COMFLOWY_RUN,
            b'{"workflow_id": "txt2img", "params": {"6::text": "x", "3::denoise": ' + HUGE + b"}}",
            "3::denoise",
        ),
        (FLOWAI_TXT2IMG, b'{"input": {"prompt": "x", "cfg": ' + HUGE + b"}}", "cfg"),
        (FLASK_TXT2IMG, b'{"prompt": "x", "3": {"inputs": {"denoise": ' + HUGE + b"}}}", "3::denoise"),
    ]:
        refused = problem(post(stack, path, raw), 422)
        assert refused["errors"][0]["param"] == param, (path, refused)
        assert "finite" in refused["errors"][0]["detail"], (path, refused)
    assert stored_runs(stack) == 0, stack.logs()
    assert_serves_a_normal_run(stack)


# -- 6: IPv6 forms of internal IPv4 addresses ---------------------------------------------------------------------

INTERNAL_IN_IPV6 = [
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254, the cloud metadata service
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "::127.0.0.1",  # IPv4-compatible
    "::ffff:0:7f00:1",  # IPv4-translated (SIIT)
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "64:ff9b:1::a00:1",  # local-use NAT64 (RFC 8215): where the IPv4 sits is the network's choice
]


def test_ipv6_forms_of_internal_ipv4_addresses_are_refused(stack: LocalStack) -> None:
    for address in INTERNAL_IN_IPV6:
        url = f"http://[{address}]:8188/x.png"
        image = {"params": {"prompt": "x", "image": url}}
        refused = problem(requests.post(f"{stack.api}/v1/workflows/img2img/runs", json=image, timeout=30), 422)
        assert refused["errors"][0]["param"] == "image" and address in refused["detail"], refused
        hook = {"params": {"width": 8}, "callback_urls": {"on_result_url": url}}
        refused = problem(requests.post(f"{stack.api}/v1/workflows/invert/runs", json=hook, timeout=30), 422)
        assert refused["errors"][0]["param"] == "callback_urls.on_result_url", refused
        comflowy = {"workflow_id": "invert", "callback_urls": {"on_progress_event_url": url}}
        refused = problem(requests.post(stack.api + COMFLOWY_RUN, json=comflowy, timeout=30), 422)
        assert refused["errors"][0]["param"] == "callback_urls.on_progress_event_url", refused
    assert stored_runs(stack) == 0, stack.logs()
    assert_serves_a_normal_run(stack)


# -- 13: fields the native run body does not take -----------------------------------------------------------------


def test_unknown_fields_of_a_native_run_body_are_a_422_naming_them(stack: LocalStack) -> None:
    native = f"{stack.api}/v1/workflows/invert/runs"
    for field, value in [
        ("max_attempts", -1),
        ("metadata", {"order": 7}),
        ("webhook", "https://hooks.example.com/x"),
        ("wait", 30),
        ("workflow_id", "invert"),
        ("colour", 5),
    ]:
        body = {"params": {"width": 8, "height": 8}, field: value}
        refused = problem(requests.post(native, json=body, timeout=30), 422)
        assert refused["errors"][0]["param"] == field, refused
    assert stored_runs(stack) == 0, stack.logs()

    # The compatibility routes keep their own bodies: Comflowy names its workflow in the body.
    comflowy = {"workflow_id": "invert", "params": {"1::width": 8, "1::height": 8}}
    accepted = requests.post(stack.api + COMFLOWY_RUN, json=comflowy, timeout=30)
    assert accepted.status_code == 200 and accepted.json()["success"] is True, accepted.text
    flowai = requests.post(
        f"{stack.api}/v1/api/workflow/run/invert", json={"input": {"width": 8, "height": 8}}, timeout=70
    )
    assert flowai.status_code == 200 and len(flowai.json()["output"]) == 1, (flowai.text, stack.logs())
    assert stored_runs(stack) == 2
    assert_serves_a_normal_run(stack)
