"""Logging set-up shared by every process, and the redaction that keeps secrets out of every log line.

An API key or access token can reach a log line without anyone logging it on purpose: a client that
sends one in a query string (Comflowy's ``/auth/token?ppt=<key>``) has it in uvicorn's access line,
and a callback URL may carry a token of its receiver. A filter on the root handler rewrites every line
before it is written: a key or token of ours keeps its id (which ``comfy-dispatch keys`` lists) and
loses its secret; the value of a query parameter whose name says secret is dropped whole.
"""

from __future__ import annotations

import logging
import re

# Our keys and tokens: ``cdk_`` / ``cdt_``, a 12 hex digit id, a 43 character secret.
_CREDENTIAL = re.compile(r"\b(cd[kt]_[0-9a-f]{12}_)[A-Za-z0-9_-]{43}")
_SECRET_PARAMS = (
    "ppt|token|access_token|refresh_token|api_key|apikey|x-api-key|key|secret|password|passwd|signature|sig|auth"
)
_QUERY_SECRET = re.compile(rf"([?&;](?:{_SECRET_PARAMS})=)[^&;#\s\"']*", re.IGNORECASE)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with every secret it holds replaced (pure)."""
    text = _CREDENTIAL.sub(lambda m: m.group(1) + REDACTED, text)
    return _QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, text)


class RedactSecrets(logging.Filter):
    """Rewrites a record's message when it holds a secret (on a handler: every logger's lines pass it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def setup_logging(level: str, process: str) -> None:
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s %(levelname)s {process}[%(process)d] %(name)s: %(message)s",
        force=True,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets())
