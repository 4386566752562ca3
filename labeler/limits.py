"""Scheduling: an adaptive in-flight target plus RPM and TPM token buckets that adapt.

How many requests may be in flight is decided by `labeler.concurrency` (Little's law
from the known rate and the observed latency, or growth while latency holds); the
`concurrency` given here is only its ceiling.

Limits come from flags, or are learned from the provider's headers as they arrive
(``x-ratelimit-*`` from OpenAI-style servers, ``anthropic-ratelimit-*`` from Anthropic).
A 429 slows the whole scheduler, not just the request that got it: everyone pauses for
the server's retry-after and the request rate drops multiplicatively, then recovers
additively as answers succeed (AIMD), so a run settles just under the server's limit
instead of oscillating through bursts of 429s.

Three details decide whether a run actually reaches its limit without 429s:

- Small bursts. Providers count per minute but may enforce over much shorter spans
  (OpenAI documents per-second enforcement), and a server's window may be anything.
  A bucket that banks a whole second of requests while idle can send them at once and
  overrun a short window, so the bucket banks almost nothing (`BURST_S`); under load
  no throughput is lost, because time spent waiting for a token is credited exactly,
  a stalled event loop's delay included, within the rate of any one second.
- Honest token charges. A request bigger than the bucket is not clamped to it (that
  would let a TPM limit be overrun many times over): it waits until the bucket is full
  and leaves it in debt, which later requests pay off.
- Calibrated token estimates. Prompt tokens are estimated before sending (~4
  characters a token); the usage each answer reports corrects that estimate from then
  on, so a tokenizer that counts differently neither overruns a TPM limit nor wastes
  it.

One 429 burst is one congestion event: the rate is cut once per event (requests that
were already on the wire when the first 429 arrived do not cut it again), as TCP cuts
its window once per round trip.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from labeler.concurrency import DEFAULT_CEILING, InFlightTarget, fd_ceiling
from labeler.errors import RetryableError

SAFETY = 0.98  # aim just under a known limit: the server's window edges are not ours
MIN_FACTOR = 0.25
DECREASE = 0.7  # no known rate: the 429 is the only sign of the limit, back off hard
DECREASE_PACED = 0.9  # pacing to a known limit already: a 429 means edge effects or a
# neighbour on the same quota; a small cut clears it, repeated 429s keep cutting
INCREASE = 0.02
BURST_S = 0.02  # seconds of rate a bucket may bank while idle
LAG_CREDIT_S = 0.25  # seconds of rate kept for requests a stalled process sent late…
WINDOW_S = 1.0  # …within the shortest span providers enforce over (rate + burst per span)
SCALE_BOUNDS = (0.25, 4.0)
SCALE_WEIGHT = 0.2  # how fast the token-estimate correction follows reported usage
SHAPE_WEIGHT = 0.1  # how fast the mean charge per in-flight place follows the requests
# Failures that say the server is struggling (besides 429s): fewer in flight helps it.
CONGESTION = frozenset({"timeout", "disconnected", "overloaded"})


class TokenBucket:
    """`rate` units per second, at most `capacity` banked while idle; waiters go in order.

    A request larger than `capacity` waits for a full bucket and leaves it in debt, so
    the long-run rate never exceeds `rate` whatever the request sizes.

    Waiters queue in order and one pacer serves them: each time it wakes it lets go as
    many as the tokens cover, so the rate does not depend on how often the event loop
    turns (a lock handed from waiter to waiter lets one go per turn, and a loop busy
    with hundreds of answers a second turns too seldom for a high limit).

    A busy or starved process wakes late: what accrued while requests were waiting is
    kept, up to `LAG_CREDIT_S` of rate, so a stall delays requests instead of losing
    their share of the limit. What catches up is bounded by the second the limit is
    enforced over: at most `rate` plus `capacity` go in any `WINDOW_S`, as a bucket that
    never stalled would send, so no server window sees more than that.
    """

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self._last = time.monotonic()
        # [future, amount or its pricing callable], in arrival order
        self._queue: deque[list[Any]] = deque()
        self._pacer: asyncio.Task[None] | None = None
        self._sent: deque[tuple[float, float]] = deque()  # (when, amount) in the last WINDOW_S
        self._sent_sum = 0.0

    def _refill(self, ceiling: float | None = None) -> None:
        now = time.monotonic()
        self.tokens = min(
            self.capacity if ceiling is None else ceiling, self.tokens + (now - self._last) * self.rate
        )
        self._last = now

    def drain(self) -> None:
        self._refill()
        self.tokens = min(self.tokens, 0.0)

    async def take(self, amount: float | Callable[[], float]) -> None:
        """Wait for `amount` units; a callable is priced when this waiter's turn comes.

        At most `capacity` is ever left over after a request goes while the bucket was
        idle: that is the largest burst a server's window can see after a pause. Within
        the one-second bound, what accrues while a request waits is kept, so neither a
        sleep's overshoot nor a stalled event loop lowers the rate.
        """
        if not self._queue:  # nobody ahead: it is this waiter's turn now
            self._refill()
            if callable(amount):
                amount = amount()
            if self.tokens >= min(amount, self.capacity) and self._window_wait(amount) == 0.0:
                self._grant(amount)
                return
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._queue.append([fut, amount])
        if self._pacer is None or self._pacer.done():
            self._pacer = asyncio.create_task(self._pace())
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # let go as it was cancelled: sent nothing
                self.tokens += fut.result()
            raise

    async def _pace(self) -> None:
        """Let waiters go in order as tokens accrue, as many per wake-up as they cover."""
        queue = self._queue
        self._refill()
        try:
            while queue:
                entry = queue[0]
                fut, amount = entry
                if fut.done():  # cancelled while waiting
                    queue.popleft()
                    continue
                if callable(amount):
                    amount = entry[1] = amount()
                need = min(amount, self.capacity)
                delay = max((need - self.tokens) / self.rate, self._window_wait(amount))
                if delay > 0:
                    await asyncio.sleep(delay)
                    # Requests were waiting all along: what accrued is theirs, late or not.
                    self._refill(ceiling=need + max(self.capacity, self.rate * LAG_CREDIT_S))
                    continue
                queue.popleft()
                self._grant(amount)
                fut.set_result(amount)
        finally:
            for fut, _ in queue:  # cancelled with waiters left (the loop is ending): end them
                fut.cancel()
            queue.clear()

    def _grant(self, amount: float) -> None:
        self.tokens -= amount
        self._sent.append((self._last, amount))
        self._sent_sum += amount

    def _window_wait(self, amount: float) -> float:
        """Seconds until `amount` fits in the last WINDOW_S's allowance (0: it fits now)."""
        sent, now = self._sent, self._last
        while sent and sent[0][0] <= now - WINDOW_S:
            self._sent_sum -= sent.popleft()[1]
        if not sent:
            self._sent_sum = 0.0  # no rounding drift over a long run
            return 0.0
        allowance = self.rate * WINDOW_S + self.capacity
        if self._sent_sum + amount <= allowance:
            return 0.0
        # The oldest grants whose leaving makes room (a request bigger than the whole
        # allowance waits for an empty window).
        excess = self._sent_sum + amount - allowance
        for when, size in sent:
            excess -= size
            if excess <= 0:
                return max(when + WINDOW_S - now, 1e-4)
        return max(sent[-1][0] + WINDOW_S - now, 1e-4)


class Limiter:
    """Everything that decides when the next request may go."""

    def __init__(
        self,
        concurrency: int = DEFAULT_CEILING,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        learn_from_headers: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = fd_ceiling(concurrency)  # the ceiling, never passed
        self.inflight = InFlightTarget(self.concurrency)
        self.learn = learn_from_headers
        self._user_rpm = rpm
        self._user_tpm = tpm
        self._rpm = rpm
        self._tpm = tpm
        self._factor = 1.0
        self._in_flight = 0
        # Coroutines waiting for an in-flight place, first come first served; whoever
        # frees a place hands it to the first of them (see `_admit`).
        self._queue: deque[asyncio.Future[None]] = deque()
        self._paused_until = 0.0
        self._req_bucket: TokenBucket | None = None
        self._tok_bucket: TokenBucket | None = None
        self._scale = 1.0
        self._observed = 0
        self._slot_requests = 1.0  # mean HTTP requests per in-flight place
        self._slot_tokens = 0.0  # mean token charge per in-flight place
        self._failure_until = 0.0  # a 5xx or timeout before this is the same event
        self.rate_limited = 0
        self._rebuild()

    # -- configuration -------------------------------------------------------------------

    @property
    def rpm(self) -> float | None:
        return self._rpm

    @property
    def tpm(self) -> float | None:
        return self._tpm

    @property
    def factor(self) -> float:
        """Share of the known limits currently allowed (429s lower it, answers restore it)."""
        return self._factor

    @property
    def token_scale(self) -> float:
        """Reported prompt tokens per estimated one, as learned so far."""
        return self._scale

    def pace(self) -> float | None:
        """In-flight places per second the known limits allow now (None: no known limit)."""
        rates = []
        if self._req_bucket is not None:
            rates.append(self._req_bucket.rate / max(self._slot_requests, 1e-9))
        if self._tok_bucket is not None and self._slot_tokens > 0:
            rates.append(self._tok_bucket.rate / self._slot_tokens)
        return min(rates) if rates else None

    def _rebuild(self) -> None:
        self._req_bucket = self._bucket(self._rpm, self._req_bucket)
        self._tok_bucket = self._bucket(self._tpm, self._tok_bucket)
        pace = self.pace()
        if pace:
            self.inflight.on_rate(pace)

    def _bucket(self, per_minute: float | None, old: TokenBucket | None) -> TokenBucket | None:
        if not per_minute:
            return None
        rate = per_minute / 60.0 * SAFETY * self._factor
        capacity = max(1.0, rate * BURST_S)
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

    def estimate(self, prompt_tokens: float, output_tokens: float = 0.0) -> float:
        """Tokens a request will be charged: the prompt estimate as corrected by reported
        usage so far, plus the output it may generate (servers charge max_tokens up front)."""
        return prompt_tokens * self._scale + output_tokens

    @asynccontextmanager
    async def slot(
        self, tokens: float = 0.0, *, requests: float = 1.0, prompt_tokens: float = 0.0
    ) -> AsyncIterator[None]:
        """Hold one in-flight place, paid for in the request and token buckets.

        `requests` is how many HTTP requests the call will make (a teacher that samples
        n answers with n requests pays n). The token charge is `tokens` as given plus
        `prompt_tokens` (an estimate) corrected by the usage reported so far, priced
        when the request's turn comes rather than when it joined the queue, so requests
        queued before the first answer are not charged at the uncorrected estimate.
        """
        if requests != self._slot_requests:
            self._slot_requests += SHAPE_WEIGHT * (requests - self._slot_requests)
        if self._queue or self._in_flight >= self._allowed():
            await self._wait_for_place()
        else:  # a free place and nobody ahead (one thread, no await)
            self._in_flight += 1
        try:
            await self._wait_pause()
            if self._req_bucket is not None and requests:
                await self._req_bucket.take(requests)
            if self._tok_bucket is not None and (tokens or prompt_tokens):
                await self._tok_bucket.take(lambda: self._charge(prompt_tokens, tokens))
            await self._wait_pause()
            epoch, sent = self.inflight.epoch, time.monotonic()
            yield
            # Only an answer measures latency: a refusal comes back fast and says nothing.
            self.inflight.on_answer(time.monotonic() - sent, self.pace(), epoch)
        finally:
            self._in_flight -= 1
            if self._queue:
                self._admit()

    async def _wait_for_place(self) -> None:
        """Queue for an in-flight place. The place is handed over already counted, so a
        waiter never wakes to find it taken: one wake-up per request, however many wait
        (a condition variable woke several for each freed place, ~3 at 512 in flight)."""
        place = asyncio.get_running_loop().create_future()
        self._queue.append(place)
        try:
            await place
        except asyncio.CancelledError:
            if place.done() and not place.cancelled():  # handed a place, then cancelled
                self._in_flight -= 1
                self._admit()
            elif place in self._queue:  # not yet skipped by `_admit`
                self._queue.remove(place)
            raise

    def _admit(self) -> None:
        """Hand the free places to the first in line: one when a request ends, more when
        the target has grown since."""
        while self._queue and self._in_flight < self._allowed():
            place = self._queue.popleft()
            if not place.done():
                self._in_flight += 1
                place.set_result(None)

    def _allowed(self) -> int:
        return self.inflight.limit

    def _charge(self, prompt_tokens: float, tokens: float) -> float:
        amount = self.estimate(prompt_tokens, tokens)
        self._slot_tokens += (SHAPE_WEIGHT if self._slot_tokens else 1.0) * (amount - self._slot_tokens)
        return amount

    async def _wait_pause(self) -> None:
        while True:
            delay = self._paused_until - time.monotonic()
            if delay <= 0:
                return
            await asyncio.sleep(delay)

    # -- feedback ------------------------------------------------------------------------

    def on_success(self, estimated_prompt: float | None = None, reported_prompt: int | None = None) -> None:
        """An answer: recover the rate additively; learn how estimates compare to usage."""
        if estimated_prompt and reported_prompt:
            ratio = min(max(reported_prompt / estimated_prompt, SCALE_BOUNDS[0]), SCALE_BOUNDS[1])
            self._observed += 1
            # A plain mean over the first answers (the first one already tells most of
            # it), then a moving average that follows a change of prompts.
            self._scale += max(SCALE_WEIGHT, 1.0 / self._observed) * (ratio - self._scale)
        if self._factor < 1.0:
            self._factor = min(1.0, self._factor + INCREASE)
            self._rebuild()

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429: pause everyone, drop the rate once per burst, drain what was banked."""
        self.rate_limited += 1
        now = time.monotonic()
        pause = retry_after if retry_after is not None else 1.0
        new_event = now >= self._paused_until
        self._paused_until = max(self._paused_until, now + pause)
        if new_event:
            paced = self._rpm is not None or self._tpm is not None
            self._factor = max(MIN_FACTOR, self._factor * (DECREASE_PACED if paced else DECREASE))
            if not paced:  # no rate to lower: fewer in flight is the only lever
                self.inflight.on_failure(paced=False)
            self._rebuild()
        for bucket in (self._req_bucket, self._tok_bucket):
            if bucket is not None:
                bucket.drain()

    def on_failure(self, exc: RetryableError) -> None:
        """A retryable failure: a 429 (or Anthropic's 529) slows everyone as above; a 5xx,
        a timeout or a dropped connection shrinks the in-flight target, once per event (a
        latency's worth of failures arriving together is one event)."""
        if exc.status in (429, 529):
            self.on_rate_limited(exc.retry_after)
            return
        if exc.reason not in CONGESTION and not (exc.status is not None and exc.status >= 500):
            return
        now = time.monotonic()
        if now >= self._failure_until:
            self._failure_until = now + (self.inflight.high_latency or 1.0)
            self.inflight.on_failure(paced=self._rpm is not None or self._tpm is not None)

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Learn limits the user did not give; wait briefly when the server says none remain."""
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
                # "reset" is when the whole limit is back; one unit is back after a
                # limit-th of it. Waiting for the whole reset (up to a minute for tokens)
                # would idle a run that its own bucket already paces.
                if reset:
                    unit = reset / float(limit) if limit is not None and float(limit) > 0 else reset
                    self._paused_until = max(self._paused_until, time.monotonic() + min(unit, reset))
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
