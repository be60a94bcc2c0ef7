"""What the commands that talk to the API (``run``, ``batch``) share: the SDK's client from the flags and the
environment, and its errors as one-line messages with their exit codes.

Only those commands import this module (inside their functions): the rest of the server package never
needs the client package.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from comfy_dispatch_client import Client
from comfy_dispatch_client.errors import (
    ApiError,
    BadRequest,
    ConfigError,
    DispatchError,
    Forbidden,
    InvalidRequest,
    NotFound,
    Unauthorized,
)
from dispatcher.cli.common import die

USAGE_ERRORS = (ConfigError, Unauthorized, Forbidden, NotFound, InvalidRequest, BadRequest)
"""Errors of what the user typed (a URL, a key, a workflow, a parameter): exit 2, as any usage error."""
FAILED = 1
"""Exit code of a run (or a line of a batch) that did not succeed, or of an API that could not be reached."""


def connect(api_url: str | None, api_key: str | None) -> Client:
    """The client of the API at ``api_url`` (else ``COMFY_DISPATCH_API_URL``) with ``api_key`` (else
    ``COMFY_DISPATCH_API_KEY``); exit 2 with a one-line message for a URL that is none."""
    try:
        return Client(api_url, api_key)
    except ConfigError as exc:
        raise die(str(exc)) from None


def message_of(exc: DispatchError) -> str:
    """One line for an SDK error: a problem's status, title and detail (which names the parameter), else its text."""
    if isinstance(exc, ApiError):
        text = f"{exc.status} {exc.title}".strip() + (f": {exc.detail}" if exc.detail else "")
    else:
        text = str(exc)
    return " ".join(text.split())


@contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Turn an SDK error into ``comfy-dispatch: <what>: <message>`` on stderr and its exit code (2 for usage)."""
    try:
        yield
    except USAGE_ERRORS as exc:
        raise die(f"{what}: {message_of(exc)}") from None
    except DispatchError as exc:
        typer.echo(f"comfy-dispatch: {what}: {message_of(exc)}", err=True)
        raise typer.Exit(FAILED) from None
