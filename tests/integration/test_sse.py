"""Run events over real HTTP: uvicorn on a free port, a real redis-server, clients reading with requests.

Each step of a run's life is written with the production scripts (``tests.events_helpers.Life``)
while the client holds the stream open, so these tests see events arrive live, resume after
``Last-Event-ID``, and get a finished run's whole history at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from redis import Redis

from api.app import create_app
from api.routes import events
from dispatcher.settings import Settings, load_settings
from dispatcher.submit import Submitter
from dispatcher.workflows import Registry
from tests.events_helpers import ApiServer, Life, SseEvent, parse_sse

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return load_settings({}, redis_url=redis_url, output_dir=tmp_path / "out", auth="disabled")


@pytest.fixture
def api(settings: Settings) -> Iterator[str]:
    with ApiServer(create_app(settings)) as server:
        yield server.url


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def new_run(redis: Redis, settings: Settings) -> str:
    body = {"params": {"width": 8, "height": 8}}
    return Submitter(redis, Registry.load(settings.workflows_dir), settings).submit("invert", body).id


def open_stream(api: str, run_id: str, **headers: str) -> tuple[requests.Response, Iterator[SseEvent]]:
    response = requests.get(f"{api}/v1/runs/{run_id}/events", headers=headers, stream=True, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return response, parse_sse(response.iter_lines(decode_unicode=True))


def test_events_arrive_live_one_step_at_a_time(api: str, redis: Redis, settings: Settings) -> None:
    run_id = new_run(redis, settings)
    response, stream = open_stream(api, run_id)
    with response:
        assert next(stream).event == "queued"
        life = Life(redis, run_id).start()
        assert next(stream).event == "started"  # each read returns only once the step above was written
        life.progress(0.5, "2")
        progress = next(stream)
        assert (progress.event, progress.json()) == ("progress", {"progress": 0.5, "node": "2"})
        life.succeed("a.png")
        output = next(stream)
        assert output.event == "output"
        assert output.json()["url"] == f"{api}/v1/runs/{run_id}/outputs/a.png"
        assert next(stream).event == "done"
        assert list(stream) == []  # the response ended after the terminal event


def test_a_resume_with_last_event_id_gets_only_later_events(api: str, redis: Redis, settings: Settings) -> None:
    run_id = new_run(redis, settings)
    life = Life(redis, run_id).start()
    response, stream = open_stream(api, run_id)
    with response:
        seen = [next(stream), next(stream)]
    assert [e.event for e in seen] == ["queued", "started"]
    life.progress(0.3, "1").progress(0.6, "2")  # while the client is away
    response, stream = open_stream(api, run_id, **{"Last-Event-ID": seen[-1].id or ""})
    with response:
        assert [(e.event, e.json()["node"]) for e in (next(stream), next(stream))] == [
            ("progress", "1"),
            ("progress", "2"),
        ]
        life.succeed("a.png")  # and live again after the history
        assert [e.event for e in stream] == ["output", "done"]


def test_a_client_arriving_after_the_end_gets_everything_at_once(api: str, redis: Redis, settings: Settings) -> None:
    run_id = new_run(redis, settings)
    Life(redis, run_id).whole("a.png", "b.png")
    started = time.monotonic()
    response, stream = open_stream(api, run_id)
    with response:
        got = list(stream)
    assert time.monotonic() - started < 2
    assert [e.event for e in got] == ["queued", "started", "progress", "progress", "output", "output", "done"]
    assert len({e.id for e in got}) == len(got)
    after_end = requests.get(f"{api}/v1/runs/{run_id}/events", headers={"Last-Event-ID": got[-1].id or ""}, timeout=10)
    assert after_end.status_code == 204


def test_keep_alives_flow_while_nothing_happens(
    api: str, redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "KEEPALIVE_SECONDS", 0.2)  # the server runs in this process
    run_id = new_run(redis, settings)
    response, stream = open_stream(api, run_id)
    with response:
        assert next(stream).event == "queued"
        assert next(stream).comments == ["keep-alive"]
        assert next(stream).comments == ["keep-alive"]
        Life(redis, run_id).start()
        assert next(stream).event == "started"


def test_a_thousand_quick_events_arrive_all_and_in_order(api: str, redis: Redis, settings: Settings) -> None:
    run_id = new_run(redis, settings)
    life = Life(redis, run_id).start()
    response, stream = open_stream(api, run_id)
    with response:
        for i in range(1, 901):
            life.progress(i / 1000, str(i))
        life.succeed("a.png")
        got = [e for e in stream if e.event == "progress"]
    assert [e.json()["node"] for e in got] == [str(i) for i in range(1, 901)]


def test_a_client_leaving_frees_its_redis_connection(api: str, redis: Redis, settings: Settings) -> None:
    def streams() -> int:
        return sum(1 for c in redis.client_list() if c["name"] == events.CLIENT_NAME)

    run_id = new_run(redis, settings)
    response, stream = open_stream(api, run_id)
    with response:
        assert next(stream).event == "queued"
        assert streams() == 1  # the stream's own connection, blocked in XREAD
    deadline = time.monotonic() + 5
    while streams() and time.monotonic() < deadline:
        time.sleep(0.05)  # the server notices the disconnect on its own schedule
    assert streams() == 0


def test_stream_true_answers_the_new_runs_events_over_http(api: str, redis: Redis) -> None:
    body = {"params": {"width": 8, "height": 8}, "stream": True}
    with requests.post(f"{api}/v1/workflows/invert/runs", json=body, stream=True, timeout=10) as response:
        assert response.status_code == 200
        run_id = response.headers["Location"].rsplit("/", 1)[1]
        stream = parse_sse(response.iter_lines(decode_unicode=True))
        assert next(stream).event == "queued"
        Life(redis, run_id).whole("a.png")
        assert [e.event for e in stream] == ["started", "progress", "progress", "output", "done"]
