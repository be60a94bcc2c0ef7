"""HTTP to user-supplied URLs: connect only to the address that was checked, bound every read.

``check_url`` resolves and checks the host; the request then goes to that IP
(with the real host name for ``Host``, TLS SNI and certificate checks), so a
DNS answer that changes between check and connect (rebinding) cannot send
us elsewhere. Redirects are followed by hand, each hop checked the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from dispatcher.addresses import AddressNotAllowed, AllowList, Resolver, Target, check_url, system_resolver


class ResponseTooLarge(AddressNotAllowed):
    """Raised when a response body is larger than the caller's limit."""


class _PinnedAdapter(HTTPAdapter):
    """Verifies TLS against ``hostname`` while the URL names the checked IP."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["server_hostname"] = self.hostname
        kwargs["assert_hostname"] = self.hostname
        super().init_poolmanager(*args, **kwargs)


@dataclass(frozen=True)
class Fetched:
    status: int
    headers: Mapping[str, str]
    content: bytes
    url: str


def _pinned_url(target: Target) -> str:
    parts = urlsplit(target.url)
    host = f"[{target.ip}]" if ":" in target.ip else target.ip
    return urlunsplit((parts.scheme, f"{host}:{target.port}", parts.path or "/", parts.query, ""))


def request(
    method: str,
    url: str,
    *,
    allow: AllowList,
    timeout: float,
    max_bytes: int | None = None,
    headers: Mapping[str, str] | None = None,
    data: bytes | None = None,
    max_redirects: int = 0,
    resolve: Resolver = system_resolver,
) -> Fetched:
    """One request to a checked address. Raises AddressNotAllowed (incl. ResponseTooLarge) or requests errors."""
    for _ in range(max_redirects + 1):
        target = check_url(url, allow, resolve=resolve)
        with requests.Session() as session:
            session.mount("https://", _PinnedAdapter(target.host))
            sent = {"Host": target.host if target.port in (80, 443) else f"{target.host}:{target.port}"}
            response = session.request(
                method,
                _pinned_url(target),
                headers={**(headers or {}), **sent},
                data=data,
                timeout=timeout,
                stream=True,
                allow_redirects=False,
            )
            with response:
                if response.is_redirect and max_redirects:
                    url = urljoin(url, response.headers["location"])
                    continue
                content = _read(response, max_bytes)
                return Fetched(response.status_code, dict(response.headers), content, url)
    raise AddressNotAllowed(f"too many redirects from {url!r}")


def _read(response: requests.Response, max_bytes: int | None) -> bytes:
    declared = response.headers.get("content-length")
    if max_bytes is not None and declared and declared.isdigit() and int(declared) > max_bytes:
        raise ResponseTooLarge(f"the response is {declared} bytes, more than the limit of {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise ResponseTooLarge(f"the response is larger than the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
