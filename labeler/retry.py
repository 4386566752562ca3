"""The one retry policy: tenacity, classified errors, waits that honour retry-after.

Only `RetryableError` is retried; a `FinalError` ends the item at once. The SDKs' own
retries are off (teachers set max_retries=0), so nothing retries twice.
"""

from __future__ import annotations

import random
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
        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(self.max_attempts)
        if self.max_elapsed is not None:
            stop = stop | tenacity.stop_after_delay(self.max_elapsed)
        return tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(RetryableError),
            stop=stop,
            wait=WaitRetryAfter(self),
            reraise=True,
        )


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
