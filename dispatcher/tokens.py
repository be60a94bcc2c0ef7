"""Access tokens: short-lived bearer credentials minted from an API key (Comflowy's ``/auth/token``).

A token reads ``cdt_<token_id>_<secret>``, like a key. Its record (``keys.access_token(token_id)``) holds
the id of the key it was minted from, the sha256 of the whole token (never the token) and when it
expires, and Redis drops it then. A token stands for its key: the key's tenant and scopes as they are
when the token is used, and nothing once the key is revoked (checked at every use; API processes forget
what they remember of a revoked key's tokens with the key, :mod:`api.keycache`). So a client holding a
token never holds the key, and a token that leaks is worth an hour at most.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time

from redis import Redis

from dispatcher import keys
from dispatcher.apikeys import Principal, digest, principal_of_record

PREFIX = "cdt_"
TOKEN_RE = re.compile(r"^cdt_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")

# Create only if the id is new: a clash (48 random bits) must not replace another client's token.
_MINT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'key_id', ARGV[1], 'sha256', ARGV[2], 'expires_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


def token_id_of(token: str) -> str | None:
    """The token id of a well-formed token, else None."""
    match = TOKEN_RE.match(token)
    return match.group(1) if match else None


class TokenStore:
    """Access tokens in Redis (``redis`` must decode responses)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._mint = redis.register_script(_MINT)

    def mint(self, principal: Principal, seconds: int) -> tuple[str, float]:
        """A new token for ``principal``'s key, good for ``seconds``: the token (shown this once) and its expiry."""
        while True:
            token_id = secrets.token_hex(6)
            token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
            expires_at = time.time() + seconds
            args: list[str | int] = [principal.key_id, digest(token), repr(expires_at), seconds]
            if int(self._mint(keys=[keys.access_token(token_id)], args=args)):
                return token, expires_at


def principal_of_token(
    token: str, token_record: dict[str, str], key_record: dict[str, str], *, now: float
) -> Principal | None:
    """Whom ``token`` stands for, given its record and its key's record; None if it does not match, has expired,
    or its key is revoked. Pure, so the API's event loop can check what it read with an asyncio client."""
    match = TOKEN_RE.match(token)
    stored = token_record.get("sha256", "")
    # Constant time: how much of a guessed secret matched must not show in how long the answer takes.
    if match is None or not stored or not hmac.compare_digest(stored.encode(), digest(token).encode()):
        return None
    if float(token_record.get("expires_at") or 0.0) <= now:
        return None  # Redis drops it within a second or so; until then it is refused here
    return principal_of_record(token_record.get("key_id", ""), key_record)


def seconds_left(token_record: dict[str, str], *, now: float) -> float:
    """How long a token whose record this is stays good (0 when expired)."""
    return max(0.0, float(token_record.get("expires_at") or 0.0) - now)
