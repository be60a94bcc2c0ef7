"""Where the API is and how this client proves who it is: arguments first, then the environment.

``COMFY_DISPATCH_API_URL`` (default ``http://127.0.0.1:8000``) and ``COMFY_DISPATCH_API_KEY``,
read when a client is made (never at import), from the mapping given or ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from comfy_dispatch_client.errors import ConfigError

ENV_URL = "COMFY_DISPATCH_API_URL"
ENV_KEY = "COMFY_DISPATCH_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class ClientConfig:
    api_url: str
    api_key: str | None

    @classmethod
    def resolve(
        cls, api_url: str | None = None, api_key: str | None = None, env: Mapping[str, str] | None = None
    ) -> ClientConfig:
        """The URL and key from the arguments, else from ``env`` (``os.environ`` by default); ConfigError if bad."""
        env = os.environ if env is None else env
        url = (api_url or env.get(ENV_URL) or DEFAULT_URL).strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            source = "api_url" if api_url else ENV_URL
            raise ConfigError(f"{source} must be an http(s) URL such as {DEFAULT_URL}, not {url!r}")
        key = api_key if api_key is not None else env.get(ENV_KEY)
        return cls(api_url=url, api_key=(key.strip() or None) if key else None)


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


class ApiKeyAuth(httpx.Auth):
    """Sends the API key (``Authorization: Bearer <key>``) to the API's own origin only.

    Output URLs may point elsewhere (a presigned S3 URL, a CDN): the key must never travel there.
    """

    def __init__(self, api_url: str, api_key: str | None) -> None:
        self._origin = origin(httpx.URL(api_url))
        self._key = api_key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._key and origin(request.url) == self._origin:
            request.headers["Authorization"] = f"Bearer {self._key}"
        yield request
