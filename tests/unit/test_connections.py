"""The asyncio client's command packing: hiredis's, byte for byte what redis-py's own Python packing sends."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio
from redis.exceptions import DataError

from dispatcher.connections import HIREDIS_PACKS, Connections, packed_by_hiredis

pytestmark = pytest.mark.skipif(not HIREDIS_PACKS, reason="hiredis is one of the project's dependencies")


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "8827e92d", 2, "cd:run:1", "cd:run:1:graph", "bench", "1796171434.7794027"),
        ("SET", "k", "é☃ and a long value " * 400),  # over redis-py's buffer cut-off: sent in pieces
        ("HSET", "h", "ints", 3, "negative", -7, "floats", 2.5, 1e-09, 100000.0, 0.1),
        ("SET", b"raw", b"\x00\xff bytes", "", ""),
        ("SCRIPT LOAD", "return 1"),  # a command name of two words
    ],
)
def test_hiredis_packing_sends_the_same_bytes(args: tuple[Any, ...]) -> None:
    pool = packed_by_hiredis(redis.asyncio.BlockingConnectionPool())
    ours, theirs = pool.make_connection(), redis.asyncio.Connection()
    assert type(ours).__name__ == "HiredisConnection"
    assert b"".join(ours.pack_command(*args)) == b"".join(theirs.pack_command(*args))


def test_what_cannot_be_sent_is_the_same_error() -> None:
    connection = packed_by_hiredis(redis.asyncio.BlockingConnectionPool()).make_connection()
    with pytest.raises(DataError):
        connection.pack_command("SET", "k", None)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://localhost:6379/0", "Connection"),
        ("rediss://localhost:6379/0", "SSLConnection"),
        ("unix:///run/redis.sock", "UnixDomainSocketConnection"),
    ],
)
def test_the_urls_own_connection_class_is_kept_underneath(url: str, kind: str) -> None:
    conns = Connections.from_url(url)
    try:
        cls = conns.aio.connection_pool.connection_class
        assert [base.__name__ for base in cls.__mro__][2] == kind
        assert packed_by_hiredis(conns.aio.connection_pool).connection_class is cls  # once only
    finally:
        conns.close()
