"""dispatcher.apikeys on fakeredis: keys stored hashed, authenticated, listed and revoked."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from dispatcher import keys
from dispatcher.apikeys import KEY_RE, ApiKeyStore, Principal, key_id_of, parse_scopes
from dispatcher.connections import Connections
from dispatcher.errors import Forbidden, ParameterError
from dispatcher.settings import Settings
from dispatcher.tenants import TenantStore


@pytest.fixture
def store(fake_conns: Connections) -> ApiKeyStore:
    tenants = TenantStore(fake_conns.text, Settings())
    tenants.set("acme")
    tenants.set("globex")
    return ApiKeyStore(fake_conns.text)


def test_create_returns_the_key_once_and_stores_only_its_hash(store: ApiKeyStore, fake_conns: Connections) -> None:
    info, key = store.create("acme", "submit,read")
    match = KEY_RE.match(key)
    assert match is not None and match.group(1) == info.key_id
    assert (info.tenant, info.scopes, info.active) == ("acme", ("submit", "read"), True)
    record = fake_conns.text.hgetall(keys.api_key(info.key_id))
    assert record["sha256"] == hashlib.sha256(key.encode()).hexdigest()
    assert record["tenant"] == "acme" and record["scopes"] == "submit,read"
    assert fake_conns.text.sismember(keys.API_KEYS, info.key_id)
    # The secret is nowhere in Redis.
    secret = key.rsplit("_", 1)[1]
    for name in fake_conns.text.keys("*"):
        if fake_conns.text.type(name) == "hash":
            assert all(secret not in v for v in fake_conns.text.hgetall(name).values())


def test_keys_are_unique(store: ApiKeyStore) -> None:
    created = [store.create("acme") for _ in range(20)]
    assert len({info.key_id for info, _ in created}) == len({key for _, key in created}) == 20


def test_authenticate(store: ApiKeyStore) -> None:
    info, key = store.create("acme", ["read"])
    assert store.authenticate(key) == Principal(tenant="acme", scopes=frozenset({"read"}), key_id=info.key_id)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda key: key[:-1] + ("A" if key[-1] != "A" else "B"),  # wrong secret, right id
        lambda key: key.replace("cdk_", "cdx_"),
        lambda key: key + "x",
        lambda key: "",
        lambda key: "cdk_ffffffffffff_" + key.rsplit("_", 1)[1],  # unknown id
        lambda key: key.upper(),
    ],
)
def test_wrong_keys_authenticate_nobody(store: ApiKeyStore, mangle: Callable[[str], str]) -> None:
    _, key = store.create("acme")
    assert store.authenticate(mangle(key)) is None


def test_revoke(store: ApiKeyStore) -> None:
    info, key = store.create("acme")
    assert store.revoke(info.key_id) is True
    assert store.authenticate(key) is None
    assert store.revoke(info.key_id) is False  # already revoked
    assert store.revoke("0123456789ab") is False  # unknown
    assert store.revoke("not an id") is False
    listed = store.get(info.key_id)
    assert listed is not None and not listed.active and listed.revoked_at is not None


def test_list_never_shows_a_secret(store: ApiKeyStore) -> None:
    a, _ = store.create("acme", "read")
    g, _ = store.create("globex", "admin")
    b, _ = store.create("acme", "submit")
    store.revoke(b.key_id)
    assert [i.key_id for i in store.list()] == [a.key_id, g.key_id, b.key_id]
    assert [i.key_id for i in store.list("acme")] == [a.key_id, b.key_id]
    assert [i.active for i in store.list("acme")] == [True, False]
    assert store.list("nobody") == []


def test_a_key_needs_an_existing_tenant(store: ApiKeyStore) -> None:
    with pytest.raises(ParameterError) as caught:
        store.create("initech")
    assert caught.value.param == "tenant"
    with pytest.raises(ParameterError):
        store.create("bad name!")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("submit,read,admin", ("submit", "read", "admin")),
        ("admin, READ", ("read", "admin")),
        ("read,read", ("read",)),
        (["submit"], ("submit",)),
    ],
)
def test_parse_scopes(given: str | list[str], expected: tuple[str, ...]) -> None:
    assert parse_scopes(given) == expected


@pytest.mark.parametrize("given", ["write", "read,root", "", " , "])
def test_bad_scopes_name_the_scope_parameter(store: ApiKeyStore, given: str) -> None:
    with pytest.raises(ParameterError) as caught:
        store.create("acme", given)
    assert caught.value.param == "scope"
    assert store.list() == []


def test_principal_require() -> None:
    who = Principal(tenant="acme", scopes=frozenset({"read"}), key_id="0123456789ab")
    who.require("read")
    with pytest.raises(Forbidden) as caught:
        who.require("admin")
    assert caught.value.scope == "admin"


def test_key_id_of() -> None:
    assert key_id_of("0123456789ab") == "0123456789ab"
    assert key_id_of("cdk_0123456789ab_" + "a" * 43) == "0123456789ab"
    assert key_id_of("cdk_0123456789ab_short") is None
    assert key_id_of("nope") is None
