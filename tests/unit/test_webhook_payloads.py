"""Comflowy's result and progress payloads, built from run events."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dispatcher.events import Event
from dispatcher.runs import Output
from dispatcher.webhooks.payloads import (
    CallbackKind,
    api_output_url,
    callback_for,
    encode,
    event_time,
    progress_payload,
    result_payload,
    webhook_id,
)

RUN = "r1"
EVENT_ID = "1700000000123-0"
URL_FOR = api_output_url("https://api.example.com")
OUTPUTS = [
    Output("9", "a_00001_.png", "image/png", 10, "r1/1/a_00001_.png"),
    Output("9", "a_00002_.png", "image/png", 11, "r1/1/a_00002_.png"),
    Output("12", "mask 1.png", "image/png", 12, "r1/1/mask 1.png"),
]
BOTH = {"on_result_url": "https://hooks.example.com/result", "on_progress_event_url": "https://hooks.example.com/p"}


@pytest.mark.parametrize(
    ("event_type", "callbacks", "expected"),
    [
        ("done", BOTH, (CallbackKind.RESULT, BOTH["on_result_url"])),
        ("error", BOTH, (CallbackKind.RESULT, BOTH["on_result_url"])),
        ("canceled", BOTH, (CallbackKind.RESULT, BOTH["on_result_url"])),
        ("queued", BOTH, (CallbackKind.PROGRESS, BOTH["on_progress_event_url"])),
        ("output", BOTH, (CallbackKind.PROGRESS, BOTH["on_progress_event_url"])),
        ("queued", {"on_result_url": "https://h/r"}, None),  # no progress URL: progress is not sent
        ("done", {"on_progress_event_url": "https://h/p"}, None),
        ("done", None, None),
        ("something-new", BOTH, None),
    ],
)
def test_which_callback_an_event_goes_to(
    event_type: str, callbacks: dict[str, str] | None, expected: tuple[CallbackKind, str] | None
) -> None:
    assert callback_for(event_type, callbacks) == expected


def test_a_success_lists_every_output_overall_and_per_node() -> None:
    payload = result_payload(RUN, Event(EVENT_ID, "done", {"status": "succeeded"}), OUTPUTS, URL_FOR)
    base = "https://api.example.com/v1/runs/r1/outputs/"
    assert payload == {
        "type": "success",
        "run_id": RUN,
        "output_images": [base + "a_00001_.png", base + "a_00002_.png", base + "mask%201.png"],
        "full_outputs": {
            "9": {"images": [base + "a_00001_.png", base + "a_00002_.png"]},
            "12": {"images": [base + "mask%201.png"]},
        },
    }


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (
            Event(EVENT_ID, "error", {"status": "failed", "error": {"type": "x", "message": "node 3 raised"}}),
            "node 3 raised",
        ),
        (Event(EVENT_ID, "error", {"status": "failed", "error": None}), "run failed"),
        (Event(EVENT_ID, "canceled", {"status": "canceled", "error": None}), "run canceled"),
    ],
)
def test_a_failure_carries_an_error_string_and_no_outputs(event: Event, error: str) -> None:
    payload = result_payload(RUN, event, OUTPUTS, URL_FOR)
    assert payload == {"type": "failed", "run_id": RUN, "error": error, "output_images": [], "full_outputs": {}}


@pytest.mark.parametrize(
    ("event_type", "data", "kind", "details"),
    [
        ("queued", {"workflow": "invert", "priority": "high", "tenant": "acme"}, "waiting",
         {"workflow": "invert", "priority": "high"}),
        ("started", {"attempt": 1, "worker": "gpu0", "comfyui_url": "http://10.0.0.5:8188"}, "pending", {"attempt": 1}),
        ("progress", {"progress": 0.5, "node": "3"}, "running", {"progress": 0.5, "node": "3"}),
        ("retrying", {"attempt": 1, "retry_at": 5.0, "error": {"type": "oom"}}, "message",
         {"attempt": 1, "retry_at": 5.0, "error": {"type": "oom"}}),
    ],
)  # fmt: skip
def test_progress_events_carry_only_public_fields(
    event_type: str, data: dict[str, Any], kind: str, details: dict[str, Any]
) -> None:
    payload = progress_payload(RUN, Event(EVENT_ID, event_type, data), URL_FOR)
    at = "2023-11-14T22:13:20.123Z"
    assert payload == {"type": kind, "payload": {"run_id": RUN, "event": event_type, "at": at, **details}}


def test_an_output_event_carries_its_url_not_its_storage_key() -> None:
    data = {"node": "9", "filename": "a.png", "content_type": "image/png", "size": 3, "key": "r1/1/a.png",
            "subfolder": "", "type": "output"}  # fmt: skip
    payload = progress_payload(RUN, Event(EVENT_ID, "output", data), api_output_url(""))
    assert payload["type"] == "message"
    assert payload["payload"]["url"] == "/v1/runs/r1/outputs/a.png"  # no public URL set: relative
    assert "key" not in payload["payload"] and payload["payload"]["size"] == 3


def test_ids_times_and_bytes() -> None:
    assert webhook_id(RUN, EVENT_ID) == "msg_r1_1700000000123-0"
    assert event_time("0-1") == "1970-01-01T00:00:00.000Z"
    body = encode({"b": "é", "a": [1]})
    assert body == '{"b":"é","a":[1]}'.encode()
    assert json.loads(body) == {"b": "é", "a": [1]}


def test_result_payload_lists_images_as_images_and_other_kinds_beside_them() -> None:
    outputs = [
        Output("3", "v_00001_.mp4", "video/mp4", 10, "r1/1/v_00001_.mp4", kind="video", ui_key="images"),
        Output("4", "w_00001_.webp", "image/webp", 10, "r1/1/w_00001_.webp", kind="image", ui_key="images"),
        Output("7", "text-7.txt", "text/plain; charset=utf-8", 2, "r1/1/text-7.txt", kind="text", text="hi"),
        Output("8", "s_00001_.opus", "audio/ogg; codecs=opus", 9, "r1/1/s_00001_.opus"),  # no kind: an old record
    ]
    payload = result_payload(RUN, Event(EVENT_ID, "done", {"status": "succeeded"}), outputs, URL_FOR)
    base = "https://api.example.com/v1/runs/r1/outputs"
    assert payload["output_images"] == [f"{base}/w_00001_.webp"]
    assert payload["full_outputs"] == {
        "3": {"images": [], "videos": [f"{base}/v_00001_.mp4"]},
        "4": {"images": [f"{base}/w_00001_.webp"]},
        "7": {"images": [], "text": ["hi"]},
        "8": {"images": [], "audio": [f"{base}/s_00001_.opus"]},
    }
