"""What both clients do around httpx: the settings of its client, which failures are worth a retry,
and error answers turned into :mod:`comfy_dispatch_client.errors`."""

from __future__ import annotations

from typing import Any

import httpx

from comfy_dispatch_client.config import ApiKeyAuth, ClientConfig
from comfy_dispatch_client.errors import ConnectionFailed, DispatchError, ProtocolError, error_of_answer

VERSION = "0.1.0"
USER_AGENT = f"comfy-dispatch-client/{VERSION}"
DEFAULT_TIMEOUT = 30.0

TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
"""httpx's failures of the connection itself (refused, reset, cut mid-answer, timed out): worth a retry."""


def client_options(config: ClientConfig, timeout: float) -> dict[str, Any]:
    """Keyword arguments of the httpx client (sync or async) of one of our clients."""
    return {
        "base_url": config.api_url,
        "auth": ApiKeyAuth(config.api_url, config.api_key),
        "timeout": httpx.Timeout(timeout),
        "headers": {"User-Agent": USER_AGENT},
        # An output URL may redirect to another host; a redirect must not carry our headers there.
        "follow_redirects": False,
    }


def request_timeout(default: float, read: float | None) -> httpx.Timeout | None:
    """A request's own timeout when its read must last longer than the client's (None: the client's)."""
    return None if read is None else httpx.Timeout(default, read=read)


def failure(what: str, exc: httpx.HTTPError) -> DispatchError:
    """Our error for an httpx failure: ConnectionFailed (retried) for the connection's, ProtocolError else."""
    if isinstance(exc, TRANSIENT):
        return ConnectionFailed(f"{what}: {type(exc).__name__}: {exc}".rstrip(": "))
    return ProtocolError(f"{what}: {type(exc).__name__}: {exc}".rstrip(": "))


def raise_for_answer(response: httpx.Response) -> None:
    """Raise the ApiError of an error answer (its body must have been read)."""
    if response.status_code >= 400:
        raise error_of_answer(response.status_code, response.content, response.headers)
