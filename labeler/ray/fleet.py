"""One rate limit for a fleet of actors: a limiter actor holds the job's buckets.

Each labeling actor keeps its own `Limiter` (in-flight target, retries, its local view
of the limits), and before a request leaves it also takes the request's charge from the
fleet's buckets, held by one `RateKeeper` actor for the whole job:

    actor 1 ─┐                               ┌─ --rpm/--tpm, or learned from headers
    actor 2 ─┼─► RateKeeper.take(requests, tokens) ◄─ 429 from any actor: pause + cut
    actor N ─┘

So `--rpm/--tpm` and the limits a server announces hold for the whole job however many
actors there are and however unevenly the work falls on them (no share sits idle on an
actor with nothing to do), and a 429 seen by one actor pauses and slows every actor. A
charge is one actor call (well under a millisecond on one machine), made only while a
limit is known: without one `take` is never called.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from labeler.limits import (
    BURST_S,
    DECREASE_PACED,
    INCREASE,
    MIN_FACTOR,
    SAFETY,
    Limiter,
    TokenBucket,
)

RECOVER_EVERY_S = 1.0  # the fleet's rate recovers one INCREASE step per second without a 429


class RateKeeper:
    """The fleet's request and token buckets (run as one async Ray actor per job).

    Limits the user gave win; otherwise the first actor to learn a limit from the
    server's headers tells it here. A 429 pauses every grant for the server's retry-after
    and cuts the rate once per burst; the rate recovers additively while none arrive.
    """

    def __init__(self, rpm: float | None = None, tpm: float | None = None) -> None:
        self.user = {"rpm": rpm, "tpm": tpm}
        self.limits: dict[str, float | None] = {"rpm": rpm, "tpm": tpm}
        self.factor = 1.0
        self.paused_until = 0.0
        self.last_cut = 0.0
        self.buckets: dict[str, TokenBucket | None] = {"rpm": None, "tpm": None}
        self.granted = {"requests": 0.0, "tokens": 0.0}
        self.rate_limited = 0
        self._rebuild()

    def _rebuild(self) -> None:
        for name, per_minute in self.limits.items():
            old = self.buckets[name]
            if not per_minute:
                self.buckets[name] = None
                continue
            rate = per_minute / 60.0 * SAFETY * self.factor
            capacity = max(1.0, rate * BURST_S)
            if old is None:
                bucket = TokenBucket(rate, capacity)
                bucket.tokens = min(capacity, 1.0)
                self.buckets[name] = bucket
            else:
                old.rate, old.capacity = rate, capacity
                old.tokens = min(old.tokens, capacity)

    def _recover(self) -> None:
        if self.factor < 1.0:
            steps = int((time.monotonic() - self.last_cut) / RECOVER_EVERY_S)
            if steps > 0:
                self.factor = min(1.0, self.factor + INCREASE * steps)
                self.last_cut = time.monotonic()
                self._rebuild()

    async def take(self, requests: float, tokens: float) -> None:
        """Wait until the fleet may send a call of this many requests and tokens."""
        self._recover()
        await self._wait_pause()
        req, tok = self.buckets["rpm"], self.buckets["tpm"]
        if req is not None and requests:
            await req.take(requests)
        if tok is not None and tokens:
            await tok.take(tokens)
        await self._wait_pause()
        self.granted["requests"] += requests
        self.granted["tokens"] += tokens

    async def _wait_pause(self) -> None:
        while (delay := self.paused_until - time.monotonic()) > 0:
            await asyncio.sleep(delay)

    def learned(self, rpm: float | None, tpm: float | None) -> None:
        """An actor learned limits from the server's headers (ignored where the user set one)."""
        changed = False
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value and self.user[name] is None and value != self.limits[name]:
                self.limits[name], changed = value, True
        if changed:
            self._rebuild()

    def rate_limited_by_server(self, retry_after: float | None) -> None:
        """A 429 reached an actor: pause everyone, cut the rate once per burst."""
        self.rate_limited += 1
        now = time.monotonic()
        new_event = now >= self.paused_until
        self.paused_until = max(self.paused_until, now + (retry_after if retry_after is not None else 1.0))
        if new_event:
            self.factor = max(MIN_FACTOR, self.factor * DECREASE_PACED)
            self.last_cut = now
            self._rebuild()
        for bucket in self.buckets.values():
            if bucket is not None:
                bucket.drain()

    def report(self) -> dict[str, Any]:
        """What the fleet was granted and learned (for tests and the benchmark)."""
        return {
            "limits": dict(self.limits),
            "factor": self.factor,
            "granted": dict(self.granted),
            "rate_limited": self.rate_limited,
        }


class FleetLimiter(Limiter):
    """An actor's `Limiter` that also takes every request's charge from the fleet's
    `RateKeeper` (a Ray actor handle), and tells it what this actor learns."""

    def __init__(
        self, keeper: Any, concurrency: int, *, rpm: float | None = None, tpm: float | None = None
    ) -> None:
        super().__init__(concurrency, rpm=rpm, tpm=tpm)
        self.keeper = keeper
        self._told: tuple[float | None, float | None] = (rpm, tpm)

    @asynccontextmanager
    async def slot(
        self, tokens: float = 0.0, *, requests: float = 1.0, prompt_tokens: float = 0.0
    ) -> AsyncIterator[None]:
        async with super().slot(tokens, requests=requests, prompt_tokens=prompt_tokens):
            if self.rpm or self.tpm:
                charge = self.estimate(prompt_tokens, tokens) if self.tpm else 0.0
                await self.keeper.take.remote(requests, charge)
            yield

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        super().observe_headers(headers)
        learned = (self.rpm, self.tpm)
        if learned != self._told:
            self._told = learned
            self.keeper.learned.remote(*learned)

    def on_rate_limited(self, retry_after: float | None) -> None:
        super().on_rate_limited(retry_after)
        self.keeper.rate_limited_by_server.remote(retry_after)


__all__ = ["FleetLimiter", "RateKeeper"]
