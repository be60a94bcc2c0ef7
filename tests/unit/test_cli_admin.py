"""``comfy-dispatch tenants ...`` and ``keys ...`` against a real redis-server (``COMFY_DISPATCH_REDIS_URL``)."""

from __future__ import annotations

import pytest
from redis import Redis
from typer.testing import CliRunner

from dispatcher import keys
from dispatcher.apikeys import KEY_RE, ApiKeyStore
from dispatcher.cli import app

runner = CliRunner()

pytestmark = pytest.mark.redis


@pytest.fixture
def redis(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Redis:
    monkeypatch.setenv("COMFY_DISPATCH_REDIS_URL", redis_url)
    return Redis.from_url(redis_url, decode_responses=True)


def test_tenants_set_and_list(redis: Redis) -> None:
    result = runner.invoke(app, ["tenants", "set", "acme", "--submit-rate", "2.5", "--max-queued", "50"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("acme  submit_rate=2.5 submit_burst=100* ")
    assert redis.hgetall(keys.tenant("acme")) == {"submit_rate": "2.5", "max_queued": "50"}
    # A second set changes only what it names.
    assert runner.invoke(app, ["tenants", "set", "acme", "--submit-burst", "5"]).exit_code == 0
    assert runner.invoke(app, ["tenants", "set", "globex"]).exit_code == 0
    listed = runner.invoke(app, ["tenants", "list"]).stdout.splitlines()
    assert listed == [
        "acme  submit_rate=2.5 submit_burst=5 dispatch_rate=0* max_running=0* max_queued=50",
        "globex  submit_rate=10* submit_burst=100* dispatch_rate=0* max_running=0* max_queued=100000*",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tenants", "set", "bad name"], "name: "),
        (["tenants", "set", "acme", "--submit-rate", "0"], "submit_rate: must be > 0"),
        (["tenants", "set", "acme", "--submit-burst", "0"], "submit_burst: must be >= 1"),
        (["tenants", "set", "acme", "--max-running", "-1"], "max_running: must be a number >= 0"),
        (["keys", "create", "--tenant", "nobody"], "tenant 'nobody' does not exist"),
        (["keys", "create", "--tenant", "acme", "--scope", "read,write"], "scope: unknown scope 'write'"),
        (["keys", "revoke", "0123456789ab"], "key 0123456789ab does not exist"),
        (["keys", "revoke", "hello"], "is neither a key id"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(redis: Redis, args: list[str], message: str) -> None:
    runner.invoke(app, ["tenants", "set", "acme"])
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("comfy-dispatch: ") and message in lines[0], result.stderr


def test_keys_create_prints_only_the_key(redis: Redis) -> None:
    runner.invoke(app, ["tenants", "set", "acme"])
    result = runner.invoke(app, ["keys", "create", "--tenant", "acme", "--scope", "submit,read,admin"])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert result.stdout == key + "\n" and KEY_RE.match(key)
    assert "created key" in result.stderr and key not in result.stderr
    who = ApiKeyStore(redis).authenticate(key)
    assert who is not None and who.tenant == "acme" and who.scopes == {"submit", "read", "admin"}


def test_keys_list_and_revoke(redis: Redis) -> None:
    runner.invoke(app, ["tenants", "set", "acme"])
    runner.invoke(app, ["tenants", "set", "globex"])
    first = runner.invoke(app, ["keys", "create", "--tenant", "acme"]).stdout.strip()
    second = runner.invoke(app, ["keys", "create", "--tenant", "globex", "--scope", "read"]).stdout.strip()
    first_id, second_id = first.split("_")[1], second.split("_")[1]
    listed = runner.invoke(app, ["keys", "list"]).stdout
    assert first not in listed and second not in listed  # never the keys themselves
    rows = [line.split("  ") for line in listed.splitlines()]
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [
        (first_id, "acme", "submit,read", "-"),
        (second_id, "globex", "read", "-"),
    ]
    # Revoke by the whole key as well as by id.
    revoked = runner.invoke(app, ["keys", "revoke", first])
    assert revoked.exit_code == 0 and revoked.stdout == "" and first_id in revoked.stderr
    assert ApiKeyStore(redis).authenticate(first) is None
    again = runner.invoke(app, ["keys", "revoke", first_id])
    assert again.exit_code == 2 and "already revoked" in again.stderr
    rows = [line.split("  ") for line in runner.invoke(app, ["keys", "list", "--tenant", "acme"]).stdout.splitlines()]
    assert len(rows) == 1 and rows[0][0] == first_id and rows[0][4].endswith("Z")


def test_unreachable_redis_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFY_DISPATCH_REDIS_URL", "redis://127.0.0.1:1/0")
    result = runner.invoke(app, ["tenants", "list"])
    assert result.exit_code == 2
    assert result.stderr.startswith("comfy-dispatch: cannot reach Redis at redis://127.0.0.1:1/0")


def test_bad_redis_url_is_a_setting_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFY_DISPATCH_REDIS_URL", "http://nope")
    result = runner.invoke(app, ["keys", "list"])
    assert result.exit_code == 2
    assert "COMFY_DISPATCH_REDIS_URL" in result.stderr
