"""The scoring pass: the requests that tell labels sharing first tokens apart, sent.

After a live run has answered its rows, each answer whose soft label would divide a
shared prefix's mass among several labels (labeler/label_scoring.py) gets the one-token
requests that score it, level by level, until every label it holds is told apart. Each
answer is committed to the store as it lands, like a row's, so a kill loses only what
is in flight and a rerun sends nothing that was answered. A scoring request that fails
leaves its row's soft label the approximation, marked so; the failure is counted, not
stored, so the next run asks again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from labeler.completion import Completion
from labeler.errors import RetryableError, TeacherError
from labeler.inputs import Reject, Row
from labeler.label_scoring import attach_scores, scored_space
from labeler.plan import Planner
from labeler.request import Request, RequestKeys
from labeler.retry import RetryLoops
from labeler.settings import LabelSettings
from labeler.store import Store
from labeler.summary import RunSummary
from labeler.task import Task
from labeler.teachers.base import Teacher

MAX_IN_FLIGHT = 32


async def score_answers(
    task: Task,
    teacher: Teacher,
    store: Store,
    rows: Callable[[], Iterable[Row | Reject | Mapping[str, Any]]],
    settings: LabelSettings,
    summary: RunSummary,
) -> None:
    """Send the scoring requests the stored answers to `rows` lack, chunk by chunk, and
    count them in `summary` (`scoring_requests`, `scoring_failed`)."""
    planner = Planner(task, teacher.identity, store, failures=False)
    space = scored_space(task, teacher.identity)
    if space is None:
        return
    keys = RequestKeys(teacher.identity)
    gate = asyncio.Semaphore(max(1, min(settings.concurrency, MAX_IN_FLIGHT)))
    chunks = iter(planner.plan_rows(rows()))
    while await asyncio.to_thread(next, chunks, None) is not None:
        misses = planner.score_misses
        failed: set[str] = set()
        while misses:
            sent = await asyncio.gather(
                *(
                    _ask(key, asked, teacher, store, gate, settings, summary)
                    for key, (asked, _, _) in misses.items()
                )
            )
            failed.update(key for key, ok in zip(misses, sent, strict=True) if not ok)
            waiting = list(
                {
                    id(pair[1]): pair
                    for key, (_, _, pairs) in misses.items()
                    if key not in failed
                    for pair in pairs
                }.values()
            )
            misses = await asyncio.to_thread(attach_scores, waiting, space, keys.key, store.get_many)
            misses = {key: miss for key, miss in misses.items() if key not in failed}


async def _ask(
    key: str,
    request: Request,
    teacher: Teacher,
    store: Store,
    gate: asyncio.Semaphore,
    settings: LabelSettings,
    summary: RunSummary,
) -> bool:
    """One scoring request, with the run's retries and timeout; its answer stored."""
    async with gate:
        retrying = settings.retry.retrying()
        try:
            async for attempt in retrying:
                with attempt:
                    summary.scoring_requests += 1
                    completion = await _complete(teacher, request, settings.request_timeout_s)
        except TeacherError:
            summary.scoring_failed += 1
            return False
        finally:
            RetryLoops.done(retrying)  # freed now, not by the collector (labeler/retry.py)
    cost = settings.price_table.cost(teacher.model, completion.usage)
    await asyncio.to_thread(store.put, key, completion, cost)
    summary.cost_usd += cost or 0.0
    summary.unpriced += cost is None
    summary.prompt_tokens += completion.usage.prompt_tokens
    summary.completion_tokens += completion.usage.completion_tokens
    summary.cached_tokens += completion.usage.cached_tokens
    return True


async def _complete(teacher: Teacher, request: Request, limit: float | None) -> Completion:
    if limit is None:
        return await teacher.complete(request)
    try:
        async with asyncio.timeout(limit):
            return await teacher.complete(request)
    except TimeoutError:
        raise RetryableError("timeout", f"no complete answer within {limit:g}s (--request-timeout)") from None


__all__ = ["score_answers"]
