"""API keys: who a request is (its tenant) and what it may do (its scopes).

A key reads ``cdk_<key_id>_<secret>``: ``key_id`` (12 hex digits) finds the record, the secret
proves the holder. The record (``keys.api_key(key_id)``) keeps the sha256 of the whole key, never
the key itself, so a copy of Redis lets nobody in; the clear key is shown once, when created.
A sha256 is enough here (no slow KDF): the secret is 256 random bits, not a password to guess.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from redis import Redis

from dispatcher import keys
from dispatcher.errors import Forbidden, ParameterError
from dispatcher.tenants import check_name

log = logging.getLogger(__name__)

SCOPES: tuple[str, ...] = ("submit", "read", "admin")
"""Every scope, in display order: submit runs (and cancel them), read workflows and runs, admin (queues, workers)."""

DEFAULT_SCOPES: tuple[str, ...] = ("submit", "read")

PREFIX = "cdk_"
KEY_RE = re.compile(r"^cdk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
KEY_ID_RE = re.compile(r"^[0-9a-f]{12}$")

# Create only if the id is new (48 random bits: a clash is unlikely, but would hand out someone's record).
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# Revoke once: unknown or already revoked keys answer 0 and are left alone.
_REVOKE = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'revoked_at') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'revoked_at', ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])  -- API processes forget the key at once (api.keycache)
return 1
"""


@dataclass(frozen=True)
class Principal:
    """Who made a request: the tenant its runs belong to, its scopes, and the key (its rate bucket)."""

    tenant: str
    scopes: frozenset[str]
    key_id: str

    def require(self, scope: str) -> None:
        """Raise :class:`Forbidden` unless this principal has ``scope``."""
        if scope not in self.scopes:
            raise Forbidden(scope)


@dataclass(frozen=True)
class KeyInfo:
    """An API key as listed: everything but the secret (which is not kept)."""

    key_id: str
    tenant: str
    scopes: tuple[str, ...]
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def parse_scopes(scopes: str | Iterable[str]) -> tuple[str, ...]:
    """Scopes from ``"submit,read"`` or a list, in :data:`SCOPES` order; ParameterError naming "scope" otherwise."""
    items = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    wanted = {item.strip().lower() for item in items if item.strip()}
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise ParameterError("scope", f"unknown scope {unknown[0]!r}; scopes are {', '.join(SCOPES)}")
    if not wanted:
        raise ParameterError("scope", f"at least one scope is needed: {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in wanted)


def key_id_of(text: str) -> str | None:
    """The key id in a key id or a whole key, or None if ``text`` is neither."""
    if KEY_ID_RE.match(text):
        return text
    match = KEY_RE.match(text)
    return match.group(1) if match else None


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeyStore:
    """API keys in Redis (``redis`` must decode responses)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._create = redis.register_script(_CREATE)
        self._revoke = redis.register_script(_REVOKE)

    def create(self, tenant: str, scopes: str | Iterable[str] = DEFAULT_SCOPES) -> tuple[KeyInfo, str]:
        """A new key of an existing ``tenant``: its info and the clear key, which is returned this once only.

        Raises ParameterError naming "scope" for an unknown scope, "tenant" for an unknown tenant.
        """
        check_name(tenant)
        granted = parse_scopes(scopes)
        if not self.redis.sismember(keys.TENANTS, tenant):
            raise ParameterError("tenant", f"tenant {tenant!r} does not exist; create it first (tenants set)")
        while True:
            key_id = secrets.token_hex(6)
            key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
            info = KeyInfo(key_id=key_id, tenant=tenant, scopes=granted, created_at=time.time())
            record = {"tenant": tenant, "scopes": ",".join(granted), "sha256": digest(key)}
            record["created_at"] = repr(info.created_at)
            flat = [item for pair in record.items() for item in pair]
            if int(self._create(keys=[keys.api_key(key_id), keys.API_KEYS], args=[key_id, *flat])):
                log.info("created API key %s for tenant %s (scopes: %s)", key_id, tenant, ",".join(granted))
                return info, key

    def authenticate(self, key: str) -> Principal | None:
        """The principal ``key`` stands for, or None if it is malformed, unknown or revoked."""
        match = KEY_RE.match(key)
        if match is None:
            return None
        record: dict[str, str] = self.redis.hgetall(keys.api_key(match.group(1)))  # type: ignore[assignment]
        return principal_of(key, record)

    def get(self, key_id: str) -> KeyInfo | None:
        """One key's info, or None if there is no such key id."""
        if not KEY_ID_RE.match(key_id):
            return None
        data: dict[str, str] = self.redis.hgetall(keys.api_key(key_id))  # type: ignore[assignment]
        return _info(key_id, data)

    def list(self, tenant: str | None = None) -> list[KeyInfo]:
        """Every key (of ``tenant`` if given), revoked ones included, oldest first; never a secret."""
        ids: set[str] = self.redis.smembers(keys.API_KEYS)  # type: ignore[assignment]
        ordered = sorted(ids)
        pipe = self.redis.pipeline(transaction=False)
        for key_id in ordered:
            pipe.hgetall(keys.api_key(key_id))
        infos = [_info(key_id, data) for key_id, data in zip(ordered, pipe.execute(), strict=True)]
        found = [i for i in infos if i is not None and (tenant is None or i.tenant == tenant)]
        return sorted(found, key=lambda i: (i.created_at, i.key_id))

    def revoke(self, key_id: str) -> bool:
        """Revoke a key at once (its record stays, marked, for ``keys list``); False if unknown or already revoked."""
        if not KEY_ID_RE.match(key_id):
            return False
        done = bool(
            int(self._revoke(keys=[keys.api_key(key_id)], args=[repr(time.time()), keys.API_KEYS_CHANGED, key_id]))
        )
        if done:
            log.info("revoked API key %s", key_id)
        return done


def principal_of(key: str, record: dict[str, str]) -> Principal | None:
    """Whom ``key`` stands for, given the record its key id names; None if it does not match or is revoked.

    Pure, so the API's event loop can check a key it read with an asyncio client.
    """
    match = KEY_RE.match(key)
    stored = record.get("sha256", "")
    # Constant time: how much of a guessed secret matched must not show in how long the answer takes.
    if match is None or not stored or not hmac.compare_digest(stored.encode(), digest(key).encode()):
        return None
    return principal_of_record(match.group(1), record)


def principal_of_record(key_id: str, record: dict[str, str]) -> Principal | None:
    """Whom key ``key_id`` stands for by its record alone (the secret checked already), None if revoked or gone."""
    if record.get("revoked_at") or not record.get("tenant") or not KEY_ID_RE.match(key_id):
        return None
    scopes = frozenset(record.get("scopes", "").split(","))
    return Principal(tenant=record["tenant"], scopes=scopes, key_id=key_id)


def _info(key_id: str, data: dict[str, str]) -> KeyInfo | None:
    if not data.get("tenant"):
        return None
    revoked = data.get("revoked_at")
    return KeyInfo(
        key_id=key_id,
        tenant=data["tenant"],
        scopes=tuple(s for s in data.get("scopes", "").split(",") if s),
        created_at=float(data.get("created_at") or 0.0),
        revoked_at=float(revoked) if revoked else None,
    )
