"""A run body's own options, checked before anything is stored: ``priority``, ``timeout_seconds`` and Comflowy's
``callback_urls``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from dispatcher.addresses import AddressNotAllowed, AllowList, Resolver, check_url, system_resolver
from dispatcher.errors import ParameterError
from dispatcher.runs import Priority

log = logging.getLogger(__name__)

MAX_RUN_TIMEOUT = 7 * 86400.0


def parse_priority(value: Any) -> Priority:
    if value is None:
        return Priority.NORMAL
    try:
        return Priority(value)
    except ValueError:
        raise ParameterError("priority", "must be one of: high, normal, low") from None


def parse_timeout(value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_RUN_TIMEOUT:
        raise ParameterError("timeout_seconds", f"must be a number of seconds in (0, {MAX_RUN_TIMEOUT:g}]")
    return float(value)


CALLBACK_KEYS = ("on_result_url", "on_progress_event_url")


def parse_callbacks(
    value: Any, allow: AllowList | None = None, *, resolve: Resolver = system_resolver
) -> dict[str, str] | None:
    """Comflowy's ``callback_urls``: an object with ``on_result_url`` and/or ``on_progress_event_url``.

    With ``allow``, each URL's host is resolved now and a URL reaching a refused address (loopback,
    private... unless allowed) is a ParameterError before anything is queued. A host that does not
    resolve now is let through: the webhook sender checks every address again at each attempt, and
    a passing DNS failure should not turn a run away.
    """
    if value is None:
        return None
    if not isinstance(value, dict) or not value or set(value) - set(CALLBACK_KEYS):
        raise ParameterError("callback_urls", f"must be an object with {' and/or '.join(CALLBACK_KEYS)}")
    for name, url in value.items():
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ParameterError(f"callback_urls.{name}", "must be an http:// or https:// URL")
        if allow is not None:
            try:
                check_url(url, allow, resolve=_lenient(resolve))
            except _Unresolved:
                log.info("callback_urls.%s: %s does not resolve now; checked again when sending", name, url)
            except AddressNotAllowed as exc:
                raise ParameterError(f"callback_urls.{name}", str(exc)) from None
    return dict(value)


class _Unresolved(Exception):
    """A callback host that does not resolve at submit time (not an OSError: check_url lets it propagate)."""


def _lenient(resolve: Resolver) -> Resolver:
    def resolving(host: str, port: int) -> Sequence[str]:
        try:
            return resolve(host, port)
        except OSError as exc:
            raise _Unresolved(host) from exc

    return resolving
