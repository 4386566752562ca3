"""What a cascade costs and how good it is, from stored answers: `labeler estimate` and
`labeler eval` with `--cascade`.

Pricing: every row pays stage 1; stage k is paid for the share of rows that reach it, the
product of the earlier stages' escalation rates. A rate is measured where the store holds
that stage's answers (the share of them the thresholds pass on), else taken as given.

Quality: each stage's accuracy on the gold rows it answered, the cascade's (each row's
last answering stage, replayed with the current thresholds), and for each non-last stage
the threshold that reaches a target accuracy at least cost: the loosest one (fewest rows
passed on) whose accepted gold rows' accuracy has a Clopper–Pearson lower bound (95%) at
or above the target, the guarantee "Trust or Escalate" (Jung et al., ICLR 2025) gives a
cascaded judge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labeler.answer import Answer, read_answer
from labeler.cascade import HUMAN, CascadeSpec, final_stage, queued_for_human, reached
from labeler.errors import ConfigError
from labeler.estimate import Estimate, estimate
from labeler.evaluate import LOWER_IS_BETTER, clopper_pearson_lower, threshold_for_accuracy
from labeler.inputs import Reject, Row
from labeler.plan import CACHED, REJECTED, Planner
from labeler.pricing import PriceTable
from labeler.store import Store
from labeler.task import Task

if TYPE_CHECKING:
    from labeler.verify.judge import JudgeSpec

Rows = Iterable[Row | Reject | Mapping[str, Any]]


def stage_answers(
    task: Task, identities: Sequence[Mapping[str, Any]], store: Store, rows: Rows
) -> Iterator[tuple[Row, list[Answer | None]]]:
    """Every input row with each stage's stored answer (None: not answered)."""
    planners = [Planner(task, ident, store, failures=False) for ident in identities]
    chunks = planners[0].plan_rows(rows)
    for first in chunks:
        rest = [p.plan([i.row for i in first]) for p in planners[1:]]
        for n, item in enumerate(first):
            if item.status == REJECTED:
                continue
            stages = [item, *(r[n] for r in rest)]
            yield (
                item.row,
                [
                    read_answer(task, i.completion)
                    if i.status == CACHED and i.completion is not None
                    else None
                    for i in stages
                ],
            )


def measured_rates(spec: CascadeSpec, per_row: Iterable[Sequence[Answer | None]]) -> list[tuple[int, int]]:
    """Per stage that passes rows on (every teacher but the last, and the last too when a
    person follows it): (rows that reached it with a stored answer, rows it passed on)."""
    counts = [[0, 0] for _ in range(len(spec.stages) - 1 + spec.human)]
    for answers in per_row:
        for stage in range(min(reached(spec, answers), len(counts))):
            if answers[stage] is None:
                break
            counts[stage][0] += 1
            counts[stage][1] += spec.escalates(stage, answers[stage])
    return [(n, k) for n, k in counts]


@dataclass
class CascadeEstimate:
    """Expected cost of a cascade: each stage's full price times the share reaching it."""

    stages: list[dict[str, Any]] = field(default_factory=list)
    cost_usd: float | None = None
    last_alone_usd: float | None = None  # the last (dearest) teacher labeling every row

    def to_dict(self) -> dict[str, Any]:
        return {
            "stages": self.stages,
            "cost_usd": _round(self.cost_usd),
            "last_alone_usd": _round(self.last_alone_usd),
        }


def estimate_cascade(
    task: Task,
    spec: CascadeSpec,
    rows: Callable[[], Rows],
    prices: PriceTable | None = None,
    *,
    identities: Sequence[Mapping[str, Any]] | None = None,
    store: Store | None = None,
    escalation_rate: Sequence[float] | None = None,
    samples: int | None = None,
    soft_labels: str = "auto",
    judges: Sequence[JudgeSpec] = (),
) -> CascadeEstimate:
    """Price the cascade over `rows()` (read once per stage). Rates come from the store
    where it holds a stage's answers (`identities` and `store`), else `escalation_rate`
    (one value, or one per stage but the last). Each stage asks `samples` answers a row
    (as a single teacher would), and with `--verify judge:` each stage's answers are
    judged before the row goes on (labeler/verify/gate.py): the `judges` are priced over
    the answers of the rows that reach that stage."""
    n_rates = len(spec.stages) - 1 + spec.human
    given = list(escalation_rate or [])
    if len(given) == 1:
        given *= n_rates
    if given and len(given) != n_rates:
        raise ConfigError(
            f"--escalation-rate: {n_rates + 1} stages take one rate or {n_rates}, got {len(given)}"
        )
    if any(not 0.0 <= r <= 1.0 for r in given):
        raise ConfigError("--escalation-rate must lie in [0, 1]")
    measured: list[tuple[int, int]] = [(0, 0)] * n_rates
    if store is not None and identities is not None:
        measured = measured_rates(spec, (a for _, a in stage_answers(task, identities, store, rows())))
    out = CascadeEstimate()
    reach, total = 1.0, 0.0
    known = True
    est: Estimate | None = None
    for stage, st in enumerate(spec.stages):
        est = estimate(task, rows(), st.teacher, prices, samples=samples, soft_labels=soft_labels)
        cost = None if est.cost_usd is None else est.cost_usd * reach
        line: dict[str, Any] = {
            "stage": stage + 1,
            "teacher": st.teacher,
            "reach": reach,
            "rows": est.rows,
            "cost_usd": _round(cost),
        }
        if judges:
            judge_cost = _price_judges(line, judges, task, rows(), est, prices, reach)
            cost = None if cost is None or judge_cost is None else cost + judge_cost
        if stage < n_rates:
            answered, passed = measured[stage]
            if answered:
                rate, source = passed / answered, f"measured on {answered} stored answers"
            elif given:
                rate, source = given[stage], "given"
            else:
                raise ConfigError(
                    f"stage {stage + 1} ({st.teacher}) has no stored answers to "
                    "measure its escalation rate: give --escalation-rate"
                )
            line.update(escalation_rate=rate, rate_source=source)
            reach *= rate
        out.stages.append(line)
        if cost is None:
            known = False
        else:
            total += cost
    if spec.human and est is not None:  # a person: no price, but the rows to review
        out.stages.append(
            {
                "stage": len(spec.stages) + 1,
                "teacher": HUMAN,
                "reach": reach,
                "rows": est.rows,
                "cost_usd": 0.0,
            }
        )
    out.cost_usd = total if known else None
    out.last_alone_usd = est.cost_usd if est is not None else None
    return out


def _price_judges(
    line: dict[str, Any],
    judges: Sequence[JudgeSpec],
    task: Task,
    rows: Rows,
    answering: Estimate,
    prices: PriceTable | None,
    reach: float,
) -> float | None:
    """The judges' requests and cost over a stage's answers (`answering`) for the rows
    that reach it, written into the stage's `line`; the cost (None: unpriced)."""
    from labeler.verify.judge_estimate import estimate_judge

    judged = [estimate_judge(j, task, rows, answering, prices) for j in judges]
    costs = [j.cost_usd for j in judged]
    line["judge_requests"] = round(sum(j.requests for j in judged) * reach)
    cost = None if None in costs else sum(c or 0.0 for c in costs) * reach
    line["judge_cost_usd"] = None if cost is None else _round(cost)
    return cost


@dataclass
class CascadeEval:
    """Accuracy per stage and of the cascade, and the thresholds reaching each target."""

    measure: str
    stages: list[dict[str, Any]] = field(default_factory=list)
    cascade: dict[str, Any] = field(default_factory=dict)
    suggestions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "measure": self.measure,
            "stages": self.stages,
            "cascade": self.cascade,
            "suggestions": self.suggestions,
        }

    def to_table(self) -> str:
        lines = [f"{'stage':<8}{'teacher':<40}{'gold rows':>10}{'accuracy':>10}{'passed on':>11}"]
        for s in self.stages:
            acc = "-" if s["accuracy"] is None else f"{s['accuracy']:.3f}"
            rate = "" if s.get("escalation_rate") is None else f"{s['escalation_rate']:.1%}"
            lines.append(f"{s['stage']:<8}{s['teacher']:<40}{s['rows']:>10}{acc:>10}{rate:>11}")
        c = self.cascade
        acc = "-" if c["accuracy"] is None else f"{c['accuracy']:.3f}"
        lines.append(f"{'cascade':<48}{c['rows']:>10}{acc:>10}")
        if "queued_for_human" in c:
            lines.append(
                f"{'queued for a person (scored with the last teacher)':<58}{c['queued_for_human']:>10}"
            )
        for sug in self.suggestions:
            t = sug["threshold"]
            if t is None:
                lines.append(
                    f"stage {sug['stage']}: no threshold reaches accuracy "
                    f"{sug['target']:g} with a 95% lower bound on these gold rows"
                )
                continue
            lines.append(
                f"stage {sug['stage']}: for accuracy {sug['target']:g} escalate {self.measure} "
                f"{'above' if t['direction'] == '<=' else 'below'} {t['threshold']:.4f}: keeps "
                f"{t['coverage']:.0%} (accuracy {t['accuracy']:.3f}, 95% lower bound "
                f"{t['accuracy_lower_bound']:.3f}), passes on {1 - t['coverage']:.0%}"
            )
        return "\n".join(lines)


def evaluate_cascade(
    task: Task,
    spec: CascadeSpec,
    identities: Sequence[Mapping[str, Any]],
    store: Store,
    rows: Rows,
    gold_of: Callable[[Row], str | None],
    targets: Sequence[float] = (0.9, 0.95, 0.99),
) -> CascadeEval:
    """Score each stage and the cascade against gold (`gold_of(row)`, None: no gold)."""
    per_stage: list[tuple[list[float | None], list[bool]]] = [([], []) for _ in spec.stages]
    final_right = final_rows = queued = 0
    per_row = []
    for row, answers in stage_answers(task, identities, store, rows):
        gold = gold_of(row)
        if gold is None:
            continue
        per_row.append(answers)
        for stage, answer in enumerate(answers):
            if answer is None:
                continue
            conf = answer.confidence
            per_stage[stage][0].append(
                getattr(conf, spec.measure) if conf is not None and answer.valid else None
            )
            per_stage[stage][1].append(answer.label == gold)
        queued += queued_for_human(spec, answers)
        final = final_stage(spec, answers)
        if final is not None:
            final_rows += 1
            final_right += answers[final].label == gold  # type: ignore[union-attr]
    if not per_row:
        raise ConfigError("no gold rows: give --gold FIELD of the input")
    rates = measured_rates(spec, per_row)
    report = CascadeEval(spec.measure)
    for stage, (scores, right) in enumerate(per_stage):
        n = len(right)
        line: dict[str, Any] = {
            "stage": stage + 1,
            "teacher": spec.stages[stage].teacher,
            "rows": n,
            "accuracy": sum(right) / n if n else None,
            "accuracy_lower_bound": clopper_pearson_lower(sum(right), n) if n else None,
        }
        if stage < len(rates) and rates[stage][0]:
            line["escalation_rate"] = rates[stage][1] / rates[stage][0]
        report.stages.append(line)
        if stage < len(spec.stages) - 1 + spec.human and n:
            for target in targets:
                t = threshold_for_accuracy(
                    scores, right, target, lower_is_better=spec.measure in LOWER_IS_BETTER
                )
                report.suggestions.append(
                    {"stage": stage + 1, "target": target, "threshold": None if t is None else t.to_dict()}
                )
    report.cascade = {
        "rows": final_rows,
        "accuracy": final_right / final_rows if final_rows else None,
        "accuracy_lower_bound": (clopper_pearson_lower(final_right, final_rows) if final_rows else None),
    }
    if spec.human:  # scored with the last teacher's answer; a person would decide these
        report.cascade["queued_for_human"] = queued
    return report


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


__all__ = [
    "CascadeEstimate",
    "CascadeEval",
    "estimate_cascade",
    "evaluate_cascade",
    "measured_rates",
    "stage_answers",
]
