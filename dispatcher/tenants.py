"""Tenants and their limits, kept in Redis (``keys.tenant``).

A limit a tenant does not set falls back to the default in settings, read at
use: changing a default changes every tenant that did not set its own. The
dispatch scripts read the same hash fields from Lua.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from redis import Redis

from dispatcher import keys
from dispatcher.errors import ParameterError
from dispatcher.settings import Settings
from dispatcher.webhooks.signing import SignatureError, decode_secret, generate_secret

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_TENANT = "default"
"""The tenant of every run when auth is disabled."""

LIMIT_FIELDS = ("submit_rate", "submit_burst", "dispatch_rate", "max_running", "max_queued")


@dataclass(frozen=True)
class Limits:
    submit_rate: float
    submit_burst: int
    dispatch_rate: float  # 0: no limit
    max_running: int  # 0: no limit
    max_queued: int  # 0: no limit


@dataclass(frozen=True)
class Tenant:
    name: str
    overrides: dict[str, Any]  # the limits this tenant set itself
    limits: Limits
    webhook_secret: str = ""


def defaults(settings: Settings) -> Limits:
    return Limits(**{name: getattr(settings, name) for name in LIMIT_FIELDS})


def check_name(name: str, param: str = "name") -> str:
    """``name`` if it is a valid tenant name; else ParameterError naming ``param``."""
    if not NAME_RE.match(name):
        raise ParameterError(param, "a tenant name is 1-64 letters, digits, '_', '.' or '-'")
    return name


class TenantStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis  # decode_responses=True
        self.settings = settings

    def get(self, name: str) -> Tenant | None:
        pipe = self.redis.pipeline(transaction=False)  # one round trip: this is on every submission's path
        pipe.hgetall(keys.tenant(name))
        pipe.sismember(keys.TENANTS, name)
        data, known = pipe.execute()
        if not data and not known:
            return None
        return self._from_hash(name, data)

    def effective(self, name: str) -> Tenant:
        """The tenant, or one with only default limits if it was never set (e.g. the auth-disabled tenant)."""
        return self.get(name) or self._from_hash(name, {})

    def set(self, name: str, **limits: Any) -> Tenant:
        """Create or update a tenant; limits given as None are left as they are."""
        check_name(name)
        changes = {k: v for k, v in limits.items() if v is not None}
        unknown = set(changes) - set(LIMIT_FIELDS) - {"webhook_secret"}
        if unknown:
            raise ParameterError(sorted(unknown)[0], "unknown tenant setting")
        for key, value in changes.items():
            if key != "webhook_secret" and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
                raise ParameterError(key, "must be a number >= 0")
        if "webhook_secret" in changes:
            try:
                decode_secret(str(changes["webhook_secret"]))
            except SignatureError as exc:
                raise ParameterError("webhook_secret", str(exc)) from None
        # Admission needs a bucket something fits in (dispatcher.ratelimit.check_limits).
        if changes.get("submit_rate") == 0:
            raise ParameterError("submit_rate", "must be > 0")
        if "submit_burst" in changes and changes["submit_burst"] < 1:
            raise ParameterError("submit_burst", "must be >= 1")
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(keys.TENANTS, name)
        if changes:
            pipe.hset(keys.tenant(name), mapping={k: str(v) for k, v in changes.items()})
        pipe.execute()
        return self.effective(name)

    def webhook_secret(self, name: str) -> str:
        """The tenant's webhook signing secret; the first time one is needed, a new one is generated and kept.

        HSETNX: two processes needing it at once keep the same one.
        """
        pipe = self.redis.pipeline(transaction=True)
        pipe.hsetnx(keys.tenant(name), "webhook_secret", generate_secret())
        pipe.hget(keys.tenant(name), "webhook_secret")
        _, secret = pipe.execute()
        return str(secret)

    def names(self) -> list[str]:
        members: set[str] = self.redis.smembers(keys.TENANTS)  # type: ignore[assignment]
        return sorted(members)

    def _from_hash(self, name: str, data: dict[str, str]) -> Tenant:
        base = defaults(self.settings)
        overrides: dict[str, Any] = {}
        values: dict[str, Any] = {}
        for f in fields(Limits):
            raw = data.get(f.name)
            if raw is None or raw == "":
                values[f.name] = getattr(base, f.name)
                continue
            value: float | int = float(raw) if f.type in ("float", float) else int(float(raw))
            values[f.name] = overrides[f.name] = value
        return Tenant(name, overrides, Limits(**values), data.get("webhook_secret", ""))
