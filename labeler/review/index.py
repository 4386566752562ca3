"""The rows a reviewer walks through, most uncertain first, held in memory.

Built once when the page starts: every input row is rendered and keyed as a run does and
its answer read from the store (nothing is sent). The page then asks for one filtered page
of rows at a time, so a store of 100,000 answers costs the browser 50 rows per request.
Human decisions are mirrored here as they are committed, so counts stay exact without
re-reading the store.

Where several teachers answer (an ensemble's members, a cascade's stages), each row also
carries what every answering teacher said, and the rows whose teachers name different
labels come first: a person settles a disagreement better than any confidence measure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from labeler.answer import read_answer
from labeler.errors import ConfigError
from labeler.human import human_labels
from labeler.inputs import Reject, Row
from labeler.plan import REJECTED, Planner
from labeler.store import Store
from labeler.task import Task
from labeler.verify.stage import VerifyStage, answers_of

INVALID = "(invalid)"  # the label filter's name for answers that are no label of the task
# queued: by a cascade ending in `human`; disagree: an ensemble's or cascade's teachers
STATUSES = ("all", "todo", "done", "queued", "disagree")
MAX_PAGE = 200


@dataclass(slots=True)
class ReviewItem:
    """One row as the page shows it; `certainty` orders the queue (lowest first).

    `votes` (several teachers only): each answering member's or stage's teacher and
    label; `disagree` when they name different labels; `agreement` the ensemble's share
    of members naming its label (its Confidence.agreement), None for one teacher."""

    key: str
    row_id: str
    fields: dict[str, str]
    label: str | None
    probs: tuple[float, ...] | None
    certainty: float
    human: str | None = None
    queued: bool = False  # a cascade passed it on past its last teacher, to a person
    votes: list[dict[str, Any]] | None = None
    disagree: bool = False
    agreement: float | None = None
    # a generation row (--samples/--verify): every answer with its verdict; `human` is
    # then the text of the answer a person picked
    samples: list[dict[str, Any]] | None = None
    haystack: str = field(default="", repr=False)

    @property
    def pick(self) -> int | None:
        """Which sample a person picked (the first with the picked text)."""
        if self.samples is None or self.human is None:
            return None
        return next((s["sample"] for s in self.samples if s["text"] == self.human), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "id": self.row_id,
            "fields": self.fields,
            "label": self.label,
            "probs": self.probs,
            "confidence": round(self.certainty, 4),
            "human": self.human,
            "queued": self.queued,
            "votes": self.votes,
            "disagree": self.disagree,
            "agreement": None if self.agreement is None else round(self.agreement, 4),
            "samples": self.samples,
            "pick": self.pick,
        }

    def rank(self) -> tuple[bool, bool, float, bool, float]:
        """The queue's order: rows a cascade queued for a person, then rows whose
        teachers disagree (least agreement first), then invalid answers, then the rest;
        lowest certainty first within each."""
        spread = (self.agreement or 0.0) if self.disagree else 0.0
        return (not self.queued, not self.disagree, spread, self.label is not None, self.certainty)


@dataclass(frozen=True, slots=True)
class ReviewQuery:
    """One page request: filters, then a window of the filtered queue."""

    label: str | None = None  # teacher label, INVALID, or None for any
    min_conf: float | None = None
    max_conf: float | None = None
    text: str = ""
    status: str = "all"
    offset: int = 0
    limit: int = 50

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ConfigError(f"status '{self.status}': expected one of {', '.join(STATUSES)}")
        if self.offset < 0 or not 1 <= self.limit <= MAX_PAGE:
            raise ConfigError(f"offset must be >= 0 and limit in 1..{MAX_PAGE}")


class ReviewIndex:
    """The review queue of one (task, teacher, input): ordered rows plus decisions; the
    rows a cascade queued for a person first, then those its teachers disagree on, then
    the most uncertain (`ReviewItem.rank`)."""

    def __init__(self, task: Task, items: list[ReviewItem], *, missing: int = 0) -> None:
        self.task = task
        self.labels: tuple[str, ...] = tuple(task.labels)
        items.sort(key=ReviewItem.rank)  # stable
        self.items = items
        self.by_key = {it.key: it for it in items}
        self.missing = missing
        self.reviewed = sum(1 for it in items if it.human is not None)
        self.queued = sum(1 for it in items if it.queued)
        self.disagree = sum(1 for it in items if it.disagree)

    def page(self, q: ReviewQuery) -> dict[str, Any]:
        """The rows of one page, how many match the filters, and the overall progress."""
        needle = q.text.strip().lower()
        if not (
            needle or q.label or q.min_conf is not None or q.max_conf is not None or q.status != "all"
        ):  # the whole queue: no scan
            window = self.items[q.offset : q.offset + q.limit]
            return {
                "rows": [it.to_json() for it in window],
                "matched": len(self.items),
                "offset": q.offset,
                "limit": q.limit,
                "reviewed": self.reviewed,
                "total": len(self.items),
            }
        lo = -1.0 if q.min_conf is None else q.min_conf
        hi = 2.0 if q.max_conf is None else q.max_conf
        want_label = q.label or None
        matched = 0
        rows: list[dict[str, Any]] = []
        end = q.offset + q.limit
        for it in self.items:
            if want_label is not None and (it.label or INVALID) != want_label:
                continue
            if not lo <= it.certainty <= hi:
                continue
            if q.status == "todo" and it.human is not None:
                continue
            if q.status == "done" and it.human is None:
                continue
            if q.status == "queued" and not it.queued:
                continue
            if q.status == "disagree" and not it.disagree:
                continue
            if needle and needle not in it.haystack:
                continue
            if q.offset <= matched < end:
                rows.append(it.to_json())
            matched += 1
        return {
            "rows": rows,
            "matched": matched,
            "offset": q.offset,
            "limit": q.limit,
            "reviewed": self.reviewed,
            "total": len(self.items),
        }

    def decide(self, key: str, label: str | None) -> ReviewItem:
        """Mirror a committed decision (None: taken back)."""
        item = self.by_key[key]
        if (item.human is None) != (label is None):
            self.reviewed += 1 if label is not None else -1
        item.human = label
        return item


def build_index(
    task: Task,
    identity: dict[str, Any],
    rows: Iterable[Row | Reject],
    store: Store,
    *,
    chunk: int = 512,
    planner: Any = None,
    answers: bool = False,
    checker: VerifyStage | None = None,
) -> ReviewIndex:
    """Every labeled row of the input with its answer; rows without one are counted.
    `planner` replaces the plain `Planner` where several teachers answer (a cascade's
    `CascadePlanner`, whose items say which rows await a person; an ensemble's
    `EnsemblePlanner`, whose items carry the members' combined answer). A decision is
    keyed like the item the planner gives, the one the export looks human labels up by.

    With `answers` (a generation template's run with --samples or --verify), each row
    shows every answer with its verdict from `checker` (stored verdicts are read, missing
    ones made and stored, as an export does), fewest passing answers first, and a
    decision is the text of the answer a person picks."""
    if not answers and (task.output_kind != "label" or task.label_space is None):
        raise ConfigError(
            f"review needs a label task, or answers to pick from (--samples N or --verify "
            f"SPEC); {task.path} is '{task.output_kind}'"
        )
    items: list[ReviewItem] = []
    missing = 0
    planner = planner or Planner(task, identity, store, failures=False, single_answers=True)
    for planned in planner.plan_rows(rows, chunk):
        if answers:
            found, missed = _generated(task, planned, checker)
            items += found
            missing += missed
            continue
        for item in planned:
            if item.status == REJECTED:
                continue
            if item.completion is None:
                missing += 1
                continue
            row = item.row
            answer = item.answer or read_answer(task, item.completion)
            conf = answer.confidence
            certainty = 0.0 if conf is None else conf.max_prob
            if conf is not None and conf.agreement is not None:
                certainty = min(certainty, conf.agreement)  # sampled: disagreement first
            shown = {
                name: "" if row.data.get(name) is None else str(row.data.get(name)) for name in task.fields
            }
            votes = _votes(item.provenance)
            items.append(
                ReviewItem(
                    str(item.key),
                    row.id,
                    shown,
                    answer.label,
                    tuple(round(p, 4) for p in answer.soft.probs) if answer.soft else None,
                    certainty,
                    haystack=" ".join(shown.values()).lower(),
                    queued=bool(item.provenance and item.provenance.get("awaiting_human")),
                    votes=votes,
                    disagree=_disagree(votes),
                    agreement=conf.agreement if conf is not None and votes else None,
                )
            )
    decided = human_labels(store, [it.key for it in items])
    for it in items:
        if it.key in decided:
            it.human = decided[it.key].label
    return ReviewIndex(task, items, missing=missing)


def _generated(task: Task, planned: list[Any], checker: VerifyStage | None) -> tuple[list[ReviewItem], int]:
    """One chunk's generation rows: each answer with its verdict (none without a
    checker); the share of passing answers orders them."""
    heads = [i for i in planned if i.variant == 0 and i.status != REJECTED]
    answered = [i for i in heads if i.completion is not None and i.key is not None]
    checked = checker.check([(i.row.data, str(i.key), i.completion) for i in answered]) if checker else None
    items = []
    for n, item in enumerate(answered):
        texts = answers_of(item.completion)
        verdicts = checked[n].verdicts if checked is not None else [None] * len(texts)
        kept = set(checked[n].kept) if checked is not None else set()
        samples = [
            {
                "sample": i,
                "text": text,
                "status": None if v is None else v.status,
                "score": None if v is None or v.score is None else round(v.score, 4),
                "detail": None if v is None else v.detail,
                "kept": i in kept,
            }
            for i, (text, v) in enumerate(zip(texts, verdicts, strict=True))
        ]
        passed = sum(1 for v in verdicts if v is not None and v.passed)
        shown = {
            name: "" if item.row.data.get(name) is None else str(item.row.data.get(name))
            for name in task.fields
        }
        items.append(
            ReviewItem(
                str(item.key),
                item.row.id,
                shown,
                None,
                None,
                passed / len(texts) if texts else 0.0,
                samples=samples,
                haystack=" ".join([*shown.values(), *texts]).lower(),
            )
        )
    return items, len(heads) - len(answered)


def _votes(provenance: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """What each answering teacher said, from an ensemble's or a cascade's provenance."""
    if not provenance:
        return None
    steps = provenance.get("ensemble") or provenance.get("cascade")
    if not steps:
        return None
    return [
        {
            "teacher": s["teacher"],
            "label": s["label"],
            "by": f"member {s['member']}" if "member" in s else f"stage {s['stage']}",
        }
        for s in steps
    ]


def _disagree(votes: list[dict[str, Any]] | None) -> bool:
    """Two answering teachers name different labels (an invalid answer names none)."""
    return len({v["label"] for v in votes or () if v["label"] is not None}) > 1
