"""Fixtures of the API tests: an app on fakeredis (``fake_conns``) with the bundled workflows and a MemoryStore.

Auth is disabled here (every request is the default tenant with every scope); ``test_api_auth``
builds its own apps with auth enabled and real keys.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from api import submitting
from api.app import create_app
from dispatcher.connections import Connections
from dispatcher.runs import Run
from dispatcher.settings import Settings, load_settings
from dispatcher.storage import MemoryStore
from tests.api.helpers import Backlog, TestClient, finish_run, store_output

AfterSubmit = Callable[[Callable[[Run], None], float], None]
"""``after_submit``'s arm: (what to do with the run, after how many seconds)."""


@pytest.fixture
def settings() -> Settings:
    return load_settings({}, max_body_bytes=4096, auth="disabled")


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def app(settings: Settings, fake_conns: Connections, store: MemoryStore) -> FastAPI:
    return create_app(settings, conns=fake_conns, store=store)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def backlog(fake_conns: Connections) -> Backlog:
    """What the API queued (to check what was, or was not, accepted)."""
    return Backlog(fake_conns)


@pytest.fixture
def after_submit(monkeypatch: pytest.MonkeyPatch) -> Iterator[AfterSubmit]:
    """``arm(action, delay)``: every later submit runs ``action(run)`` in a thread ``delay`` s after it returns.

    What a worker would do meanwhile, while the request under test waits; threads are joined at teardown.
    """
    threads: list[threading.Thread] = []
    original, original_async = submitting.submit, submitting.submit_async

    def arm(action: Callable[[Run], None], delay: float) -> None:
        def then(accepted: submitting.Accepted) -> submitting.Accepted:
            def later() -> None:
                time.sleep(delay)  # let the request start waiting first (either order must work)
                action(accepted.run)

            thread = threading.Thread(target=later, daemon=True)
            threads.append(thread)
            thread.start()
            return accepted

        def submit(*args: Any, **kwargs: Any) -> submitting.Accepted:
            return then(original(*args, **kwargs))

        async def submit_async(*args: Any, **kwargs: Any) -> submitting.Accepted:
            # its own fall-back to submit (a thread) is not wrapped twice: that one calls the original
            monkeypatch.setattr(submitting, "submit", original)
            try:
                return then(await original_async(*args, **kwargs))
            finally:
                monkeypatch.setattr(submitting, "submit", submit)

        monkeypatch.setattr(submitting, "submit", submit)
        monkeypatch.setattr(submitting, "submit_async", submit_async)

    yield arm
    for thread in threads:
        thread.join(5)


@pytest.fixture
def finish_after_submit(after_submit: AfterSubmit, fake_conns: Connections, store: MemoryStore) -> Callable[..., None]:
    """Arm it, and every later submit ends shortly afterwards, as a worker would.

    ``arm(delay=0.2, status="succeeded", error=None, files={"name.png": b"..."})``.
    """

    def arm(
        delay: float = 0.2,
        status: str = "succeeded",
        error: dict[str, Any] | None = None,
        files: dict[str, bytes] | None = None,
    ) -> None:
        def finish(run: Run) -> None:
            outputs = [store_output(store, run.id, name, data) for name, data in (files or {}).items()]
            finish_run(fake_conns, run.id, status=status, outputs=outputs, error=error)

        after_submit(finish, delay)

    return arm
