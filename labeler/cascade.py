"""Teacher cascades: the cheap teacher answers every row, a dearer one only the doubtful.

    rows ─► stage 1 (teacher A) ─► sure? ──yes──► label
                                     │ no, invalid or failed
                                     ▼
                      stage 2 (teacher B) ─► sure? ─► … ─► last stage ─► sure? ─► label
                                                                         │ no (with `human`)
                                                                         ▼
                                                             queued for `labeler review`

Each stage is an ordinary labeling pass (`Labeler`) with its own teacher over the same
store, so its answers are cached under that teacher's own key: changing a threshold or
appending a stage sends only what no stage has answered yet, and a kill -9 resumes every
stage (a rerun replays the stages; what is stored is read, not asked again).

Which stage a row ends at is a pure function of the input, the store and the
`CascadeSpec` (`CascadePlanner`), so the export, like every export, never depends on the
order answers arrived in.

A cascade may end in ``human``: the rows its last teacher is unsure of (or answers with
no valid label) go to no teacher; they wait in the store for a person on the review page,
and `CascadePlanner` marks them so the export can hold them out until a person decides.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

from labeler.answer import Answer, read_answer
from labeler.batch.runner import BatchRunner, BatchSummary
from labeler.completion import Completion
from labeler.confidence import DISTRIBUTION_MEASURES, LOWER_IS_BETTER
from labeler.engine import Labeler
from labeler.errors import ConfigError
from labeler.human import human_labels
from labeler.inputs import Reject, Row
from labeler.options import HUMAN  # a cascade's last stage: a person on the review page
from labeler.plan import CACHED, CHUNK, FAILED, Item, Planner
from labeler.store import Store
from labeler.summary import Record, RunSummary
from labeler.task import Task
from labeler.teachers.base import Teacher

MEASURES = DISTRIBUTION_MEASURES  # what a stage can be thresholded on
_URL_MARK = "@http"


class Gate(Protocol):
    """`--verify` in a cascade (labeler/verify/gate.py): a row none of whose answers
    passes goes on to the next teacher, as an unsure one does."""

    def fails(self, data: Mapping[str, Any], key: str, completion: Completion) -> bool:
        """Whether no answer of this stored completion passes (the export's question)."""
        ...

    async def escalate(
        self,
        stage: int,
        identity: Mapping[str, Any],
        answered: Sequence[tuple[Row, str, Completion]],
        spent_usd: float = 0.0,
    ) -> list[Row]:
        """The rows of a stage's answered ones that no answer passes (the run's)."""
        ...


@dataclass(frozen=True)
class Stage:
    """One teacher of a cascade: ``PROVIDER:MODEL``, and its own endpoint if it has one."""

    teacher: str
    base_url: str | None = None


@dataclass(frozen=True)
class CascadeSpec:
    """The teacher stages, the threshold of each stage but the last, and the confidence
    measure; with `human`, a person is the last stage and the last teacher has a threshold
    too.

    A row leaves stage i for stage i+1 when its answer failed, is invalid, or is less
    confident than ``thresholds[i]``: ``max_prob`` or ``margin`` below it, or ``entropy``
    (nats) above it. Past the last teacher, only an answered row goes on to a person (a
    failure is asked again by the next run, not queued).
    """

    stages: tuple[Stage, ...]
    thresholds: tuple[float, ...]
    measure: str = "max_prob"
    human: bool = False

    def __post_init__(self) -> None:
        n = len(self.stages) + self.human
        if n < 2 or not self.stages:
            raise ConfigError(
                "--cascade needs at least two teachers, comma-separated (or a teacher and `human`)"
            )
        if len(self.thresholds) != n - 1:
            raise ConfigError(
                f"--escalate-below: {n} stages take "
                + ("one threshold" if n == 2 else f"one threshold or {n - 1} (one per stage but the last)")
                + f", got {len(self.thresholds)}"
            )
        if self.measure not in MEASURES:
            raise ConfigError(f"--escalate-on '{self.measure}': expected one of {', '.join(MEASURES)}")
        for t in self.thresholds:
            bad = not math.isfinite(t) or t < 0 or (self.measure != "entropy" and t > 1)
            if bad:
                span = ">= 0 nats" if self.measure == "entropy" else "in [0, 1]"
                raise ConfigError(f"--escalate-below {t:g}: a {self.measure} threshold must be {span}")

    @classmethod
    def parse(
        cls,
        cascade: str | Sequence[str],
        escalate_below: str | float | Sequence[float] | None,
        measure: str | None = None,
    ) -> CascadeSpec:
        """From the flags: ``a:m1,b:m2[@URL]`` and ``0.9`` or ``0.9,0.8``."""
        specs = cascade.split(",") if isinstance(cascade, str) else list(cascade)
        names = [s.strip() for s in specs if s.strip()]
        human = bool(names) and names[-1] == HUMAN
        if human:
            names.pop()
        if HUMAN in names:
            raise ConfigError(f"--cascade '{','.join(specs)}': '{HUMAN}' can only be the last stage")
        stages = tuple(_stage(s) for s in names)
        n = len(stages) + human
        if escalate_below is None:
            raise ConfigError("--cascade needs --escalate-below CONF (one, or one per stage but the last)")
        if isinstance(escalate_below, str):
            try:
                values = [float(x) for x in escalate_below.split(",") if x.strip()]
            except ValueError:
                raise ConfigError(
                    f"--escalate-below '{escalate_below}': expected numbers, e.g. 0.9 or 0.9,0.8"
                ) from None
        elif isinstance(escalate_below, int | float):
            values = [float(escalate_below)]
        else:
            values = [float(x) for x in escalate_below]
        if len(values) == 1 and n > 2:
            values *= n - 1
        return cls(stages, tuple(values), measure or "max_prob", human)

    def escalates(self, stage: int, answer: Answer | None) -> bool:
        """Whether a row answered so at `stage` (0-based) goes on to the next stage (past
        the last teacher: to a person, when the cascade ends in `human`)."""
        if stage >= len(self.stages) - (0 if self.human else 1):
            return False
        if answer is None or not answer.valid:
            return True
        conf = answer.confidence
        if conf is None:  # a free-text or json answer: only invalid ones escalate
            return False
        value: float = getattr(conf, self.measure)
        threshold = self.thresholds[stage]
        return value > threshold if self.measure in LOWER_IS_BETTER else value < threshold


def _stage(spec: str) -> Stage:
    teacher, mark, url = spec.partition(_URL_MARK)
    return Stage(teacher, "http" + url if mark else None)


def reached(
    spec: CascadeSpec, answers: Sequence[Answer | None], failed: Callable[[int], bool] | None = None
) -> int:
    """How many stages a row reaches under `spec`, given each stage's answer (None: none);
    `failed(stage)` says whether that stage's answers all fail `--verify`, which passes
    the row on too (to another teacher only)."""
    for stage, answer in enumerate(answers):
        if spec.escalates(stage, answer):
            continue
        if failed is not None and stage < len(spec.stages) - 1 and failed(stage):
            continue
        return stage + 1
    return len(answers)


def queued_for_human(spec: CascadeSpec, answers: Sequence[Answer | None]) -> bool:
    """Whether a row waits for a person: the cascade ends in `human`, the row reaches the
    last teacher, and that teacher's stored answer passes it on."""
    last = len(spec.stages) - 1
    return (
        spec.human
        and reached(spec, answers) == len(spec.stages)
        and answers[last] is not None
        and spec.escalates(last, answers[last])
    )


def final_stage(
    spec: CascadeSpec, answers: Sequence[Answer | None], failed: Callable[[int], bool] | None = None
) -> int | None:
    """The stage (0-based) a row's label comes from: the last valid answer among the
    stages it reaches, else the last answer at all; None when no reached stage answered."""
    chosen: int | None = None
    for stage in range(reached(spec, answers, failed)):
        answer = answers[stage]
        if answer is not None and (answer.valid or chosen is None or not answers[chosen].valid):  # type: ignore[union-attr]
            chosen = stage
    return chosen


# -- labeling -------------------------------------------------------------------------------


@dataclass
class StageReport:
    """One stage of a run: what it was asked, what it answered, what it passed on."""

    stage: int
    teacher: str
    summary: RunSummary
    escalated: int = 0

    def to_dict(self) -> dict[str, Any]:
        s = self.summary
        return {
            "stage": self.stage,
            "teacher": self.teacher,
            "rows": s.rows,
            "labeled": s.labeled,
            "cached": s.cached,
            "failed": s.failed,
            "escalated": self.escalated,
            "requests": s.requests,
            "cost_usd": None if s.unpriced else round(s.cost_usd, 6),
            "elapsed_s": round(s.elapsed_s, 3),
        }


@dataclass
class HumanQueue:
    """A cascade's last stage when it is a person: the rows queued for `labeler review`,
    and how many of them a person has decided."""

    stage: int
    rows: int = 0
    decided: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "teacher": HUMAN,
            "rows": self.rows,
            "labeled": self.decided,
            "awaiting": self.rows - self.decided,
        }


class CascadeRun:
    """The cascade strategy (labeler/setups.py): one labeling pass per stage over what is left.

    `make_labeler(stage, teacher, budget_left)` builds each stage's `Labeler` (the job's
    limits, store and rejects), or its `BatchRunner` for a stage sent through the
    provider's batch API, so a stage is labeled exactly as a plain run would be.
    Rows escalated by stage i are held in memory (a `Row` each) until stage i+1 reads them.
    """

    def __init__(
        self,
        task: Task,
        spec: CascadeSpec,
        teachers: Sequence[Teacher],
        make_labeler: Callable[[int, Teacher, float | None], Labeler | BatchRunner],
        budget_usd: float | None = None,
        store: Store | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.task = task
        self.store = store
        self.gate = gate
        self.spec = spec
        self.teachers = list(teachers)
        self.make_labeler = make_labeler
        self.budget_usd = budget_usd
        self.stages: list[StageReport] = []
        self.human: HumanQueue | None = None  # the queue for a person, when ends in human
        self._current: Labeler | BatchRunner | None = None  # the stage under way
        self._stage = 0  # its index
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True
        if self._current is not None:
            self._current.stop()

    def stop_notice(self) -> str:
        """What a graceful stop waits for: the stage under way, in its own words."""
        current = self._current
        if current is None:
            return "no stage is under way; no further stage starts"
        return (
            f"stage {self._stage + 1} of {len(self.teachers)} "
            f"({self.spec.stages[self._stage].teacher}): {current.stop_notice()}; "
            "no further stage starts"
        )

    async def aclose(self) -> None:
        if self._current is not None:
            await self._current.aclose()

    async def run(self, rows: Callable[[], Iterable[Row | Reject | Mapping[str, Any]]]) -> RunSummary:
        """Run the stages in turn; `rows()` gives a fresh pass over the input (a batch
        stage 1 reads it twice: once to submit, once to see what to pass on)."""
        pending: Iterable[Row | Reject | Mapping[str, Any]] = rows()
        spent = 0.0
        halted = False
        for i, teacher in enumerate(self.teachers):
            budget = None if self.budget_usd is None else max(0.0, self.budget_usd - spent)
            lb = self.make_labeler(i, teacher, budget)
            self._current, self._stage = lb, i
            report = StageReport(i + 1, self.spec.stages[i].teacher, lb.summary)
            try:
                if isinstance(lb, Labeler):
                    escalated, kept = await self._live_pass(i, lb, pending)
                else:
                    escalated, kept = await self._batch_pass(i, lb, pending, rows() if i == 0 else pending)
            finally:
                self._current = None
                if isinstance(lb, Labeler):
                    await lb.aclose()
            if self.gate is not None and i < len(self.teachers) - 1 and not self._stopped:
                escalated += await self.gate.escalate(i, teacher.identity, kept, spent + lb.summary.cost_usd)
            report.escalated = len(escalated)
            self.stages.append(report)
            spent += lb.summary.cost_usd
            if self._stopped or lb.summary.outcome in ("interrupted", "budget", "pending"):
                halted = True
                break
            if i == len(self.teachers) - 1 and self.spec.human:
                self.human = await asyncio.to_thread(self._human_queue, escalated)
            if not escalated:
                break
            pending = escalated
        if self.spec.human and self.human is None and not halted:
            self.human = HumanQueue(len(self.spec.stages) + 1)  # no row got past the teachers
        return self.summary()

    def _human_queue(self, queued: list[Row]) -> HumanQueue:
        """The rows the last teacher passed on, and how many a person has decided: read
        through `CascadePlanner`, so the keys are those the review page and export use."""
        out = HumanQueue(len(self.spec.stages) + 1, rows=len(queued))
        if not queued or self.store is None:
            return out
        planner = CascadePlanner(self.task, self.spec, [t.identity for t in self.teachers], self.store)
        keys = [
            str(item.key)
            for chunk in planner.plan_rows(queued)
            for item in chunk
            if item.provenance is not None and item.provenance.get("awaiting_human")
        ]
        out.decided = len(human_labels(self.store, keys))
        return out

    async def _live_pass(
        self, stage: int, lb: Labeler, rows: Iterable[Row | Reject | Mapping[str, Any]]
    ) -> tuple[list[Row], list[tuple[Row, str, Completion]]]:
        """The rows this stage passes on, and those it answered and keeps (for `gate`)."""
        await lb.teacher.start()
        escalated: list[Row] = []
        kept: list[tuple[Row, str, Completion]] = []
        async for rec in lb.label(rows, with_completions=True):
            if self._escalates(stage, rec):
                escalated.append(rec.row)
            elif self.gate is not None and rec.completion is not None and rec.key is not None:
                kept.append((rec.row, rec.key, rec.completion))
        return escalated, kept

    async def _batch_pass(
        self,
        stage: int,
        runner: BatchRunner,
        rows: Iterable[Row | Reject | Mapping[str, Any]],
        again: Iterable[Row | Reject | Mapping[str, Any]],
    ) -> tuple[list[Row], list[tuple[Row, str, Completion]]]:
        """A stage through the provider's batch API (`BatchRunner`); what it passes on is
        read from the store once its batches have ended (nothing while they are pending)."""
        summary = await runner.run(rows)
        if summary.outcome == "pending" or self.store is None:
            return [], []
        return await asyncio.to_thread(self._escalated_in_store, stage, again)

    def _escalated_in_store(
        self, stage: int, rows: Iterable[Row | Reject | Mapping[str, Any]]
    ) -> tuple[list[Row], list[tuple[Row, str, Completion]]]:
        # max_attempts=0: every stored failure counts (FAILED), as a live failure escalates
        planner = Planner(self.task, self.teachers[stage].identity, self.store, failures=True, max_attempts=0)
        escalated: list[Row] = []
        kept: list[tuple[Row, str, Completion]] = []
        for chunk in planner.plan_rows(rows):
            for item in chunk:
                if self._stored_escalates(stage, item):
                    escalated.append(item.row)
                elif item.status == CACHED and item.completion is not None and item.key is not None:
                    kept.append((item.row, item.key, item.completion))
        return escalated, kept

    def _stored_escalates(self, stage: int, item: Item) -> bool:
        if item.status == FAILED:
            return stage < len(self.spec.stages) - 1
        if item.status != CACHED or item.completion is None:
            return False  # rejected, or not answered (yet)
        return self.spec.escalates(stage, read_answer(self.task, item.completion))

    def _escalates(self, stage: int, rec: Record) -> bool:
        if rec.status == "failed":
            return stage < len(self.spec.stages) - 1
        if rec.status not in ("labeled", "cached") or rec.completion is None:
            return False  # rejected input is rejected by every stage; skipped is not asked
        return self.spec.escalates(stage, read_answer(self.task, rec.completion))

    def summary(self) -> RunSummary:
        """The run as one summary: stage 1's rows, every stage's spend, and `stages`.

        A row counts as failed only where its last stage failed it (an earlier failure
        was escalated, not lost).
        """
        batched = [st.summary for st in self.stages if isinstance(st.summary, BatchSummary)]
        total: RunSummary = BatchSummary() if batched else RunSummary()
        if not self.stages:
            return total
        if isinstance(total, BatchSummary):
            for b in batched:
                total.pending += b.pending
                total.unfinished += b.unfinished
                total.batches_created += b.batches_created
                total.batches_adopted += b.batches_adopted
                total.batches_collected += b.batches_collected
                total.batches_live += b.batches_live
        first = self.stages[0].summary
        total.rows, total.rejected = first.rows, first.rejected
        for n, st in enumerate(self.stages):
            s = st.summary
            total.labeled += s.labeled
            total.cached += s.cached
            total.skipped += s.skipped
            for name in (
                "requests",
                "retries",
                "http_requests",
                "rate_limited",
                "overloaded",
                "prompt_tokens",
                "completion_tokens",
                "cached_tokens",
                "unpriced",
            ):
                setattr(total, name, getattr(total, name) + getattr(s, name))
            total.cost_usd += s.cost_usd
            total.elapsed_s += s.elapsed_s
            total.interrupted |= s.interrupted
            total.budget_stopped |= s.budget_stopped
            last = n == len(self.spec.stages) - 1
            if last:
                for reason, k in s.failures_by_reason.items():
                    total.count_failure(reason, k)
        total.interrupted |= self._stopped
        total.stages = [st.to_dict() for st in self.stages]
        if self.human is not None:
            total.stages.append(self.human.to_dict())
        return total


# -- reading the cascade back ----------------------------------------------------------------


@dataclass
class TeacherUsage:
    """What one stage (or ensemble member) was paid for, over the exported input: the rows
    it answered, their tokens, summed answer time and cost as stored."""

    name: str
    rows: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    teacher_s: float = 0.0
    cost_usd: float = 0.0
    unpriced: int = 0  # answers stored without a cost: the teacher's spend is then unknown
    _keys: list[str] = field(default_factory=list, repr=False)

    def add(self, item: Item) -> None:
        c = item.completion
        assert c is not None and item.key is not None
        self.rows += 1
        self.prompt_tokens += c.usage.prompt_tokens
        self.completion_tokens += c.usage.completion_tokens
        self.teacher_s += c.latency_s
        self._keys.append(item.key)

    def settle(self, store: Store) -> None:
        """Add the cost of the answers counted since the last call (once per chunk)."""
        if self._keys:
            self.cost_usd += store.cost_of(self._keys)
            self.unpriced += store.unpriced(self._keys)
            self._keys = []

    def to_dict(self) -> dict[str, Any]:
        return {
            "teacher": self.name,
            "rows": self.rows,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "teacher_s": round(self.teacher_s, 3),
            "cost_usd": None if self.unpriced else round(self.cost_usd, 6),
        }


class MultiPlanner:
    """Plans rows against several teachers' stored answers (a cascade's stages, an
    ensemble's members) and folds each row's items, one per teacher, into one item: the
    export's drop-in for `Planner`, so filters, human labels and splits work unchanged."""

    kind: str | None = None

    def __init__(
        self, task: Task, identities: Sequence[Mapping[str, Any]], store: Store, names: Sequence[str]
    ) -> None:
        if task.others:
            raise ConfigError(
                f"{task.path}: a prompt-ensemble template (variants, "
                "example_orders) cannot be used with --cascade or --ensemble yet"
            )
        self.task = task
        self.identities = [dict(i) for i in identities]
        self.planners = [Planner(task, ident, store, failures=False) for ident in identities]
        self.store = store
        self.usage = [TeacherUsage(name) for name in names]

    def plan_rows(
        self, rows: Iterable[Row | Reject | Mapping[str, Any]], chunk: int = CHUNK
    ) -> Iterator[list[Item]]:
        it = iter(rows)
        while batch := list(islice(it, chunk)):
            yield self.plan(batch)

    def plan(self, chunk: Sequence[Row | Reject | Mapping[str, Any]]) -> list[Item]:
        per_teacher = [p.plan(chunk) for p in self.planners]
        items = [self._fold([t[i] for t in per_teacher]) for i in range(len(chunk))]
        for usage in self.usage:
            usage.settle(self.store)
        return items

    def _fold(self, items: list[Item]) -> Item:
        raise NotImplementedError


class CascadePlanner(MultiPlanner):
    """Plans rows as the cascade ends them: each item carries the answer of its last
    answering stage, and its `provenance` every reached stage's label and soft label.

    A drop-in for `Planner` in the export: the same items, statuses and keys, so filters,
    human labels and splits work unchanged. The stage an item ends at is decided from
    the stored answers and the spec's thresholds alone. When the cascade ends in
    `human`, `provenance["awaiting_human"]` says whether the row is queued for a person.
    """

    kind = "cascade"

    def __init__(
        self,
        task: Task,
        spec: CascadeSpec,
        identities: Sequence[Mapping[str, Any]],
        store: Store,
        gate: Gate | None = None,
    ) -> None:
        super().__init__(
            task, identities, store, [f"stage {n + 1}: {st.teacher}" for n, st in enumerate(spec.stages)]
        )
        self.spec = spec
        self.gate = gate

    def _fold(self, items: list[Item]) -> Item:
        """The cascade replayed on one row's stored answers."""
        answers = [
            read_answer(self.task, i.completion) if i.status == CACHED and i.completion is not None else None
            for i in items
        ]
        failed = self._failed(items)
        for stage in range(reached(self.spec, answers, failed)):
            if answers[stage] is not None:
                self.usage[stage].add(items[stage])
        n = final_stage(self.spec, answers, failed)
        if n is None:
            return items[0]  # rejected, or no stage has answered: missing, as in any export
        chosen = items[n]
        trail = [
            self._step(stage, a)
            for stage, a in enumerate(answers[: reached(self.spec, answers, failed)])
            if a is not None
        ]
        chosen.provenance = {"cascade_stage": n + 1, "teacher": self.spec.stages[n].teacher, "cascade": trail}
        if self.spec.human:  # the export makes it false once a person has decided
            chosen.provenance["awaiting_human"] = queued_for_human(self.spec, answers)
        return chosen

    def _failed(self, items: list[Item]) -> Callable[[int], bool] | None:
        """Whether a stage's stored answers all fail `--verify` (None: no verifier);
        asked only of the stages the replay reaches, each once."""
        gate = self.gate
        if gate is None:
            return None
        seen: dict[int, bool] = {}

        def failed(stage: int) -> bool:
            if stage not in seen:
                item = items[stage]
                seen[stage] = (
                    item.status == CACHED
                    and item.completion is not None
                    and item.key is not None
                    and gate.fails(item.row.data, item.key, item.completion)
                )
            return seen[stage]

        return failed

    def _step(self, stage: int, answer: Answer) -> dict[str, Any]:
        soft = answer.soft if answer.label is not None else None
        conf = answer.confidence
        return {
            "stage": stage + 1,
            "teacher": self.spec.stages[stage].teacher,
            "label": answer.label,
            "valid": answer.valid,
            "soft_label": list(soft.probs) if soft else None,
            "confidence": getattr(conf, self.spec.measure) if conf and soft else None,
        }


__all__ = [
    "HUMAN",
    "MEASURES",
    "CascadePlanner",
    "CascadeRun",
    "CascadeSpec",
    "Gate",
    "HumanQueue",
    "Stage",
    "StageReport",
    "TeacherUsage",
    "final_stage",
    "queued_for_human",
    "reached",
]
