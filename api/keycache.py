"""API keys (and access tokens) an API process checked recently, so a request does not read its key's record
each time.

Every request names its key, and reading the key's record was a Redis round trip on the path of each
one. A key found valid is remembered for :data:`TTL_SECONDS`, by the SHA-256 of the whole key (a key
with a different secret is another entry). Revoking a key publishes its id (``keys.API_KEYS_CHANGED``,
in the script that revokes it); every API process listens on the one subscription it keeps for waits
(:mod:`api.waits`) and forgets the key at once. While that subscription is down nothing is remembered,
and everything is forgotten when it comes back, so a revocation can never be missed. Unknown keys are
never remembered: a flood of made-up keys fills nothing.
"""

from __future__ import annotations

import hashlib
import time

from dispatcher.apikeys import Principal

TTL_SECONDS = 5.0
MAX_ENTRIES = 10_000


class KeyCache:
    def __init__(self, *, ttl: float = TTL_SECONDS, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.enabled = False  # only while revocations can reach us
        self.generation = 0  # moves on at every revocation: a read that began before one is not remembered
        self._entries: dict[str, tuple[Principal, float]] = {}

    @staticmethod
    def _ident(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    def get(self, key: str) -> Principal | None:
        """The principal remembered for ``key``, or None (look it up)."""
        found = self._entries.get(self._ident(key)) if self.enabled else None
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    def put(self, key: str, principal: Principal, generation: int, *, lifetime: float | None = None) -> None:
        """Remember ``principal``, read from Redis when :attr:`generation` was ``generation``: unless a key was
        revoked since (the read may predate the revocation of this very key). ``lifetime``: seconds the
        credential stays good at most (an access token's), which the memory never outlasts."""
        if not self.enabled or generation != self.generation:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # rare and harmless: the next requests read their keys again
        ttl = self.ttl if lifetime is None else min(self.ttl, lifetime)
        self._entries[self._ident(key)] = (principal, time.monotonic() + ttl)

    def forget(self, key_id: str) -> None:
        """A key was revoked: drop it (its entries, under any secret)."""
        self.generation += 1
        for ident in [i for i, (p, _) in self._entries.items() if p.key_id == key_id]:
            self._entries.pop(ident, None)

    def listening(self, yes: bool) -> None:
        """The revocation channel is (again) subscribed, or lost: either way, start from nothing."""
        self.generation += 1
        self._entries.clear()
        self.enabled = yes
