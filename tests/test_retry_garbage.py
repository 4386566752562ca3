"""A finished request leaves nothing for the garbage collector.

Each request runs in a retry loop of its own; were its objects kept alive by a reference
cycle, a long run would pile up tens of them per request between collections and pay
for young collections over hundreds of thousands of objects (the client's CPU per
request in `python -m benchmarks`).
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from labeler.engine import Labeler
from labeler.errors import RetryableError
from labeler.retry import RetryLoops, RetryPolicy
from labeler.task import load_task
from labeler.teachers import make_teacher
from labeler.testing import ServerConfig, TeacherServer

ROWS = 300


@contextmanager
def collector_off() -> Iterator[list[int]]:
    """The number of objects only the collector could free, made inside the block."""
    found: list[int] = []
    gc.collect()
    gc.disable()
    try:
        yield found
    finally:
        found.append(gc.collect())
        gc.enable()


def test_a_finished_retry_loop_is_freed_at_once() -> None:
    loops = RetryLoops(RetryPolicy(initial_wait=0.001, max_wait=0.002))

    async def answered() -> int:
        retrying = loops.new()
        try:
            async for attempt in retrying:
                with attempt:
                    return 1
        finally:
            RetryLoops.done(retrying)
        raise AssertionError("unreachable")

    async def run(n: int) -> None:
        for _ in range(n):
            assert await answered() == 1

    asyncio.run(run(10))
    with collector_off() as found:
        asyncio.run(run(200))
    assert found[0] < 200, f"{found[0]} objects in cycles after 200 answered loops"


def test_a_retried_loop_still_retries_after_its_cycle_is_broken() -> None:
    loops = RetryLoops(RetryPolicy(max_attempts=3, initial_wait=0.001, max_wait=0.002))
    tries = 0

    async def flaky() -> int:
        nonlocal tries
        retrying = loops.new()
        try:
            async for attempt in retrying:
                with attempt:
                    tries += 1
                    if tries < 3:
                        raise RetryableError("server_error", "try again")
                    return tries
        finally:
            RetryLoops.done(retrying)
        raise AssertionError("unreachable")

    assert asyncio.run(flaky()) == 3


def test_an_answered_request_wraps_one_action(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop of a request answered at once runs only the attempt itself: tenacity's
    default `before` hook did nothing, yet each request paid for it an action wrapped to
    be awaited (two inspections of the callable and a coroutine)."""
    from tenacity import _utils

    wrapped: list[object] = []
    real = _utils.wrap_to_async_func

    def counting(call: Any) -> Any:
        wrapped.append(call)
        return real(call)

    monkeypatch.setattr(_utils, "wrap_to_async_func", counting)
    loops = RetryLoops(RetryPolicy(initial_wait=0.001, max_wait=0.002))

    async def answered() -> int:
        retrying = loops.new()
        try:
            async for attempt in retrying:
                with attempt:
                    return 1
        finally:
            RetryLoops.done(retrying)
        raise AssertionError("unreachable")

    async def run(n: int) -> None:
        for _ in range(n):
            assert await answered() == 1

    asyncio.run(run(10))
    assert len(wrapped) == 10, [getattr(c, "__name__", c) for c in wrapped[:4]]


def test_a_labeling_run_leaves_no_garbage_per_request() -> None:
    rows = [{"id": f"r{i}", "text": f"review number {i}"} for i in range(ROWS)]
    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        teacher = make_teacher("openai-compatible:teacher-test", base_url=srv.url + "/v1")

        async def go(store: Path) -> int:
            task = load_task("sentiment")
            async with Labeler(task, teacher, store=store, concurrency=8, progress=False) as lb:
                return sum(1 for r in [r async for r in lb.label(rows)] if r.status == "labeled")

        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(go(Path(tmp) / "warm.sqlite"))
            with collector_off() as found:
                labeled = asyncio.run(go(Path(tmp) / "s.sqlite"))
    assert labeled == ROWS
    # The server in this process and the run's own setup leave a little; the retry loop
    # of each request left over 20 objects per request.
    assert found[0] < 5 * ROWS, f"{found[0]} objects in cycles after {ROWS} requests"
