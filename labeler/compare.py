"""`labeler compare`: how far two teachers agree on one input, read from the store.

Choosing a teacher (or checking that a cheap one can stand in for a dear one) starts with
both labeling the same rows and a look at where they differ. Every answer is already in
the store under its teacher's key, so the comparison sends nothing and costs nothing: it
plans the input once per teacher, reads each row's two answers, and reports the raw
agreement, Cohen's kappa (agreement beyond what the two label distributions give by
chance), the confusion of one teacher's labels against the other's, and what each
teacher's stored answers cost when they were paid for.

A row a teacher has not answered is counted, not sent: the report says how many each
lacks, and `labeler run TASK INPUT -t TEACHER` fills them in (from the same store, so the
comparison then finds them).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from labeler.answer import read_answers
from labeler.cascade import Stage
from labeler.errors import ConfigError, StoreError
from labeler.inputs import Reject, Row
from labeler.job import Job
from labeler.plan import CACHED, FAILED, REJECTED, Item, Planner, by_row
from labeler.store import Store

INVALID = "invalid"  # an answer outside the label space, as a confusion column
_CHUNK = 512


@dataclass
class TeacherCounts:
    """One teacher's side: what it answered of the input and what that cost."""

    teacher: str
    answered: int = 0
    invalid: int = 0  # answered, but not with a label of the task
    failed: int = 0  # a stored failure, final for now
    missing: int = 0  # never asked (or a transient failure that a rerun sends again)
    cost_usd: float | None = 0.0  # None: some answers were paid at no known price
    labels: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "teacher": self.teacher,
            "answered": self.answered,
            "invalid": self.invalid,
            "failed": self.failed,
            "missing": self.missing,
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 6),
            "labels": dict(self.labels),
        }


@dataclass
class Comparison:
    """Two teachers' labels on the rows both answered, and each one's counts."""

    task: str
    labels: tuple[str, ...]
    a: TeacherCounts
    b: TeacherCounts
    rows: int = 0  # input rows that rendered (rejects aside)
    rejected: int = 0
    both: int = 0  # rows both teachers answered (valid or not)
    agree: int = 0
    # confusion[i][j]: rows teacher A labeled labels[i] and teacher B labels[j]; the last
    # row and column are INVALID
    confusion: list[list[int]] = field(default_factory=list)

    @property
    def agreement(self) -> float | None:
        """Share of the rows both answered on which they gave the same label."""
        return self.agree / self.both if self.both else None

    @property
    def kappa(self) -> float | None:
        """Cohen's kappa over the rows both answered; None when undefined (no such rows,
        or both teachers always give the one same label, so chance explains everything)."""
        n = self.both
        if not n:
            return None
        k = len(self.confusion)
        row_sums = [sum(r) for r in self.confusion]
        col_sums = [sum(self.confusion[i][j] for i in range(k)) for j in range(k)]
        expected = sum(row_sums[i] * col_sums[i] for i in range(k)) / (n * n)
        if expected >= 1.0:
            return None
        return (self.agree / n - expected) / (1.0 - expected)

    def per_label(self) -> dict[str, dict[str, int]]:
        """For each label: rows A gave it, rows B gave it, rows both gave it."""
        names = (*self.labels, INVALID)
        k = len(names)
        return {
            names[i]: {
                "a": sum(self.confusion[i]),
                "b": sum(self.confusion[r][i] for r in range(k)),
                "both": self.confusion[i][i],
            }
            for i in range(k)
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "teachers": [self.a.teacher, self.b.teacher],
            "rows": self.rows,
            "rejected": self.rejected,
            "both_answered": self.both,
            "agree": self.agree,
            "agreement": _rounded(self.agreement),
            "kappa": _rounded(self.kappa),
            "labels": [*self.labels, INVALID],
            "confusion": [list(r) for r in self.confusion],
            "per_label": self.per_label(),
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
        }

    def to_table(self) -> str:
        """The report as the CLI prints it."""
        agreement = "n/a" if self.agreement is None else f"{self.agreement:.1%}"
        kappa = "n/a" if self.kappa is None else f"{self.kappa:.3f}"
        lines = [
            f"rows             {self.rows} ({self.both} answered by both, {self.rejected} rejected)",
            f"agreement        {agreement} ({self.agree} of {self.both})",
            f"cohen's kappa    {kappa}",
        ]
        for name, side in (("A", self.a), ("B", self.b)):
            cost = "cost unknown" if side.cost_usd is None else f"${side.cost_usd:.4f} paid"
            lines.append(
                f"teacher {name}        {side.teacher}: {side.answered} answered "
                f"({side.invalid} invalid), {side.failed} failed, {side.missing} not "
                f"answered; {cost}"
            )
        names = [*self.labels, INVALID]
        width = max(12, *(len(n) + 2 for n in names))
        lines.append("")
        lines.append("A \\ B".ljust(width) + "".join(n.rjust(width) for n in names))
        for name, counts in zip(names, self.confusion, strict=True):
            lines.append(name.ljust(width) + "".join(str(c).rjust(width) for c in counts))
        return "\n".join(lines)


def parse_teachers(specs: Sequence[str]) -> tuple[Stage, Stage]:
    """Two ``PROVIDER:MODEL[@URL]`` specs, as --cascade and --ensemble take them."""
    if len(specs) != 2:
        raise ConfigError(f"compare needs two teachers (-t A -t B), got {len(specs)}")
    stages = []
    for spec in specs:
        teacher, mark, url = spec.strip().partition("@http")
        stages.append(Stage(teacher, "http" + url if mark else None))
    if stages[0] == stages[1]:
        raise ConfigError(f"compare needs two different teachers, got {specs[0]} twice")
    return stages[0], stages[1]


@dataclass(frozen=True)
class _Pair:
    stages: tuple[Stage, Stage]


def compare(job: Job, teachers: Sequence[str]) -> Comparison:
    """Compare the stored answers of two teachers (``PROVIDER:MODEL[@URL]``; without @URL
    the job's base URL) over `job`'s input and task. Nothing is sent."""
    task = job.load_task()
    if task.output_kind != "label" or task.label_space is None:
        raise ConfigError(f"compare needs a label task; {task.path} is '{task.output_kind}'")
    pair = _Pair(parse_teachers(teachers))
    made = job.make_stage_teachers(pair)  # type: ignore[arg-type]
    if not job.store_path().exists():
        raise StoreError(
            f"{job.store_path()}: no such store; label the input with both teachers first (labeler run)"
        )
    labels = task.labels
    index = {label: i for i, label in enumerate(labels)}
    k = len(labels) + 1
    report = Comparison(
        str(task.path),
        labels,
        TeacherCounts(teachers[0]),
        TeacherCounts(teachers[1]),
        confusion=[[0] * k for _ in range(k)],
    )
    with Store(job.store_path(), readonly=True) as store:
        planners = [Planner(task, t.identity, store) for t in made]
        paid: list[list[str]] = [[], []]
        for chunk in _chunks(job.rows(task)):
            plans = [list(by_row(p.plan(chunk))) for p in planners]
            for forms_a, forms_b in zip(*plans, strict=True):
                if forms_a[0].status == REJECTED:
                    report.rejected += 1
                    continue
                report.rows += 1
                got = [
                    _label(task, forms, side, keys)
                    for forms, side, keys in zip((forms_a, forms_b), (report.a, report.b), paid, strict=True)
                ]
                got_a, got_b = got
                if got_a is None or got_b is None:
                    continue
                i, j = index.get(got_a, k - 1), index.get(got_b, k - 1)
                report.confusion[i][j] += 1
                report.both += 1
                report.agree += int(i == j)
        for side, keys in zip((report.a, report.b), paid, strict=True):
            side.cost_usd = None if store.unpriced(keys) else store.cost_of(keys)
    return report


def _label(task: Any, forms: list[Item], side: TeacherCounts, keys: list[str]) -> str | None:
    """One teacher's label for one row (INVALID for an answer outside the labels), or
    None when it has not answered, counting it on its side."""
    if any(f.status == FAILED for f in forms):
        side.failed += 1
        return None
    if not all(f.status == CACHED and f.completion is not None for f in forms):
        side.missing += 1
        return None
    keys.extend(f.key for f in forms if f.key is not None)
    answer = read_answers(task, [f.completion for f in forms if f.completion is not None])
    side.answered += 1
    if answer.label is None or not answer.valid:
        side.invalid += 1
        return INVALID
    side.labels[answer.label] = side.labels.get(answer.label, 0) + 1
    return answer.label


def _chunks(rows: Iterator[Row | Reject]) -> Iterator[list[Row | Reject]]:
    while batch := list(islice(rows, _CHUNK)):
        yield batch


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


__all__ = ["INVALID", "Comparison", "TeacherCounts", "compare", "parse_teachers"]
