"""Tenants' webhook secrets: generated on first need, set by the operator, shown by ``tenants show``."""

from __future__ import annotations

import pytest
from redis import Redis
from typer.testing import CliRunner

from dispatcher import keys
from dispatcher.cli import app
from dispatcher.connections import Connections
from dispatcher.errors import ParameterError
from dispatcher.settings import load_settings
from dispatcher.tenants import TenantStore
from dispatcher.webhooks.signing import decode_secret, generate_secret

runner = CliRunner()


def test_a_secret_is_generated_once_and_kept(fake_conns: Connections) -> None:
    store = TenantStore(fake_conns.text, load_settings({}))
    secret = store.webhook_secret("acme")
    assert len(decode_secret(secret)) == 24
    assert store.webhook_secret("acme") == secret
    assert store.effective("acme").webhook_secret == secret


def test_the_operator_sets_one_in_the_standard_form(fake_conns: Connections) -> None:
    store = TenantStore(fake_conns.text, load_settings({}))
    chosen = generate_secret()
    assert store.set("acme", webhook_secret=chosen).webhook_secret == chosen
    assert store.webhook_secret("acme") == chosen
    with pytest.raises(ParameterError, match="webhook_secret"):
        store.set("acme", webhook_secret="hunter2")


@pytest.mark.redis
def test_tenants_set_and_show(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFY_DISPATCH_REDIS_URL", redis_url)
    redis = Redis.from_url(redis_url, decode_responses=True)
    assert runner.invoke(app, ["tenants", "set", "acme"]).exit_code == 0
    shown = runner.invoke(app, ["tenants", "show", "acme"])
    assert shown.exit_code == 0, shown.output
    generated = shown.stdout.strip()  # the secret alone on stdout: SECRET=$(comfy-dispatch tenants show acme)
    assert generated.startswith("whsec_") and redis.hget(keys.tenant("acme"), "webhook_secret") == generated
    assert shown.stderr.startswith("acme  submit_rate=")
    assert runner.invoke(app, ["tenants", "show", "acme"]).stdout.strip() == generated  # kept

    chosen = generate_secret()
    assert runner.invoke(app, ["tenants", "set", "acme", "--webhook-secret", chosen]).exit_code == 0
    assert runner.invoke(app, ["tenants", "show", "acme"]).stdout.strip() == chosen

    bad = runner.invoke(app, ["tenants", "set", "acme", "--webhook-secret", "hunter2"])
    assert bad.exit_code == 2 and "webhook_secret: " in bad.stderr
    missing = runner.invoke(app, ["tenants", "show", "nobody"])
    assert missing.exit_code == 2 and "tenant 'nobody' does not exist" in missing.stderr
    redis.close()
