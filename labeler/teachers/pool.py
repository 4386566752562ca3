"""One teacher served by several endpoints (e.g. three vLLM servers with the same model).

``--base-url`` given more than once (or as a comma-separated list) builds one teacher per
endpoint and wraps them in an `EndpointPool`, which the orchestrator sees as a single
teacher: one cache identity, one limiter, one retry policy.

Spreading. Self-hosted servers announce no limits, so each endpoint has its own in-flight
target (`labeler.concurrency`), grown from a few while that server's latency holds and
held where its queue shows. Each request goes to the endpoint with the smallest share of
its target in use, ties broken round robin: a server that saturates at 4 answers at once
is not handed half of everything in flight while one beside it takes 64. When every
endpoint is at its target, a request waits here for a place; that wait is part of the
latency the run's own in-flight target sees, so the run stops growing too.

Failures. A connection that could not be made is retried at once on another endpoint
(nothing reached the server, so nothing was paid or processed twice). Other failures go
back to the orchestrator's retry policy as usual; the retry lands wherever the pool sends
it next. An endpoint that fails ``fail_after`` times in a row (connection errors,
timeouts, dropped connections, 5xx other than "overloaded") is taken out for a cooldown;
then one probe request is let through: if it succeeds the endpoint is back, if it fails
the cooldown doubles (up to ``max_cooldown_s``). When every endpoint is out, the request
fails as retryable with a retry-after of the earliest probe time, and if nothing has
answered yet the orchestrator ends the run as unreachable, naming the endpoints.

Cache identity. Endpoints serving the same model give interchangeable answers, so the
endpoint list is *not* part of the cache key: adding a fourth server, or replacing one,
must not relabel anything. The identity is an endpoint's own without its URL, plus
``"endpoint": "pool"`` (``{provider, model, "endpoint": "pool"}`` for OpenAI-compatible);
``cache_identity="NAME"`` replaces ``"pool"`` when pools that look alike must not share
answers (say, two quantisations of one model name). A single ``--base-url`` keeps its
URL in the key as before, so moving from one endpoint to a pool relabels once unless the
single endpoint was also run with the same ``cache_identity`` (which makes a pool of one).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Collection, Sequence
from typing import Any

from labeler.completion import Completion
from labeler.concurrency import DEFAULT_CEILING, InFlightTarget
from labeler.errors import ConfigError, FinalError, RetryableError
from labeler.request import Request
from labeler.teachers.base import (
    BaseTeacher,
    HeaderObserver,
    Teacher,
    http_outcomes,
    notices,
    request_shape,
    takes_n,
    tell_refusals,
)

_ENDPOINT_FAILURES = {"connection", "disconnected", "timeout"}
ENDPOINT_START = 4  # in flight per endpoint before its latency is known: below any batch


class _Endpoint:
    """Health and load of one endpoint."""

    __slots__ = (
        "cooldown",
        "down_until",
        "inflight",
        "last_reason",
        "probing",
        "streak",
        "target",
        "teacher",
    )

    def __init__(self, teacher: Teacher, cooldown: float) -> None:
        self.teacher = teacher
        self.inflight = 0
        self.streak = 0
        self.down_until = 0.0  # 0: in service
        self.cooldown = cooldown
        self.probing = False
        self.last_reason = "connection"
        self.target = InFlightTarget(DEFAULT_CEILING, start=ENDPOINT_START)

    @property
    def url(self) -> str:
        return str(getattr(self.teacher, "base_url", "?"))

    def available(self, now: float) -> bool:
        if not self.down_until:
            return True
        return now >= self.down_until and not self.probing


class EndpointPool(BaseTeacher):
    """Spread one teacher's requests over several endpoints, routing around dead ones."""

    def __init__(
        self,
        endpoints: Sequence[Teacher],
        *,
        cache_identity: str | None = None,
        fail_after: int = 3,
        cooldown_s: float = 1.0,
        max_cooldown_s: float = 60.0,
    ) -> None:
        if not endpoints:
            raise ConfigError("an endpoint pool needs at least one endpoint")
        first = endpoints[0]
        if any((t.provider, t.model) != (first.provider, first.model) for t in endpoints):
            raise ConfigError("every endpoint of a pool must serve the same provider:model")
        self.provider = first.provider
        self.model = first.model
        self.cache_identity = cache_identity
        self.fail_after = max(1, fail_after)
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self._endpoints = [_Endpoint(t, cooldown_s) for t in endpoints]
        self._turn = itertools.count()
        self._room: asyncio.Condition | None = None  # waiters for a place below a target
        self._waiting = 0

    @property
    def identity(self) -> dict[str, Any]:
        # An endpoint's identity without its URL: whatever else shapes answers (an
        # Anthropic teacher's sample count, say) stays in the key.
        ident = {k: v for k, v in self._endpoints[0].teacher.identity.items() if k != "base_url"}
        ident["endpoint"] = self.cache_identity or "pool"
        return ident

    @property
    def base_urls(self) -> list[str]:
        return [e.url for e in self._endpoints]

    def health(self) -> list[dict[str, Any]]:
        """Per endpoint: in flight, failure streak, whether it is out of service and how
        long until it may be probed (0: now)."""
        now = time.monotonic()
        return [
            {
                "url": e.url,
                "inflight": e.inflight,
                "target": e.target.limit,
                "streak": e.streak,
                "out": bool(e.down_until),
                "probe_in_s": max(0.0, e.down_until - now) if e.down_until else 0.0,
            }
            for e in self._endpoints
        ]

    def observe_headers(self, observer: HeaderObserver | None) -> None:
        for e in self._endpoints:
            e.teacher.observe_headers(observer)

    def request_shape(self, request: Request) -> tuple[int, int]:
        return request_shape(self._endpoints[0].teacher, request)

    @property
    def http_outcomes(self) -> Counter[str] | None:
        """The endpoints' own counts where they fan calls out (sampling), summed."""
        counts = [c for e in self._endpoints if (c := http_outcomes(e.teacher)) is not None]
        return sum(counts, Counter()) if counts else None

    @property
    def notices(self) -> list[str]:
        return [n for e in self._endpoints for n in notices(e.teacher)]

    def refuses(self, params: Collection[str], takes_n: bool | None = None) -> None:
        """What the pool is known to refuse: every endpoint serves the same model."""
        for e in self._endpoints:
            tell_refusals(e.teacher, params, takes_n)

    @property
    def takes_n(self) -> bool | None:
        """Whether the endpoints take ``n``, where they all agree."""
        verdicts = {takes_n(e.teacher) for e in self._endpoints}
        return verdicts.pop() if len(verdicts) == 1 else None

    async def start(self) -> None:
        for e in self._endpoints:
            await e.teacher.start()

    async def aclose(self) -> None:
        await asyncio.gather(*(e.teacher.aclose() for e in self._endpoints))

    async def complete(self, request: Request) -> Completion:
        tried: list[_Endpoint] = []
        refused: RetryableError | None = None
        while True:
            ep = self._pick(tried)
            if ep is None:
                if refused is not None:
                    raise RetryableError(
                        "connection",
                        f"no endpoint accepts connections ({', '.join(self.base_urls)}): {refused.message}",
                    ) from refused
                raise self._all_down()
            probe = bool(ep.down_until)
            if not probe and ep.inflight >= ep.target.limit:
                await self._wait_for_room()
                continue
            ep.probing = ep.probing or probe
            ep.inflight += 1
            epoch, sent = ep.target.epoch, time.monotonic()
            try:
                completion = await ep.teacher.complete(request)
            except RetryableError as exc:
                self._failed(ep, exc, probe)
                if exc.reason == "connection":  # never reached the server: try another now
                    tried.append(ep)
                    refused = exc
                    continue
                raise
            except FinalError:
                self._succeeded(ep)  # the endpoint answered; the request was the problem
                raise
            except BaseException:
                if probe:
                    ep.probing = False
                raise
            else:  # before the place is given back, so that a grown target wakes more
                ep.target.on_answer(time.monotonic() - sent, None, epoch)
            finally:
                ep.inflight -= 1
                if self._waiting:
                    await self._wake()
            self._succeeded(ep)
            return completion

    async def _wait_for_room(self) -> None:
        if self._room is None:
            self._room = asyncio.Condition()
        self._waiting += 1
        try:
            async with self._room:
                await self._room.wait()
        finally:
            self._waiting -= 1

    async def _wake(self) -> None:
        """A place came free (and a target may have grown): wake as many as fit."""
        assert self._room is not None
        room = sum(max(0, e.target.limit - e.inflight) for e in self._endpoints if not e.down_until)
        async with self._room:
            self._room.notify(max(1, room))

    def _pick(self, exclude: list[_Endpoint]) -> _Endpoint | None:
        now = time.monotonic()
        ready = [e for e in self._endpoints if e not in exclude and e.available(now)]
        if not ready:
            return None
        # An endpoint due for its probe goes first: one request tells whether it is back.
        due = [e for e in ready if e.down_until]
        if due:
            return due[0]
        least = min(e.inflight / e.target.limit for e in ready)
        ties = [e for e in ready if e.inflight / e.target.limit == least]
        return ties[next(self._turn) % len(ties)]

    def _succeeded(self, ep: _Endpoint) -> None:
        ep.streak = 0
        ep.down_until = 0.0
        ep.cooldown = self.cooldown_s
        ep.probing = False

    def _failed(self, ep: _Endpoint, exc: RetryableError, probe: bool) -> None:
        if probe:
            ep.probing = False
        if not _counts(exc):
            return
        if exc.reason != "connection":  # it was reached, and struggled: fewer in flight
            ep.target.on_failure(paced=False)
        ep.last_reason = exc.reason
        ep.streak += 1
        now = time.monotonic()
        if probe:  # still dead: wait longer before the next probe
            ep.cooldown = min(ep.cooldown * 2, self.max_cooldown_s)
            ep.down_until = now + ep.cooldown
        elif not ep.down_until and ep.streak >= self.fail_after:
            ep.down_until = now + ep.cooldown

    def _all_down(self) -> RetryableError:
        now = time.monotonic()
        waits = [e.down_until - now for e in self._endpoints if e.down_until]
        retry_after = max(0.05, min(waits)) if waits else 0.05
        reasons = {e.last_reason for e in self._endpoints}
        reason = "connection" if reasons == {"connection"} else "endpoints_down"
        return RetryableError(
            reason,
            f"all {len(self._endpoints)} endpoints are out of service "
            f"({', '.join(self.base_urls)}); next probe in {retry_after:.1f}s",
            retry_after=retry_after,
        )


def _counts(exc: RetryableError) -> bool:
    """Failures that say the endpoint itself is unwell (not a rate limit or overload)."""
    if exc.reason in _ENDPOINT_FAILURES:
        return True
    return exc.status is not None and exc.status >= 500 and exc.status != 529 and exc.reason != "overloaded"
