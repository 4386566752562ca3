"""The scheduler against a server that enforces its limits, and its parts on their own.

Server-side windows here are short (2-4 s) so a test sees more than one; the limiter is
given the matching per-minute rate by flag. Limits learned from headers are tested with
a real 60 s window, because the headers carry per-minute numbers.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from labeler.engine import Labeler, Record
from labeler.limits import SAFETY, Limiter, TokenBucket
from labeler.retry import RetryPolicy
from labeler.task import load_task
from labeler.teachers import make_teacher
from labeler.testing import ServerConfig, TeacherServer

LABELS = ["negative", "positive"]
WINDOW = 2.0


def rows(n: int) -> list[dict[str, Any]]:
    return [{"id": f"r{i}", "text": f"review number {i} was fine"} for i in range(n)]


def run(
    server: TeacherServer, data: Sequence[dict[str, Any]], *, warm: bool = True, **labeler_kw: Any
) -> tuple[list[Record], Labeler]:
    """Label `data`; with `warm`, one row first and the server's windows reset after it,
    so the measurement starts with open connections, as any run does after its first
    second, instead of with the in-process server's cold start."""
    teacher = make_teacher("openai-compatible:teacher-test", base_url=server.url + "/v1")
    policy = RetryPolicy(initial_wait=0.05, max_wait=0.5)

    async def go() -> tuple[list[Record], Labeler]:
        with tempfile.TemporaryDirectory() as tmp:
            store = Path(tmp) / "s.sqlite"
            if warm:
                async with Labeler(
                    load_task("sentiment"),
                    teacher,
                    store=store,
                    retry=policy,
                    progress=False,
                    close_teacher=False,
                    **labeler_kw,
                ) as lb:
                    [r async for r in lb.label([{"text": "warming up"}])]
                server.reset()
            async with Labeler(
                load_task("sentiment"), teacher, store=store, retry=policy, progress=False, **labeler_kw
            ) as lb:
                return [r async for r in lb.label(data)], lb

    return asyncio.run(go())


def chat_log(server: TeacherServer) -> list[Any]:
    return [r for r in server.log if r.path == "/v1/chat/completions"]


def rate(times: Sequence[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0])


# -- against the server's enforced limits ---------------------------------------------


def test_rpm_from_flag_reaches_the_limit_without_429s() -> None:
    """50 requests per 2 s window = 1500 RPM; three windows' worth of rows. (The 2% margin
    must hold at least one request, or a window's edge could see one too many.)"""
    limit = 50
    with TeacherServer(ServerConfig(labels=LABELS, rpm=limit, rate_window_s=WINDOW)) as srv:
        recs, _ = run(srv, rows(150), rpm=limit * 60 / WINDOW, concurrency=32)
        log = chat_log(srv)
    ok = [r.received for r in log if r.status == 200]
    limited = sum(1 for r in log if r.status == 429)
    assert [r.status for r in recs] == ["labeled"] * 150
    achieved = rate(ok) / (limit / WINDOW)
    print(f"rpm: {achieved:.1%} of the limit, {limited} x 429 in {len(log)} requests")
    # The 95% target is measured by `python -m benchmarks --only rate` over a long run;
    # a few seconds on a shared machine only show the limiter is not grossly off.
    assert achieved >= 0.90, f"{achieved:.1%} of the limit"
    assert limited / len(log) < 0.01, f"{limited} x 429 in {len(log)}"


def test_tpm_from_flag_reaches_the_limit_without_429s() -> None:
    """The server charges its own token count + max_tokens; labeler estimates ~4 chars a
    token and corrects the estimate from reported usage."""
    # Each request is 84 + 2 tokens by the server's count; the window holds 100 of them,
    # so the 2% safety margin is two requests' worth of timing slack at its edges.
    limit, window = 8600, 4.0
    with TeacherServer(ServerConfig(labels=LABELS, tpm=limit, rate_window_s=window)) as srv:
        recs, lb = run(srv, rows(120), tpm=limit * 60 / window, concurrency=32)
        log = chat_log(srv)
    assert [r.status for r in recs] == ["labeled"] * 120
    charge = lb.summary.prompt_tokens / 120 + 2  # what the server charged per request
    ok = [r.received for r in log if r.status == 200]
    achieved = rate(ok) * charge / (limit / window)
    limited = sum(1 for r in log if r.status == 429)
    print(f"tpm: {achieved:.1%} of the limit, {limited} x 429; token scale {lb.limiter.token_scale:.3f}")
    assert achieved >= 0.88, f"{achieved:.1%} of the limit"
    assert limited / len(log) < 0.01, f"{limited} x 429 in {len(log)}"
    assert lb.limiter.token_scale < 0.95  # the server counts fewer tokens than ~4 chars each


def test_limits_learned_from_headers_alone() -> None:
    """No flags: the first answers' x-ratelimit-* headers set the pace (1200 RPM, 60 s
    window as the headers mean it); no 429 even though the server would send them."""
    config = ServerConfig(labels=LABELS, rpm=1200, tpm=600_000)
    concurrency = 4
    with TeacherServer(config) as srv:
        recs, lb = run(srv, rows(40), warm=False, concurrency=concurrency)
        log = chat_log(srv)
    assert [r.status for r in recs] == ["labeled"] * 40
    assert (lb.limiter.rpm, lb.limiter.tpm) == (1200, 600_000)
    # The first `concurrency` went before any header was seen; the rest are paced.
    paced = [r.received for r in log][concurrency:]
    assert 0.95 <= rate(paced) / (1200 / 60) <= 1.05
    assert all(r.status == 200 for r in log)


def test_anthropic_headers_are_learned() -> None:
    limiter = Limiter(4)
    limiter.observe_headers(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-tokens-limit": "40000",
            "anthropic-ratelimit-tokens-remaining": "39000",
        }
    )
    assert (limiter.rpm, limiter.tpm) == (50, 40000)


def test_a_429_pauses_everyone_for_its_retry_after() -> None:
    """Random 429s (no known limit): after each, nobody sends until its retry-after ends."""
    pause = 0.6
    config = ServerConfig(labels=LABELS, rate_limit_rate=0.1, retry_after_s=pause, seed=1, latency_s=0.01)
    with TeacherServer(config) as srv:
        recs, lb = run(srv, rows(30), warm=False, concurrency=8)
        log = chat_log(srv)
    assert [r.status for r in recs] == ["labeled"] * 30
    limited = [r for r in log if r.status == 429]
    assert limited and lb.summary.rate_limited == len(limited)
    for r429 in limited:
        quiet_from, quiet_to = r429.responded + 0.1, r429.responded + pause - 0.05
        assert not [r for r in log if quiet_from < r.received < quiet_to], r429
    assert lb.limiter.factor < 1.0 or lb.summary.labeled > 0


# -- the parts ---------------------------------------------------------------------------


def test_a_big_request_is_charged_in_full() -> None:
    """1000 tokens/s with a tiny burst: three 500-token requests take ~1 s, not ~0."""

    async def go() -> float:
        bucket = TokenBucket(rate=1000.0, capacity=20.0)
        bucket.tokens = 0.0
        start = time.monotonic()
        for _ in range(3):
            await bucket.take(500)
        return time.monotonic() - start

    elapsed = asyncio.run(go())
    assert 0.95 <= elapsed < 1.3  # 20 + 500 + 500 tokens of waiting


def test_waiting_is_credited_exactly() -> None:
    """A bucket with room for one request still delivers its full rate to a queue."""

    async def go() -> float:
        bucket = TokenBucket(rate=200.0, capacity=1.0)
        start = time.monotonic()
        await asyncio.gather(*(bucket.take(1) for _ in range(101)))
        return time.monotonic() - start

    elapsed = asyncio.run(go())
    assert 100 / elapsed >= 150  # rate 200/s, with slack for a loaded machine


def test_one_burst_of_429s_is_one_decrease() -> None:
    limiter = Limiter(16, rpm=600)
    for _ in range(10):  # ten requests that were in flight together, all refused
        limiter.on_rate_limited(0.5)
    assert limiter.factor == pytest.approx(0.9)
    unknown = Limiter(16)
    for _ in range(10):
        unknown.on_rate_limited(0.5)
    assert unknown.factor == pytest.approx(0.7)
    for _ in range(100):
        unknown.on_success()
    assert unknown.factor == 1.0


def test_user_limits_win_over_headers() -> None:
    limiter = Limiter(4, rpm=100)
    limiter.observe_headers({"x-ratelimit-limit-requests": "5000", "x-ratelimit-limit-tokens": "2000000"})
    assert (limiter.rpm, limiter.tpm) == (100, 2_000_000)


def test_nothing_remaining_waits_for_one_unit_not_the_whole_reset() -> None:
    limiter = Limiter(4)
    before = time.monotonic()
    limiter.observe_headers(
        {
            "x-ratelimit-limit-requests": "600",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "1m0s",
        }
    )
    assert 0.05 <= limiter._paused_until - before <= 0.2  # 60 s / 600, not 60 s


def test_token_estimates_follow_reported_usage() -> None:
    limiter = Limiter(4, tpm=60_000)
    limiter.on_success(100, 150)
    assert limiter.token_scale == pytest.approx(1.5)
    assert limiter.estimate(100, 10) == pytest.approx(160)
    for _ in range(50):
        limiter.on_success(100, 80)
    assert limiter.token_scale == pytest.approx(0.8, rel=0.01)


def test_safety_margin_is_small() -> None:
    assert 0.95 <= SAFETY < 1.0


async def _busy_loop(turn_s: float, stop: asyncio.Event, turns: list[int]) -> None:
    """Make every turn of the event loop take `turn_s`, as hundreds of answers a second
    do, and count the turns."""
    while not stop.is_set():
        time.sleep(turn_s)  # the loop's own work: blocks it, as callbacks do
        turns[0] += 1
        await asyncio.sleep(0)


def test_a_bucket_keeps_its_rate_when_the_event_loop_turns_slowly() -> None:
    """500/s with a turn every 5 ms: several requests must go per turn (a lock handed
    from waiter to waiter lets one go per turn: 200/s at most)."""

    async def go() -> tuple[float, int]:
        stop, turns = asyncio.Event(), [0]
        busy = asyncio.create_task(_busy_loop(0.005, stop, turns))
        bucket = TokenBucket(rate=500.0, capacity=10.0)  # BURST_S of 500/s
        start = time.monotonic()
        await asyncio.gather(*(bucket.take(1) for _ in range(400)))
        elapsed = time.monotonic() - start
        stop.set()
        await busy
        return 400 / elapsed, turns[0]

    per_s, turns = asyncio.run(go())
    assert 400 / turns >= 1.5  # requests let go per turn of the loop
    assert per_s >= 0.8 * 500


def test_a_stalled_event_loop_delays_requests_without_losing_the_rate() -> None:
    """Turns of 30 ms (a starved process): the requests a stall held back go when it
    ends, so the rate holds, yet no second sees more than the rate plus the burst."""

    async def go() -> list[float]:
        stop, turns = asyncio.Event(), [0]
        busy = asyncio.create_task(_busy_loop(0.03, stop, turns))
        bucket = TokenBucket(rate=500.0, capacity=10.0)
        granted: list[float] = []

        async def one() -> None:
            await bucket.take(1)
            granted.append(time.monotonic())

        await asyncio.gather(*(one() for _ in range(750)))
        stop.set()
        await busy
        return granted

    granted = asyncio.run(go())
    assert rate(granted) >= 0.8 * 500  # a bucket that drops what a stall held back: ~120/s
    busiest = max(sum(1 for t in granted[i:] if t - g < 1.0) for i, g in enumerate(granted))
    assert busiest <= 500 + 10


class _CountingLoop(asyncio.SelectorEventLoop):
    """An event loop that counts the callbacks it schedules: every wake-up of a waiting
    coroutine is one, so the count is the work a hand-over costs, without a clock."""

    scheduled = 0

    def call_soon(self, *args: Any, **kw: Any) -> asyncio.Handle:  # type: ignore[override]
        self.scheduled += 1
        return super().call_soon(*args, **kw)


def _callbacks_per_place(holding: int) -> float:
    """`holding` requests hold every place and three times as many wait; all the holders
    end at once. Callbacks scheduled per waiter served."""

    async def scenario(loop: _CountingLoop) -> float:
        lim = Limiter(holding)
        lim.inflight.limit = holding
        end = asyncio.Event()

        async def hold() -> None:
            async with lim.slot():
                await end.wait()

        async def wait() -> None:
            async with lim.slot():
                await asyncio.sleep(0)

        holders = [asyncio.create_task(hold()) for _ in range(holding)]
        await asyncio.sleep(0)
        waiters = [asyncio.create_task(wait()) for _ in range(3 * holding)]
        await asyncio.sleep(0)
        before = loop.scheduled
        end.set()
        await asyncio.gather(*holders, *waiters)
        return (loop.scheduled - before) / len(waiters)

    loop = _CountingLoop()
    try:
        return loop.run_until_complete(scenario(loop))
    finally:
        loop.close()


def test_a_freed_place_wakes_one_waiter_however_many_wait() -> None:
    """At 512 in flight (the default ceiling) hundreds of workers queue for a place; each
    place freed must wake the one it is handed to, not several that then find it taken
    and queue again (a condition variable did: the cost per request grew with the queue)."""
    few, many = _callbacks_per_place(16), _callbacks_per_place(256)
    assert many <= few + 0.1, (few, many)


def test_a_waiter_cancelled_before_or_after_its_turn_leaks_no_place() -> None:
    """A stop cancels workers still queued for a place; one may be cancelled just after
    a place was handed to it. Either way the place goes to the next in line."""

    async def scenario() -> list[str]:
        lim = Limiter(1)
        lim.inflight.limit = 1
        served: list[str] = []
        end = asyncio.Event()
        handed: list[asyncio.Task[None]] = []

        async def take(name: str) -> None:
            async with lim.slot():
                served.append(name)

        async def hold() -> None:
            async with lim.slot():
                await end.wait()
                # runs before the next in line resumes: it is handed the place, then cancelled
                asyncio.get_running_loop().call_soon(handed[0].cancel)

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0)
        handed.append(asyncio.create_task(take("handed")))
        gone = asyncio.create_task(take("gone"))
        last = asyncio.create_task(take("last"))
        await asyncio.sleep(0)
        gone.cancel()  # still in line
        end.set()
        await asyncio.wait_for(asyncio.gather(holder, handed[0], gone, last, return_exceptions=True), 2.0)
        await asyncio.wait_for(take("after"), 2.0)  # no place was lost on the way
        return served

    assert asyncio.run(scenario()) == ["last", "after"]
