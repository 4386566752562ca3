"""What `--verify` asks of a cascade: a row none of whose answers passes goes on to the
next teacher, as an unsure one does.

The cascade asks it twice, and both must agree: while labeling (`escalate`, after each
stage's pass, over the rows that stage would otherwise keep) and when reading the stages
back for an export (`fails`, per row, in `CascadePlanner`). Both read the same stored
verdicts, so the second costs no check and no request. A judge in the spec labels each
stage's answers before they are checked (labeler/verify/judge_pass.py), its passes kept
for the run's summary.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from labeler.completion import Completion
from labeler.inputs import Row
from labeler.plan import Planner
from labeler.settings import LabelSettings
from labeler.store import Store
from labeler.summary import RunSummary
from labeler.task import Task
from labeler.verify.chain import Verifier
from labeler.verify.judge_pass import JudgePass, judge_report
from labeler.verify.stage import VerifyStage

Answered = tuple[Row, str, Completion]  # a row, its answer's key, the stored answer


class VerifyGate:
    """Whether a stage's answered rows have an answer that passes `verifier`.

    `settings` are how a judge in the spec labels (None: a judge is only read, as an
    export reads it)."""

    def __init__(
        self,
        verifier: Verifier,
        task: Task,
        store: Store,
        settings: LabelSettings | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.verifier = verifier
        self.task = task
        self.store = store
        self.settings = settings
        self.on_warning = on_warning
        self.stage = VerifyStage(verifier, store)
        self.judged: list[dict[str, Any]] = []  # each judge pass run here, for the summary
        self.judge_summaries: list[RunSummary] = []

    def fails(self, data: Mapping[str, Any], key: str, completion: Completion) -> bool:
        """Whether no answer of this stored completion passes (verdicts stored)."""
        [checked] = self.stage.check([(dict(data), key, completion)])
        return bool(checked.answers) and not any(v.passed for v in checked.verdicts)

    async def escalate(
        self, stage: int, identity: Mapping[str, Any], answered: Sequence[Answered], spent_usd: float = 0.0
    ) -> list[Row]:
        """The rows of `answered` (stage `stage`'s, 0-based, answered by the teacher of
        `identity`) that no answer passes: after a judge, if the spec has one, has
        labeled their answers."""
        if not answered:
            return []
        judges = self.verifier.judges
        if judges and self.settings is not None:
            planner = Planner(self.task, identity, self.store, failures=False, single_answers=True)
            settings = self.settings
            if settings.budget_usd is not None:
                settings = dataclasses.replace(settings, budget_usd=max(0.0, settings.budget_usd - spent_usd))
            judging = JudgePass(judges, planner, self.store, settings, self.on_warning)
            done = await judging.run(lambda: [row for row, _, _ in answered])
            for judge, summary in zip(judges, done, strict=False):
                self.judged.append({"stage": stage + 1, **judge_report(judge, summary)})
                self.judge_summaries.append(summary)

        def check() -> list[Row]:
            return [row for row, key, completion in answered if self.fails(row.data, key, completion)]

        return await asyncio.to_thread(check)


__all__ = ["VerifyGate"]
