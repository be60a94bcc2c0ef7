"""No secret in a log line: keys and tokens lose their secret, secret query parameters their value (pure)."""

from __future__ import annotations

import logging

import pytest

from dispatcher.logs import RedactSecrets, redact

KEY = "cdk_0123456789ab_" + "s" * 43
TOKEN = "cdt_0123456789ab_" + "t" * 43


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            f'127.0.0.1:5 - "GET /api/open/v0/auth/token?ppt={KEY} HTTP/1.1" 200',
            '127.0.0.1:5 - "GET /api/open/v0/auth/token?ppt=[redacted] HTTP/1.1" 200',
        ),
        (f"Bearer {TOKEN} refused", "Bearer cdt_0123456789ab_[redacted] refused"),
        (f"key {KEY}.", "key cdk_0123456789ab_[redacted]."),
        (
            "POST https://hooks.example/x?id=3&token=abc123&b=2",
            "POST https://hooks.example/x?id=3&token=[redacted]&b=2",
        ),
        ("GET /cb?API_KEY=zzz", "GET /cb?API_KEY=[redacted]"),
        ("GET /v1/runs/abc?wait=30", "GET /v1/runs/abc?wait=30"),  # nothing secret: unchanged
        ("the monkey=3 and keyboard=2", "the monkey=3 and keyboard=2"),  # not query parameters
    ],
)
def test_redact(line: str, expected: str) -> None:
    assert redact(line) == expected


def test_the_filter_rewrites_a_records_message_with_its_arguments() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s"', ("1.2.3.4", "GET", f"/t?ppt={KEY}"), None
    )
    assert RedactSecrets().filter(record)
    assert record.getMessage() == '1.2.3.4 - "GET /t?ppt=[redacted]"'
