"""Requests-per-window and tokens-per-window limits, as a sliding window log.

A sliding log makes limits exact, which is what tests need: with rpm=5 over a 1 s
window, the sixth request inside any second is refused, and the retry-after it gets is
the moment the oldest admitted request leaves the window. A request is charged its
prompt tokens plus the completion tokens it may use (max_tokens times n), as OpenAI
estimates it before generating. Reset times mean "fully replenished", as both providers
document their reset headers.
"""

from __future__ import annotations

from collections import deque

LimitState = tuple[int, int, float]


class _Window:
    __slots__ = ("_events", "used")

    def __init__(self) -> None:
        self._events: deque[tuple[float, int]] = deque()
        self.used = 0

    def expire(self, now: float, window: float) -> None:
        events = self._events
        horizon = now - window
        while events and events[0][0] <= horizon:
            self.used -= events.popleft()[1]

    def wait_for(self, amount: int, limit: int, now: float, window: float) -> float:
        """Seconds until `amount` more fits under `limit` (0 when it fits now)."""
        if self.used + amount <= limit:
            return 0.0
        if amount > limit:
            return window
        need = self.used + amount - limit
        freed = 0
        for at, size in self._events:
            freed += size
            if freed >= need:
                return max(at + window - now, 1e-3)
        return window

    def take(self, amount: int, now: float) -> None:
        self._events.append((now, amount))
        self.used += amount

    def state(self, limit: int, now: float, window: float) -> LimitState:
        reset = self._events[-1][0] + window - now if self._events else 0.0
        return limit, max(limit - self.used, 0), max(reset, 0.0)


class RateLimiter:
    """Both windows; a refused request consumes nothing."""

    def __init__(self) -> None:
        self._requests = _Window()
        self._tokens = _Window()

    def admit(
        self, now: float, rpm: int | None, tpm: int | None, window: float, tokens: int
    ) -> tuple[str, float] | None:
        """Charge one request, or say which limit ("requests"/"tokens") refuses it and for how long."""
        self._requests.expire(now, window)
        self._tokens.expire(now, window)
        wait_r = self._requests.wait_for(1, rpm, now, window) if rpm else 0.0
        wait_t = self._tokens.wait_for(tokens, tpm, now, window) if tpm else 0.0
        if wait_r > 0 or wait_t > 0:
            return ("requests", wait_r) if wait_r >= wait_t else ("tokens", wait_t)
        if rpm:
            self._requests.take(1, now)
        if tpm:
            self._tokens.take(tokens, now)
        return None

    def states(
        self, now: float, rpm: int | None, tpm: int | None, window: float
    ) -> tuple[LimitState | None, LimitState | None]:
        """(limit, remaining, reset seconds) per configured limit, for response headers."""
        requests = tokens = None
        if rpm:
            self._requests.expire(now, window)
            requests = self._requests.state(rpm, now, window)
        if tpm:
            self._tokens.expire(now, window)
            tokens = self._tokens.state(tpm, now, window)
        return requests, tokens

    def used(self) -> tuple[int, int]:
        return self._requests.used, self._tokens.used
