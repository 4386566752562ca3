"""The judge's labeling pass: every stored answer of the input, labeled by each judge.

It runs after the answering teachers' pass and before any verdict is made, as one more
`Labeler` pass over the same store: the judge's requests get the same limits, retries,
refusal learning, claims, budget and soft labels (logprobs, or samples) as the teacher's,
and its answers are cached under its own keys. A rerun therefore finds every judge answer
stored and sends nothing; a kill -9 loses only the judge requests in flight.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from labeler.engine import Labeler
from labeler.inputs import Reject, Row
from labeler.plan import CACHED, CHUNK
from labeler.settings import LabelSettings
from labeler.store import Store
from labeler.summary import RunSummary
from labeler.verify.judge import Judge
from labeler.verify.stage import answers_of

Rows = Callable[[], Iterable[Row | Reject]]


class JudgePass:
    """Labels the answers that `planner` reads back (the export's planner: one item per
    row, its answering teacher's) with each judge in turn; a `Strategy` in shape (run,
    stop, aclose), so a signal stops it as it stops any pass."""

    def __init__(
        self,
        judges: Sequence[Judge],
        planner: Any,
        store: Store,
        settings: LabelSettings,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.judges = list(judges)
        self.planner = planner
        self.store = store
        self.settings = settings
        self.on_warning = on_warning
        self.summaries: list[RunSummary] = []
        self._current: Labeler | None = None
        self._stopped = False

    async def run(self, rows: Rows, spent_usd: float = 0.0) -> list[RunSummary]:
        """One pass per judge; each judge's budget is what the job's budget has left."""
        spent = spent_usd
        for judge in self.judges:
            budget = self.settings.budget_usd
            settings = dataclasses.replace(
                self.settings, budget_usd=None if budget is None else max(0.0, budget - spent)
            )
            lb = Labeler(
                judge.task,
                judge.teacher,
                store=self.store,
                settings=settings,
                on_warning=self._warn(judge),
                close_teacher=False,
            )
            self._current = lb
            try:
                await judge.teacher.start()
                summary = await lb.run(self._judge_rows(judge, rows()))
            finally:
                self._current = None
                await lb.aclose()
            self.summaries.append(summary)
            spent += summary.cost_usd
            if self._stopped or summary.outcome in ("interrupted", "budget"):
                break
        return self.summaries

    def _judge_rows(self, judge: Judge, rows: Iterable[Row | Reject]) -> Iterator[Row]:
        """One judge row per stored answer (read in the pass's planning thread)."""
        for chunk in self.planner.plan_rows(rows, CHUNK):
            for item in chunk:
                if item.variant == 0 and item.status == CACHED and item.completion is not None:
                    yield from judge.rows(item.row.data, answers_of(item.completion), item.row)

    def _warn(self, judge: Judge) -> Callable[[str], None]:
        def told(message: str) -> None:
            text = f"judge {judge.spec.teacher}: {message}"
            if self.on_warning is not None:
                self.on_warning(text)
            else:
                import sys

                print(text, file=sys.stderr)

        return told

    def stop(self) -> None:
        self._stopped = True
        if self._current is not None:
            self._current.stop()

    def stop_notice(self) -> str:
        return self._current.stop_notice() if self._current is not None else "finishing the judge's pass"

    async def aclose(self) -> None:
        for judge in self.judges:
            await judge.teacher.aclose()


def judge_report(judge: Judge, summary: RunSummary) -> dict[str, Any]:
    """What one judge was asked and paid, as the run's summary carries it."""
    return {
        "teacher": judge.spec.teacher,
        "template": str(judge.task.path),
        "answers": summary.rows,
        "labeled": summary.labeled,
        "cached": summary.cached,
        "failed": summary.failed,
        "requests": summary.requests,
        "http_requests": summary.http_requests,
        "prompt_tokens": summary.prompt_tokens,
        "completion_tokens": summary.completion_tokens,
        "cost_usd": None if summary.unpriced else round(summary.cost_usd, 6),
        "elapsed_s": round(summary.elapsed_s, 3),
    }


def add_judges(total: RunSummary, judges: Sequence[Judge], summaries: Sequence[RunSummary]) -> None:
    """Fold the judge passes into the run's summary: their own entries, their cost in the
    run's, and a stop or a spent budget in the run's outcome."""
    for judge, summary in zip(judges, summaries, strict=False):
        total.judges.append(judge_report(judge, summary))
        total.cost_usd += summary.cost_usd
        total.unpriced += summary.unpriced
        total.interrupted |= summary.interrupted
        total.budget_stopped |= summary.budget_stopped


__all__ = ["JudgePass", "add_judges", "judge_report"]
