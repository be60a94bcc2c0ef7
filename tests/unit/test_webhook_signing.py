"""Standard Webhooks signatures: the spec's published vector, round trips and every way a check fails."""

from __future__ import annotations

import base64

import pytest

from dispatcher.webhooks.signing import (
    SECRET_PREFIX,
    SignatureError,
    decode_secret,
    generate_secret,
    headers,
    sign,
    verify,
)

# The test vector of the Standard Webhooks reference libraries (libraries/python/tests/test_webhooks.py).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize("secret", [SPEC_SECRET, SPEC_SECRET.removeprefix(SECRET_PREFIX), SPEC_SECRET + "="])
def test_the_spec_vector(secret: str) -> None:
    assert sign(secret, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_headers_verify_and_give_the_id() -> None:
    sent = headers(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    assert sent == {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }
    upper = {k.upper(): v for k, v in sent.items()}  # header names in any case
    assert verify(SPEC_SECRET, upper, SPEC_BODY, now=SPEC_TIMESTAMP + 10) == SPEC_ID


def test_one_matching_signature_among_several_is_enough() -> None:
    sent = headers(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    other = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
    sent["webhook-signature"] = f"{other} v2,xyz {sent['webhook-signature']}"
    assert verify(SPEC_SECRET, sent, SPEC_BODY, now=SPEC_TIMESTAMP) == SPEC_ID


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"webhook-id": ""}, "missing"),
        ({"webhook-timestamp": "soon"}, "not a number"),
        ({"webhook-timestamp": str(SPEC_TIMESTAMP - 301)}, "away from now"),
        ({"webhook-timestamp": str(SPEC_TIMESTAMP + 301)}, "away from now"),
        ({"webhook-id": "msg_other"}, "no matching"),
        ({"webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="}, "no matching"),
    ],
)
def test_a_bad_message_is_refused(change: dict[str, str], message: str) -> None:
    sent = headers(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) | change
    with pytest.raises(SignatureError, match=message):
        verify(SPEC_SECRET, sent, SPEC_BODY, now=SPEC_TIMESTAMP)


def test_a_changed_body_or_secret_is_refused() -> None:
    sent = headers(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    with pytest.raises(SignatureError):
        verify(SPEC_SECRET, sent, SPEC_BODY + b" ", now=SPEC_TIMESTAMP)
    with pytest.raises(SignatureError):
        verify(generate_secret(), sent, SPEC_BODY, now=SPEC_TIMESTAMP)


def test_generated_secrets_have_the_standard_form() -> None:
    secret = generate_secret()
    assert secret.startswith(SECRET_PREFIX)
    assert len(base64.b64decode(secret.removeprefix(SECRET_PREFIX))) == 24
    assert decode_secret(secret) == base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    assert generate_secret() != secret


@pytest.mark.parametrize(
    "secret",
    ["", "whsec_", "whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode(), "whsec_" + "A" * 100],
)
def test_a_malformed_secret_is_refused(secret: str) -> None:
    with pytest.raises(SignatureError):
        decode_secret(secret)
