"""The fleet's `RateKeeper` on its own (in one event loop; the Ray tests run it as an actor)."""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("ray", reason="labeler.ray needs the ray extra: pip install 'labeler-distill[ray]'")
from labeler.ray.fleet import RateKeeper


def elapsed(keeper: RateKeeper, n: int, tokens: float = 0.0) -> float:
    async def go() -> float:
        start = time.monotonic()
        await asyncio.gather(*(keeper.take(1, tokens) for _ in range(n)))
        return time.monotonic() - start

    return asyncio.run(go())


def test_without_a_known_limit_every_grant_is_immediate() -> None:
    assert elapsed(RateKeeper(), 500) < 0.5


def test_a_limit_learned_from_headers_paces_the_fleet_and_a_flag_wins() -> None:
    keeper = RateKeeper()
    keeper.learned(600, None)  # 10/s for the whole fleet
    t = elapsed(keeper, 11)
    assert 0.9 <= t <= 1.6, t
    flagged = RateKeeper(rpm=6000)
    flagged.learned(60, None)
    assert flagged.report()["limits"]["rpm"] == 6000


def test_a_429_pauses_every_grant_and_cuts_the_rate_once_per_burst() -> None:
    keeper = RateKeeper(rpm=60_000)
    keeper.rate_limited_by_server(0.4)
    keeper.rate_limited_by_server(0.4)  # the same burst: one cut
    assert keeper.report()["factor"] == pytest.approx(0.9)
    assert elapsed(keeper, 1) >= 0.35


def test_tokens_are_paced_like_requests() -> None:
    keeper = RateKeeper(tpm=60_000)  # 1,000 tokens/s
    assert 0.8 <= elapsed(keeper, 6, tokens=200) <= 1.6
