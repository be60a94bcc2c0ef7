"""Every error this client raises: one hierarchy under :class:`DispatchError`.

An error answer of the API (RFC 9457 ``application/problem+json``) becomes an :class:`ApiError`
subclass chosen by its status, carrying the problem's members. A run that ended badly is a
:class:`RunFailed`, not an API error: the API answered fine, the run did not succeed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from comfy_dispatch_client.models import Run

STANDARD_MEMBERS = ("type", "title", "status", "detail", "instance")


class DispatchError(Exception):
    """Base of every error this client raises."""


class ConfigError(DispatchError):
    """Raised when the API URL or key given (or found in the environment) cannot be used."""


class ConnectionFailed(DispatchError):
    """Raised when the API could not be reached, or the connection broke, and retries did not help."""

    retry_after: float | None = None


class ProtocolError(DispatchError):
    """Raised when the API answered something this client does not understand (not JSON, a missing field)."""


class ApiError(DispatchError):
    """Raised when the API answers with an error: the problem's members are attributes.

    ``extensions`` holds the members beyond the standard ones and ``errors`` (``run_id``,
    ``retry_after``, ``max_queued``...).
    """

    def __init__(
        self,
        status: int,
        *,
        type: str = "about:blank",
        title: str = "",
        detail: str = "",
        instance: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        extensions: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.instance = instance
        self.errors = errors or []
        self.extensions = dict(extensions or {})
        self.retry_after = retry_after
        super().__init__(f"{status} {title or 'error'}: {detail}" if detail else f"{status} {title or 'error'}")

    @property
    def problem(self) -> dict[str, Any]:
        """The problem as the API sent it (standard members, errors and extensions)."""
        body: dict[str, Any] = dict(self.extensions)
        if self.errors:
            body["errors"] = self.errors
        body.update(type=self.type, title=self.title, status=self.status, detail=self.detail)
        if self.instance is not None:
            body["instance"] = self.instance
        return body


class BadRequest(ApiError):
    """Raised on 400 (malformed request) and 413 (body too large)."""


class Unauthorized(ApiError):
    """Raised on 401: no API key, or one the API does not know (revoked, mistyped)."""


class Forbidden(ApiError):
    """Raised on 403: the key lacks the scope (``required_scope`` in ``extensions``)."""


class NotFound(ApiError):
    """Raised on 404: no such workflow, run, batch or output (or another tenant's); and on 410: a retired
    workflow."""


class Conflict(ApiError):
    """Raised on 409: an Idempotency-Key reused with another body, a cancel of a run that already ended."""


class InvalidRequest(ApiError):
    """Raised on 422: a bad parameter or option, named in ``errors``."""


class RateLimited(ApiError):
    """Raised on 429 once retries are used up: over the key's rate, the tenant's queue or waiting requests.

    ``retry_after`` is how long the API asked to wait, in seconds.
    """


class ServiceUnavailable(ApiError):
    """Raised on 503 once retries are used up: Redis, storage or the workers cannot serve it now."""


class ServerError(ApiError):
    """Raised on any other 5xx."""


class RunFailed(DispatchError):
    """Raised when a run the caller needed to succeed ended ``failed`` or ``canceled``; ``run`` is that run."""

    def __init__(self, run: Run) -> None:
        self.run = run
        message = (run.error or {}).get("message") if isinstance(run.error, dict) else None
        super().__init__(f"run {run.id} {run.status.value}" + (f": {message}" if message else ""))


class WaitTimeout(DispatchError):
    """Raised when a run had not ended within the time given to ``wait``; ``run`` is the run as last seen."""

    def __init__(self, run: Run, timeout: float) -> None:
        self.run = run
        self.timeout = timeout
        super().__init__(f"run {run.id} still {run.status.value} after {timeout:g} s")


class DownloadFailed(DispatchError):
    """Raised when an output's bytes could not be stored (a short download, an unusable file name)."""


RETRYABLE_ERRORS = (ConnectionFailed, RateLimited, ServiceUnavailable)
"""Errors worth trying the same request again for: the connection's, 429 and 503."""

_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    413: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    410: NotFound,
    409: Conflict,
    422: InvalidRequest,
    429: RateLimited,
    503: ServiceUnavailable,
}


def error_class(status: int) -> type[ApiError]:
    """The ApiError subclass of an HTTP status."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else ApiError


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or an HTTP date); None if absent or unusable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def problem_error(status: int, body: Mapping[str, Any] | None, headers: Mapping[str, str] | None = None) -> ApiError:
    """The ApiError of a problem (``body``, a JSON object or None when the answer was not one) and its headers."""
    body = body or {}
    retry_after = parse_retry_after((headers or {}).get("retry-after"))
    member = body.get("retry_after")
    if retry_after is None and isinstance(member, int | float) and not isinstance(member, bool):
        retry_after = float(member)
    errors = body.get("errors")
    extensions = {k: v for k, v in body.items() if k not in STANDARD_MEMBERS and k != "errors"}
    return error_class(status)(
        int(body["status"]) if isinstance(body.get("status"), int) else status,
        type=str(body.get("type") or "about:blank"),
        title=str(body.get("title") or ""),
        detail=str(body.get("detail") or ""),
        instance=str(body["instance"]) if body.get("instance") is not None else None,
        errors=[e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else None,
        extensions=extensions,
        retry_after=retry_after,
    )


def error_of_answer(status: int, content: bytes, headers: Mapping[str, str]) -> ApiError:
    """The ApiError of an error answer: its problem if it is JSON, else its text as the detail (a proxy's page)."""
    try:
        body = json.loads(content) if content else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = content.decode("utf-8", "replace").strip()
        body = {"detail": text[:200]} if text else None
    return problem_error(status, body, headers)
