"""Access tokens minted from API keys: what a token stands for, from its record and its key's (pure), and minting."""

from __future__ import annotations

import pytest

from dispatcher.apikeys import ApiKeyStore, Principal, digest
from dispatcher.connections import Connections
from dispatcher.settings import load_settings
from dispatcher.tenants import TenantStore
from dispatcher.tokens import TokenStore, principal_of_token, seconds_left, token_id_of

TOKEN = "cdt_0123456789ab_" + "t" * 43
KEY_ID = "ba9876543210"
KEY = {"tenant": "acme", "scopes": "submit,read", "sha256": "x"}
NOW = 1_000_000.0


def record(**changes: str) -> dict[str, str]:
    return {"key_id": KEY_ID, "sha256": digest(TOKEN), "expires_at": repr(NOW + 60)} | changes


def test_a_good_token_stands_for_its_key() -> None:
    found = principal_of_token(TOKEN, record(), KEY, now=NOW)
    assert found == Principal(tenant="acme", scopes=frozenset({"submit", "read"}), key_id=KEY_ID)
    assert seconds_left(record(), now=NOW) == 60


@pytest.mark.parametrize(
    ("token", "token_record", "key_record"),
    [
        (TOKEN[:-1] + "u", record(), KEY),  # another secret
        ("cdk_0123456789ab_" + "t" * 43, record(), KEY),  # a key's form, not a token's
        (TOKEN, record(expires_at=repr(NOW)), KEY),  # expired
        (TOKEN, {}, KEY),  # unknown (or dropped by Redis at its expiry)
        (TOKEN, record(), KEY | {"revoked_at": "1.0"}),  # its key revoked
        (TOKEN, record(), {}),  # its key gone
    ],
)
def test_a_token_that_does_not_hold_stands_for_nobody(
    token: str, token_record: dict[str, str], key_record: dict[str, str]
) -> None:
    assert principal_of_token(token, token_record, key_record, now=NOW) is None


def test_minted_tokens_are_kept_hashed_and_expire(fake_conns: Connections) -> None:
    TenantStore(fake_conns.text, load_settings({})).set("acme")
    info, _ = ApiKeyStore(fake_conns.text).create("acme", "read")
    who = Principal(tenant="acme", scopes=frozenset({"read"}), key_id=info.key_id)
    token, expires_at = TokenStore(fake_conns.text).mint(who, 600)
    token_id = token_id_of(token)
    assert token_id is not None
    stored = fake_conns.text.hgetall(f"cd:token:{token_id}")
    assert stored["key_id"] == info.key_id and stored["sha256"] == digest(token) and token not in stored.values()
    assert 590 < fake_conns.text.ttl(f"cd:token:{token_id}") <= 600 and float(stored["expires_at"]) == expires_at
