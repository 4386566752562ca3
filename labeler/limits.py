"""Scheduling: a concurrency cap plus RPM and TPM token buckets that adapt.

Limits come from flags, or are learned from the provider's headers as they arrive
(``x-ratelimit-*`` from OpenAI-style servers, ``anthropic-ratelimit-*`` from Anthropic).
A 429 slows the whole scheduler, not just the request that got it: everyone pauses for
the server's retry-after and the request rate drops multiplicatively, then recovers
additively as answers succeed (AIMD), so a run settles just under the server's limit
instead of oscillating through bursts of 429s.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime

SAFETY = 0.98  # aim just under a known limit: the server's window edges are not ours
MIN_FACTOR = 0.25


class TokenBucket:
    """`rate` units per second, up to `capacity` banked; waiters are served in order."""

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self._last = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
        self._last = now

    def drain(self) -> None:
        self._refill()
        self.tokens = min(self.tokens, 0.0)

    async def take(self, amount: float) -> None:
        amount = min(amount, self.capacity)
        async with self._lock:
            while True:
                self._refill()
                if self.tokens >= amount:
                    self.tokens -= amount
                    return
                await asyncio.sleep((amount - self.tokens) / self.rate)


class Limiter:
    """Everything that decides when the next request may go."""

    def __init__(
        self,
        concurrency: int = 16,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        learn_from_headers: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self.learn = learn_from_headers
        self._user_rpm = rpm
        self._user_tpm = tpm
        self._rpm = rpm
        self._tpm = tpm
        self._factor = 1.0
        self._in_flight = 0
        self._cond: asyncio.Condition | None = None
        self._paused_until = 0.0
        self._req_bucket: TokenBucket | None = None
        self._tok_bucket: TokenBucket | None = None
        self.rate_limited = 0
        self._rebuild()

    # -- configuration -------------------------------------------------------------------

    @property
    def rpm(self) -> float | None:
        return self._rpm

    @property
    def tpm(self) -> float | None:
        return self._tpm

    def _rebuild(self) -> None:
        self._req_bucket = self._bucket(self._rpm, self._req_bucket)
        self._tok_bucket = self._bucket(self._tpm, self._tok_bucket)

    def _bucket(self, per_minute: float | None, old: TokenBucket | None) -> TokenBucket | None:
        if not per_minute:
            return None
        rate = per_minute / 60.0 * SAFETY * self._factor
        # A one-second burst: enough to keep the pipe full, small enough that a server
        # counting per window never sees more than its limit.
        capacity = max(1.0, rate)
        if old is None:
            bucket = TokenBucket(rate, capacity)
            bucket.tokens = min(capacity, 1.0)
            return bucket
        old._refill()
        old.rate = rate
        old.capacity = capacity
        old.tokens = min(old.tokens, capacity)
        return old

    # -- acquiring -----------------------------------------------------------------------

    @asynccontextmanager
    async def slot(self, tokens: float = 0.0) -> AsyncIterator[None]:
        """Hold one in-flight place, paid for in the request and token buckets."""
        cond = self._condition()
        async with cond:
            await cond.wait_for(lambda: self._in_flight < self._allowed())
            self._in_flight += 1
        try:
            await self._wait_pause()
            if self._req_bucket is not None:
                await self._req_bucket.take(1.0)
            if self._tok_bucket is not None and tokens:
                await self._tok_bucket.take(tokens)
            await self._wait_pause()
            yield
        finally:
            async with cond:
                self._in_flight -= 1
                cond.notify(1)

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    def _allowed(self) -> int:
        if self._rpm is None and self._tpm is None:
            # No known rate: back off on concurrency instead.
            return max(1, int(self.concurrency * self._factor))
        return self.concurrency

    async def _wait_pause(self) -> None:
        while True:
            delay = self._paused_until - time.monotonic()
            if delay <= 0:
                return
            await asyncio.sleep(delay)

    # -- feedback ------------------------------------------------------------------------

    def on_success(self) -> None:
        if self._factor < 1.0:
            self._factor = min(1.0, self._factor + 0.02)
            self._rebuild()

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429: pause everyone, drop the rate, drain what was banked."""
        self.rate_limited += 1
        pause = retry_after if retry_after is not None else 1.0
        self._paused_until = max(self._paused_until, time.monotonic() + pause)
        self._factor = max(MIN_FACTOR, self._factor * 0.7)
        self._rebuild()
        for bucket in (self._req_bucket, self._tok_bucket):
            if bucket is not None:
                bucket.drain()

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Learn limits the user did not give, and pause when the server says none remain."""
        if not self.learn:
            return
        changed = False
        for kind, user in (("requests", self._user_rpm), ("tokens", self._user_tpm)):
            limit = _first(headers, f"x-ratelimit-limit-{kind}", f"anthropic-ratelimit-{kind}-limit")
            if limit is not None and user is None:
                value = float(limit)
                if kind == "requests" and value != self._rpm:
                    self._rpm, changed = value, True
                if kind == "tokens" and value != self._tpm:
                    self._tpm, changed = value, True
            remaining = _first(
                headers, f"x-ratelimit-remaining-{kind}", f"anthropic-ratelimit-{kind}-remaining"
            )
            if remaining is not None and float(remaining) <= 0:
                reset = _reset_seconds(
                    headers.get(f"x-ratelimit-reset-{kind}")
                    or headers.get(f"anthropic-ratelimit-{kind}-reset")
                )
                if reset:
                    self._paused_until = max(self._paused_until, time.monotonic() + reset)
        if changed:
            self._rebuild()


def _first(headers: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = headers.get(name)
        if value is not None:
            try:
                float(value)
            except ValueError:
                continue
            return value
    return None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def _reset_seconds(value: str | None) -> float | None:
    """OpenAI's "6m0s"/"20ms"/"1s" durations, or Anthropic's RFC 3339 reset time."""
    if not value:
        return None
    parts = _DURATION.findall(value)
    if parts and "".join(n + u for n, u in parts) == value.replace(" ", ""):
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        return sum(float(n) * scale[u] for n, u in parts)
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
