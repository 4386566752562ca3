"""Teacher ensembles: every member answers every row; the soft label is their mixture.

Several teachers' distributions average out each one's quirks, and where they disagree
the row is doubtful whatever each says: the share of members naming the ensemble's label
(`agreement`) is a confidence measure of its own.

Each member is an ordinary labeling pass (`Labeler`) with its own teacher and its own
limits, all running at once over the same store, so each member's answers are cached
under its own key: adding a member asks only the new one, and a kill -9 resumes them all.
A member that fails a row leaves the others' answers standing. The combination is a pure
function of the input, the store and the `EnsembleSpec` (`EnsemblePlanner`), read at
export time like any answer.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labeler.answer import Answer, read_answer
from labeler.cascade import MultiPlanner, Stage, StageReport
from labeler.confidence import agreement, measure
from labeler.engine import Labeler
from labeler.errors import ConfigError
from labeler.inputs import Reject, Row
from labeler.plan import CACHED, Item
from labeler.soft_labels import SoftLabel
from labeler.store import Store
from labeler.summary import RunSummary
from labeler.task import Task
from labeler.teachers.base import Teacher

COMBINE = ("mean", "product")
_FLOOR = 1e-12  # a product of experts treats a zero as this (one member cannot veto alone)


@dataclass(frozen=True)
class EnsembleSpec:
    """The members, their weights (1 each unless given) and how distributions combine:
    ``mean`` (a weighted mixture) or ``product`` (a weighted geometric mean, renormalised:
    a product of experts, sharper where the members agree)."""

    stages: tuple[Stage, ...]
    weights: tuple[float, ...]
    combine: str = "mean"

    def __post_init__(self) -> None:
        if len(self.stages) < 2:
            raise ConfigError("--ensemble needs at least two teachers, comma-separated")
        if self.combine not in COMBINE:
            raise ConfigError(f"--ensemble-combine '{self.combine}': expected one of {', '.join(COMBINE)}")
        for stage, w in zip(self.stages, self.weights, strict=True):
            if not (math.isfinite(w) and w > 0):
                raise ConfigError(
                    f"--ensemble {stage.teacher}: a weight must be a positive number, got {w:g}"
                )

    @classmethod
    def parse(cls, ensemble: str | Sequence[str], combine: str | None = None) -> EnsembleSpec:
        """From the flag: ``PROVIDER:MODEL[@URL][=WEIGHT],...``."""
        specs = ensemble.split(",") if isinstance(ensemble, str) else list(ensemble)
        stages, weights = [], []
        for spec in (s.strip() for s in specs):
            if not spec:
                continue
            head, eq, tail = spec.rpartition("=")
            weight = 1.0
            if eq:
                try:
                    weight = float(tail)
                except ValueError:
                    raise ConfigError(
                        f"--ensemble '{spec}': the weight after '=' must be a "
                        "number, e.g. openai:gpt-4o-mini=2"
                    ) from None
                spec = head
            teacher, mark, url = spec.partition("@http")
            stages.append(Stage(teacher, "http" + url if mark else None))
            weights.append(weight)
        return cls(tuple(stages), tuple(weights), combine or "mean")

    def mix(self, dists: Sequence[tuple[float, Sequence[float]]]) -> list[float]:
        """Combine (weight, probs) pairs into one distribution over the labels."""
        total = sum(w for w, _ in dists)
        k = len(dists[0][1])
        if self.combine == "mean":
            return [sum(w * p[i] for w, p in dists) / total for i in range(k)]
        logs = [sum(w * math.log(max(p[i], _FLOOR)) for w, p in dists) / total for i in range(k)]
        top = max(logs)
        raw = [math.exp(x - top) for x in logs]
        norm = sum(raw)
        return [x / norm for x in raw]


# -- labeling -------------------------------------------------------------------------------


class EnsembleRun:
    """The ensemble strategy (labeler/setups.py): every member labels every row, at once.

    `rows()` gives a fresh pass over the input per member; `make_labeler(member, teacher)`
    builds each member's `Labeler` (its own limiter: one member's rate limit never slows
    another).
    """

    def __init__(
        self, spec: EnsembleSpec, teachers: Sequence[Teacher], make_labeler: Callable[[int, Teacher], Labeler]
    ) -> None:
        self.spec = spec
        self.teachers = list(teachers)
        self.make_labeler = make_labeler
        self.members: list[StageReport] = []
        self._labelers: list[Labeler] = []
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True
        for lb in self._labelers:
            lb.stop()

    def stop_notice(self) -> str:
        """What a graceful stop waits for: every member's requests in flight."""
        if not self._labelers:
            return "no teacher has been asked yet"
        grace = max(lb.stop_grace_s for lb in self._labelers)
        return f"waiting up to {grace:g}s for the requests in flight to the {len(self._labelers)} teachers"

    async def aclose(self) -> None:
        for lb in self._labelers:
            await lb.aclose()
        self._labelers = []

    async def run(self, rows: Callable[[], Iterable[Row | Reject | Mapping[str, Any]]]) -> RunSummary:
        self._labelers = [self.make_labeler(i, t) for i, t in enumerate(self.teachers)]
        answered: set[tuple[str, int]] = set()
        failed: dict[tuple[str, int], str] = {}

        async def one(lb: Labeler) -> None:
            await lb.teacher.start()
            async for rec in lb.label(rows(), with_completions=False):
                where = (rec.row.source, rec.row.line)
                if rec.status in ("labeled", "cached"):
                    answered.add(where)
                elif rec.status == "failed":
                    failed[where] = rec.reason or "unknown"

        start = time.monotonic()
        await asyncio.gather(*(one(lb) for lb in self._labelers))
        self.members = [
            StageReport(i + 1, s.teacher, lb.summary)
            for i, (s, lb) in enumerate(zip(self.spec.stages, self._labelers, strict=True))
        ]
        total = RunSummary()
        first = self.members[0].summary
        total.rows, total.rejected = first.rows, first.rejected
        for m in self.members:
            s = m.summary
            for name in (
                "labeled",
                "cached",
                "skipped",
                "requests",
                "retries",
                "http_requests",
                "rate_limited",
                "overloaded",
                "prompt_tokens",
                "completion_tokens",
                "cached_tokens",
                "cost_usd",
                "unpriced",
            ):
                setattr(total, name, getattr(total, name) + getattr(s, name))
            total.interrupted |= s.interrupted
            total.budget_stopped |= s.budget_stopped
        for where, reason in failed.items():
            if where not in answered:  # no member answered it
                total.count_failure(reason)
        total.interrupted |= self._stopped
        total.elapsed_s = time.monotonic() - start  # the members ran at once
        total.stages = [_member_report(m) for m in self.members]
        return total


def _member_report(member: StageReport) -> dict[str, Any]:
    """A member's line of the summary: a stage's, named as a member, nothing passed on."""
    d = member.to_dict()
    del d["escalated"]
    return {"member": d.pop("stage"), **d}


# -- reading the ensemble back ---------------------------------------------------------------


class EnsemblePlanner(MultiPlanner):
    """Plans rows with the members' answers combined: a drop-in for `Planner` in the
    export, whose items carry the combined `answer` and, as `provenance`, who answered
    and what each member said."""

    kind = "ensemble"

    def __init__(
        self, task: Task, spec: EnsembleSpec, identities: Sequence[Mapping[str, Any]], store: Store
    ) -> None:
        if task.label_space is None:
            raise ConfigError(f"--ensemble needs a label task; {task.path} is '{task.output_kind}'")
        super().__init__(
            task, identities, store, [f"member {n + 1}: {st.teacher}" for n, st in enumerate(spec.stages)]
        )
        self.spec = spec

    def _fold(self, items: list[Item]) -> Item:
        answers: list[tuple[int, Answer]] = [
            (n, read_answer(self.task, item.completion))
            for n, item in enumerate(items)
            if item.status == CACHED and item.completion is not None
        ]
        for n, _ in answers:
            self.usage[n].add(items[n])
        if not answers:
            return items[0]  # rejected, or no member answered: missing, as in any export
        valid = [(n, a) for n, a in answers if a.soft is not None and a.soft.valid]
        chosen = items[(valid or answers)[0][0]]
        combined = self.answer(answers)
        chosen.answer = combined
        chosen.provenance = {
            "teacher": "ensemble: " + ", ".join(s.teacher for s in self.spec.stages),
            "ensemble": [self._member(n, a) for n, a in answers],
        }
        return chosen

    def answer(self, answers: Sequence[tuple[int, Answer]]) -> Answer:
        """The members' answers (by member index) as one answer."""
        space = self.task.label_space
        assert space is not None
        valid = [(n, a.soft) for n, a in answers if a.soft is not None and a.soft.valid]
        if not valid:
            return answers[0][1]  # nobody named a label: invalid, as each member's is
        weights = self.spec.weights
        probs = self.spec.mix([(weights[n], s.probs) for n, s in valid])
        outside = sum(weights[n] * s.outside for n, s in valid) / sum(weights[n] for n, _ in valid)
        soft = SoftLabel(tuple(probs), outside, "ensemble", any(s.ambiguous for _, s in valid))
        label = soft.label(space)
        conf = measure(probs, agreement=agreement([a.label for _, a in answers], label))
        return Answer(label or "", label, soft, conf, valid=label is not None)

    def _member(self, n: int, answer: Answer) -> dict[str, Any]:
        soft = answer.soft if answer.label is not None else None
        return {
            "member": n + 1,
            "teacher": self.spec.stages[n].teacher,
            "weight": self.spec.weights[n],
            "label": answer.label,
            "valid": answer.valid,
            "soft_label": list(soft.probs) if soft else None,
        }


__all__ = ["COMBINE", "EnsemblePlanner", "EnsembleRun", "EnsembleSpec"]
