"""The engine's waits cost the same per request however many requests are in flight.

A run keeps up to twice its in-flight ceiling of requests going (1,024 at the default
ceiling), so a wait that touches every one of them for each answer, or starts a task
for each of them, costs the client quadratically at the end of a run or all at once at
its start (the whole-process row of `python -m benchmarks`).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from labeler.engine import Labeler
from labeler.task import load_task
from labeler.teachers import make_teacher
from labeler.testing import ServerConfig, TeacherServer

ROWS = 200


class _Watched(asyncio.Task[Any]):
    """A task that counts the done-callbacks put on it: each `asyncio.wait` over it puts
    one (and takes it off again)."""

    def __init__(self, coro: Coroutine[Any, Any, Any], **kw: Any) -> None:
        super().__init__(coro, **kw)
        self.callbacks = 0

    def add_done_callback(self, fn: Callable[..., object], **kw: Any) -> None:
        self.callbacks += 1
        super().add_done_callback(fn, **kw)


def _labeled_with_watched_tasks(concurrency: int) -> tuple[int, list[_Watched]]:
    """Label ROWS rows against the test teacher from a fresh store (the first request
    finds out whether it takes logprobs while the others wait); every task the run
    starts, with how many done-callbacks each was given."""
    tasks: list[_Watched] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> _Watched:
        task = _Watched(coro, loop=loop, **kw)
        tasks.append(task)
        return task

    rows = [{"id": f"r{i}", "text": f"review number {i}"} for i in range(ROWS)]
    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        teacher = make_teacher("openai-compatible:teacher-test", base_url=srv.url + "/v1")

        async def go(store: Path) -> int:
            asyncio.get_running_loop().set_task_factory(factory)
            task = load_task("sentiment")
            async with Labeler(task, teacher, store=store, concurrency=concurrency, progress=False) as lb:
                return sum(1 for r in [r async for r in lb.label(rows)] if r.status == "labeled")

        with tempfile.TemporaryDirectory() as tmp:
            labeled = asyncio.run(go(Path(tmp) / "s.sqlite"))
    return labeled, tasks


def _name(task: asyncio.Task[Any]) -> str:
    return getattr(task.get_coro(), "__qualname__", "?")


def test_waiting_for_the_last_requests_touches_each_once() -> None:
    labeled, tasks = _labeled_with_watched_tasks(concurrency=8)
    assert labeled == ROWS
    workers = [t for t in tasks if _name(t) == "_RunState._work"]
    assert len(workers) == ROWS
    # One callback of the run's own (the worker set); waiting for the last ones used to
    # add one more to each worker still going every time a commit let some of them end.
    most = Counter(t.callbacks for t in workers)
    assert max(most) <= 1, f"done-callbacks per worker: {dict(most)}"


def test_waiting_for_the_first_answer_starts_no_task() -> None:
    labeled, tasks = _labeled_with_watched_tasks(concurrency=8)
    assert labeled == ROWS
    names = Counter(_name(t) for t in tasks)
    # Each request is one task (and the transport's writer one more); the requests that
    # wait for the first answer to settle a parameter used to start one task each.
    assert names["Lock.acquire"] == 0, dict(names)
