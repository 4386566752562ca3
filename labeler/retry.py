"""The one retry policy: tenacity, classified errors, waits that honour retry-after.

Only `RetryableError` is retried; a `FinalError` ends the item at once. The SDKs' own
retries are off (teachers set max_retries=0), so nothing retries twice.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import tenacity

from labeler.errors import RetryableError


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped per wait, per attempt count and per item."""

    max_attempts: int = 8
    initial_wait: float = 0.5
    max_wait: float = 60.0
    max_retry_after: float = 300.0
    max_elapsed: float | None = None

    def retrying(self) -> tenacity.AsyncRetrying:
        """One request's retry loop, sleeping with `asyncio.sleep`."""
        return RetryLoops(self).new()


class RetryLoops:
    """Hands out one tenacity loop per request, built from parts made once.

    A loop keeps the state of its own attempts, so requests in flight together cannot
    share one; its stop, wait and retry tests hold none, so a run builds them once and
    each request pays only for the loop itself.
    """

    def __init__(self, policy: RetryPolicy, sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(policy.max_attempts)
        if policy.max_elapsed is not None:
            stop = stop | tenacity.stop_after_delay(policy.max_elapsed)
        self._stop = stop
        self._wait = WaitRetryAfter(policy)
        self._retry = tenacity.retry_if_exception_type(RetryableError)
        self._sleep = sleep

    def new(self) -> tenacity.AsyncRetrying:
        """A fresh loop for one request, with no hook before each attempt: tenacity's
        default hook does nothing, yet costs every request an action wrapped to be
        awaited (about 2 µs of the loop's 15). tenacity skips a hook that is None, though
        its annotation does not say so."""
        if self._sleep is None:
            return tenacity.AsyncRetrying(
                before=None,  # type: ignore[arg-type]
                retry=self._retry,
                stop=self._stop,
                wait=self._wait,
                reraise=True,
            )
        return tenacity.AsyncRetrying(
            before=None,  # type: ignore[arg-type]
            sleep=self._sleep,
            retry=self._retry,
            stop=self._stop,
            wait=self._wait,
            reraise=True,
        )

    @staticmethod
    def done(loop: tenacity.AsyncRetrying) -> None:
        """Break the reference cycle a finished loop keeps (the loop holds its attempt
        state, which holds the loop back), so that it is freed at once. Left alone, the
        two dozen objects of every request wait for the garbage collector, whose young
        collections then run over hundreds of thousands of them in a long run. Harmless
        where a tenacity release names the attribute otherwise: the loop is then freed
        by the collector, as before."""
        vars(loop).pop("_retry_state", None)


class WaitRetryAfter(tenacity.wait.wait_base):
    """Wait what the server asked for (plus a little jitter), else back off exponentially."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after: float | None = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(retry_after, self.policy.max_retry_after) + random.uniform(0, 0.05)
        return backoff(retry_state.attempt_number, self.policy)


def backoff(attempt: int, policy: RetryPolicy) -> float:
    """initial * 2^(attempt-1), capped, plus up to `initial` of jitter so retries spread."""
    base: float = policy.initial_wait * (2 ** min(attempt - 1, 30))
    return min(policy.max_wait, base) + random.uniform(0, policy.initial_wait)
