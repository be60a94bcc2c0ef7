"""Standard Webhooks signatures (https://www.standardwebhooks.com), pure.

A message is signed with HMAC-SHA256 over ``<webhook-id>.<webhook-timestamp>.<body>``
using the secret's bytes; the ``webhook-signature`` header carries
``v1,<base64 of the MAC>`` (several space-separated signatures may be sent
while a secret is rotated). A secret is written ``whsec_<base64>``: the part
after the prefix is decoded, and those bytes are the HMAC key. The timestamp
is part of what is signed, so a receiver that refuses stale timestamps
(``TOLERANCE_SECONDS``) is safe from replays of old messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping

from dispatcher.errors import DispatchError

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24  # what generate_secret makes; the spec allows 24 to 64
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64
TOLERANCE_SECONDS = 5 * 60
"""How far a receiver lets ``webhook-timestamp`` stray from its clock (the spec's recommendation)."""


class SignatureError(DispatchError):
    """Raised when a secret is malformed, or a message's headers do not verify."""


def generate_secret() -> str:
    """A new secret in the Standard Webhooks form: ``whsec_`` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """The HMAC key of ``secret`` (``whsec_<base64>``; the prefix may be left out); raises SignatureError."""
    text = secret.removeprefix(SECRET_PREFIX).rstrip("=")
    try:
        # Padding is optional in the wild: put back exactly what base64 wants.
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("a webhook secret is whsec_ followed by base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise SignatureError(f"a webhook secret decodes to {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value ``v1,<base64>`` of one message."""
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    mac = hmac.new(decode_secret(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one delivery attempt."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def verify(
    secret: str, sent: Mapping[str, str], body: bytes, *, now: float, tolerance: float = TOLERANCE_SECONDS
) -> str:
    """Check a received message as a receiver would; returns its ``webhook-id``, raises SignatureError.

    ``sent`` is the request's headers (any case). One matching ``v1`` signature among those sent is
    enough; the timestamp must be within ``tolerance`` seconds of ``now``.
    """
    lowered = {k.lower(): v for k, v in sent.items()}
    msg_id, stamp, signatures = (lowered.get(h, "") for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and stamp and signatures):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise SignatureError(f"webhook-timestamp {stamp!r} is not a number of seconds") from None
    if abs(now - timestamp) > tolerance:
        raise SignatureError(f"webhook-timestamp {timestamp} is more than {tolerance:g}s away from now")
    expected = sign(secret, msg_id, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures.split(" ")):
        raise SignatureError("no matching v1 signature")
    return msg_id
