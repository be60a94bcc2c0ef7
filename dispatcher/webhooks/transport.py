"""Sending one webhook request: a narrow interface, the real HTTP one and an in-memory twin.

The real transport goes through :mod:`dispatcher.safehttp`: the URL's host is
resolved and checked against the allow list at every attempt, the connection
goes to the address checked (no DNS rebinding between check and send), and
redirects are not followed (a receiver cannot bounce us into our own network).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import requests

from dispatcher.addresses import AddressNotAllowed, AllowList, Resolver, system_resolver
from dispatcher.errors import DispatchError
from dispatcher.safehttp import request

MAX_ANSWER_BYTES = 1024 * 1024  # the answer body is read and dropped: a receiver cannot make us buffer more


class SendFailed(DispatchError):
    """Raised when a webhook request got no HTTP answer: refused address, connection error, timeout."""


class Transport(Protocol):
    def post(self, url: str, headers: Mapping[str, str], body: bytes, *, timeout: float) -> int:
        """POST ``body`` to ``url``; the answer's status code. Raises SendFailed without an answer."""
        ...


class HttpTransport:
    """The real transport: safehttp to the checked address, no redirects."""

    def __init__(self, allow: AllowList, *, resolve: Resolver = system_resolver) -> None:
        self.allow = allow
        self.resolve = resolve

    def post(self, url: str, headers: Mapping[str, str], body: bytes, *, timeout: float) -> int:
        try:
            answer = request(
                "POST",
                url,
                allow=self.allow,
                timeout=timeout,
                max_bytes=MAX_ANSWER_BYTES,
                headers=headers,
                data=body,
                max_redirects=0,
                resolve=self.resolve,
            )
        except (AddressNotAllowed, requests.RequestException) as exc:
            raise SendFailed(f"{type(exc).__name__}: {exc}") from exc
        return answer.status


@dataclass
class Sent:
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass
class MemoryTransport:
    """The in-memory twin: records every request and answers from a script (default 200).

    ``answers`` is consumed front first; an entry that is an exception instance is raised.
    """

    answers: list[int | SendFailed] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)

    def post(self, url: str, headers: Mapping[str, str], body: bytes, *, timeout: float) -> int:
        self.sent.append(Sent(url, dict(headers), body))
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, SendFailed):
            raise answer
        return answer
