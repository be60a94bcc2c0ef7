"""``comfy-dispatch tenants ...`` and ``comfy-dispatch keys ...``: managing tenants and API keys.

``keys create`` prints the new key, and nothing else, on stdout (``KEY=$(comfy-dispatch keys
create --tenant acme)``); every other message goes to stderr. Bad input ends with a one-line
message and exit 2, like every command of :mod:`dispatcher.cli`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dispatcher.apikeys import DEFAULT_SCOPES, SCOPES, ApiKeyStore, key_id_of
from dispatcher.cli.common import die
from dispatcher.errors import DispatchError
from dispatcher.settings import Settings, load_settings
from dispatcher.tenants import DEFAULT_TENANT, LIMIT_FIELDS, Tenant, TenantStore

tenants_app = typer.Typer(no_args_is_help=True, help="Create, change and list tenants and their limits.")
keys_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys.")

RedisOpt = Annotated[str | None, typer.Option("--redis-url", help="overrides COMFY_DISPATCH_REDIS_URL")]


@contextmanager
def _redis(redis_url: str | None) -> Iterator[tuple[Redis, Settings]]:
    """A decoding Redis client on the configured URL; bad settings, bad input and no Redis end with exit 2."""
    try:
        settings = load_settings(redis_url=redis_url)
    except DispatchError as exc:
        raise die(f"invalid setting {exc}") from None
    client = Redis.from_url(settings.redis_url, decode_responses=True, socket_connect_timeout=5, socket_timeout=10)
    try:
        yield client, settings
    except DispatchError as exc:
        raise die(str(exc)) from None
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise die(f"cannot reach Redis at {settings.redis_url}: {exc}") from None
    finally:
        client.close()


def _number(value: float | int) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _describe(tenant: Tenant) -> str:
    # A limit the tenant did not set shows with a "*": it follows the default in settings.
    parts = []
    for name in LIMIT_FIELDS:
        mark = "" if name in tenant.overrides else "*"
        parts.append(f"{name}={_number(getattr(tenant.limits, name))}{mark}")
    return f"{tenant.name}  " + " ".join(parts)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@tenants_app.command("set")
def tenants_set(
    name: Annotated[str, typer.Argument(help="tenant name: letters, digits, '_', '.', '-'")],
    submit_rate: Annotated[float | None, typer.Option(help="admitted submissions per second, per API key")] = None,
    submit_burst: Annotated[int | None, typer.Option(help="submissions an API key may make at once")] = None,
    dispatch_rate: Annotated[float | None, typer.Option(help="runs dispatched per second (0: no limit)")] = None,
    max_running: Annotated[int | None, typer.Option(help="most runs in flight at once (0: no limit)")] = None,
    max_queued: Annotated[int | None, typer.Option(help="most runs queued at once (0: no limit)")] = None,
    webhook_secret: Annotated[
        str | None, typer.Option(help="secret signing this tenant's webhooks: whsec_ + base64 of 24-64 bytes")
    ] = None,
    redis_url: RedisOpt = None,
) -> None:
    """Create a tenant, or change the limits given (others keep their value; unset ones follow the defaults)."""
    limits: dict[str, Any] = {
        "submit_rate": submit_rate,
        "submit_burst": submit_burst,
        "dispatch_rate": dispatch_rate,
        "max_running": max_running,
        "max_queued": max_queued,
        "webhook_secret": webhook_secret,
    }
    with _redis(redis_url) as (client, settings):
        tenant = TenantStore(client, settings).set(name, **limits)
    typer.echo(_describe(tenant))


@tenants_app.command("list")
def tenants_list(redis_url: RedisOpt = None) -> None:
    """List the tenants and their limits (``*``: the default from settings)."""
    with _redis(redis_url) as (client, settings):
        store = TenantStore(client, settings)
        for name in store.names():
            typer.echo(_describe(store.effective(name)))


@tenants_app.command("show")
def tenants_show(
    name: Annotated[str, typer.Argument(help="tenant name")],
    redis_url: RedisOpt = None,
) -> None:
    """Print the tenant's webhook signing secret on stdout (generated now if it has none yet); its limits on stderr.

    Give the secret to the tenant's webhook receivers: they verify each delivery's webhook-signature with it.
    """
    with _redis(redis_url) as (client, settings):
        store = TenantStore(client, settings)
        tenant = store.get(name) if name != DEFAULT_TENANT else store.effective(name)
        if tenant is None:
            raise die(f"tenant {name!r} does not exist")
        secret = store.webhook_secret(name)
    typer.echo(_describe(tenant), err=True)
    typer.echo(secret)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option("--tenant", help="the tenant whose runs this key submits and reads")],
    scope: Annotated[str, typer.Option("--scope", help=f"comma-separated scopes among {','.join(SCOPES)}")] = ",".join(
        DEFAULT_SCOPES
    ),
    redis_url: RedisOpt = None,
) -> None:
    """Create an API key and print it on stdout: it is shown this once, and only its hash is kept."""
    with _redis(redis_url) as (client, _):
        info, key = ApiKeyStore(client).create(tenant, scope)
    typer.echo(f"created key {info.key_id} for tenant {info.tenant} (scopes: {','.join(info.scopes)})", err=True)
    typer.echo(key)


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option("--tenant", help="only this tenant's keys")] = None,
    redis_url: RedisOpt = None,
) -> None:
    """List API keys: id, tenant, scopes, created, revoked (never the keys themselves)."""
    with _redis(redis_url) as (client, _):
        infos = ApiKeyStore(client).list(tenant)
    for info in infos:
        fields = (info.key_id, info.tenant, ",".join(info.scopes), _when(info.created_at), _when(info.revoked_at))
        typer.echo("  ".join(fields))


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="the key id (as `keys list` shows it) or the whole key")],
    redis_url: RedisOpt = None,
) -> None:
    """Revoke an API key: requests with it get 401 from now on."""
    key_id = key_id_of(key)
    if key_id is None:
        raise die(f"{key[:16]!r} is neither a key id (12 hex digits) nor an API key")
    with _redis(redis_url) as (client, _):
        store = ApiKeyStore(client)
        if not store.revoke(key_id):
            info = store.get(key_id)
            raise die(f"key {key_id} does not exist" if info is None else f"key {key_id} is already revoked")
    typer.echo(f"revoked key {key_id}", err=True)
