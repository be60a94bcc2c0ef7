"""When and how long to wait before trying a request again.

What is retried: a connection that failed or broke (:class:`ConnectionFailed`), 429 and 503. Every
request this client sends may be repeated safely: reads, cancels (a second cancel changes nothing),
and submissions, which always carry an ``Idempotency-Key`` (a repeat answers the first run).

The loop is tenacity's (sync and asyncio alike, with its stop conditions); this module gives it the
wait: exponential backoff with full jitter, and never sooner than the server's ``Retry-After``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import tenacity

from comfy_dispatch_client.errors import RETRYABLE_ERRORS, DispatchError


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries; ``RetryPolicy(attempts=1)`` never retries.

    The n-th retry waits a random time in ``[w/2, w]`` with ``w = min(cap, base * 2**(n-1))`` ("equal
    jitter": spread, yet growing, so the retries of a client span an API restart of several seconds),
    or, when the server said ``Retry-After: s``, between ``s`` and ``s + min(w, s)`` (never sooner than
    asked, spread so clients told the same second do not come back together). A ``Retry-After`` beyond
    ``max_retry_after`` is not waited for: the error is raised.
    """

    attempts: int = 8
    base: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base < 0 or self.cap < 0:
            raise ValueError("base and cap must be >= 0")


def backoff(
    policy: RetryPolicy, retry: int, retry_after: float | None = None, *, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retry number ``retry`` (1 for the first)."""
    window = min(policy.cap, policy.base * 2.0 ** max(0, retry - 1))
    if retry_after is None:
        return window / 2 + window / 2 * rand()
    return retry_after + min(window, retry_after) * rand()


def retryable(exc: BaseException) -> bool:
    return isinstance(exc, RETRYABLE_ERRORS)


def retry_after_of(exc: BaseException | None) -> float | None:
    return getattr(exc, "retry_after", None) if isinstance(exc, DispatchError) else None


def _exception(state: tenacity.RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome is not None and state.outcome.failed else None


class _Wait(tenacity.wait.wait_base):
    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        return backoff(self.policy, retry_state.attempt_number, retry_after_of(_exception(retry_state)))


def _stop(policy: RetryPolicy) -> Callable[[tenacity.RetryCallState], bool]:
    def stop(state: tenacity.RetryCallState) -> bool:
        if state.attempt_number >= policy.attempts:
            return True
        after = retry_after_of(_exception(state))
        return after is not None and after > policy.max_retry_after

    return stop


def retrying(policy: RetryPolicy, sleep: Callable[[float], None] = time.sleep) -> tenacity.Retrying:
    """A tenacity loop for blocking calls; raises the last error when it gives up."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(retryable),
        wait=_Wait(policy),
        stop=_stop(policy),
        sleep=sleep,
        reraise=True,
    )


def async_retrying(policy: RetryPolicy, sleep: Callable[[float], Awaitable[None]]) -> tenacity.AsyncRetrying:
    """A tenacity loop for coroutines; raises the last error when it gives up."""
    return tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(retryable),
        wait=_Wait(policy),
        stop=_stop(policy),
        sleep=sleep,
        reraise=True,
    )
