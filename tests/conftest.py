"""Shared fixtures: real redis-server and fake ComfyUI processes on free ports, fakeredis for unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
from redis import Redis

from dispatcher.connections import Connections
from dispatcher.redis_server import RedisServer, find_redis_binary
from tests.support import FakeComfy

ROOT = Path(__file__).resolve().parent.parent
TRANSCRIPTS = ROOT / "tests" / "fixtures" / "transcripts"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(data_dir=tmp_path_factory.mktemp("redis"), appendonly=False).start(find_redis_binary())
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A real, empty Redis (flushed before and after the test)."""
    client = Redis.from_url(redis_server.url)
    client.flushall()
    yield redis_server.url
    client.flushall()
    client.close()


def fake_connections(server: fakeredis.FakeServer) -> Connections:
    """fakeredis clients sharing ``server``: text (decoded), raw (for RQ) and asyncio (decoded)."""
    return Connections(
        text=fakeredis.FakeRedis(server=server, decode_responses=True),
        raw=fakeredis.FakeRedis(server=server),
        aio=fakeredis.FakeAsyncRedis(server=server, decode_responses=True),
    )


@pytest.fixture
def fake_conns() -> Iterator[Connections]:
    """fakeredis clients sharing one server (see :func:`fake_connections`)."""
    conns = fake_connections(fakeredis.FakeServer())
    yield conns
    conns.close()


@pytest.fixture(scope="module")
def fake_comfyui_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeComfy]:
    fake = FakeComfy(tmp_path_factory.mktemp("fake-comfyui")).start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_comfyui(fake_comfyui_module: FakeComfy) -> FakeComfy:
    """A running fake ComfyUI process, reset (no history, no faults) for each test."""
    fake_comfyui_module.reset()
    return fake_comfyui_module
